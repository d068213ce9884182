# Sourced by hack/k8s-binaries.sh and hack/cluster-binaries.sh: a throwaway Go module that
# depends on k8s.io/kubernetes at one version, so its commands build from the module proxy.
# k8s.io/kubernetes replaces its staging modules with ./staging paths; a module that depends on
# it has to pin each of them to the published v0.x tag itself.
#   k8s_module_init DIR VERSION PACKAGE...   (PACKAGE: what tools.go imports, e.g.
#                                             k8s.io/kubernetes/cmd/kubelet/app)
#   k8s_ldflags VERSION                      (the version stamp `--version` reports)
k8s_module_init() {
  local dir="$1" version="$2"; shift 2
  local staging="0.${version#*.}"
  mkdir -p "$dir"
  (
    cd "$dir"
    rm -f go.mod go.sum
    go mod init pgcurator.local/k8s-build >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    local args=()
    while read -r mod; do
      args+=("-replace=$mod=$mod@v$staging")
    done < <(grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}')
    printf '[k8s-module] pinning %s staging modules to v%s\n' "${#args[@]}" "$staging" >&2
    go mod edit "${args[@]}" -require="k8s.io/kubernetes@v$version"
    {
      printf 'package tools\n\nimport (\n'
      for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg"; done
      printf ')\n'
    } > tools.go
    GOFLAGS=-mod=mod go mod tidy >&2
  )
}

k8s_ldflags() {
  local version="$1" minor="${1#*.}"; minor="${minor%%.*}"
  printf '%s' "-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}
