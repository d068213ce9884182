#!/bin/sh
# The image's install step, shared by the Dockerfile's build stage and CI
# (tests/unit/test_image.py runs this same script into a fresh virtualenv, since no container
# engine exists here to build the image itself).
#   hack/image-install.sh VENV [SOURCE]
# Wheels only come from the index; the package itself is pure Python, so no compiler is needed.
set -eu
venv="$1"
src="${2:-.}"
# The image keeps no pip cache; CI may pass one (IMAGE_INSTALL_PIP_CACHE) to spare downloads.
cache="--no-cache-dir"
if [ -n "${IMAGE_INSTALL_PIP_CACHE:-}" ]; then cache="--cache-dir=$IMAGE_INSTALL_PIP_CACHE"; fi
python3 -m venv "$venv"
"$venv/bin/pip" install "$cache" --disable-pip-version-check --no-compile --quiet "$src"
# Fail the build, not the first pod start, when the entrypoint cannot import.
"$venv/bin/pgcurator" --help >/dev/null
"$venv/bin/python" -c "import pgcurator.app, pgcurator.leader, pgcurator.metrics, pgcurator.health"
