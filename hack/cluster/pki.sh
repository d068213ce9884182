# Sourced by hack/cluster-up.sh: the cluster's certificates and keys, made once per cluster
# directory with openssl (a CA, the API server's serving certificate, one admin client
# certificate every component uses, and the ServiceAccount token signing key).
#   make_pki DIR NODE_IP SERVICE_IP
make_pki() {
  local dir="$1" node_ip="$2" svc_ip="$3"
  [ -s "$dir/admin.key" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj /CN=pgcurator-cluster-ca 2>/dev/null
    cat > serving.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$node_ip,IP:$svc_ip,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
EXT
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile serving.ext -out apiserver.crt 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key.tmp -out admin.csr -subj "/O=system:masters/CN=pgcurator-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext ca.srl
    mv admin.key.tmp admin.key
  )
}

# write_kubeconfig FILE SERVER PKI_DIR
write_kubeconfig() {
  local file="$1" server="$2" pki="$3"
  cat > "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: pgcurator
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: pgcurator
  context: {cluster: pgcurator, user: admin}
current-context: pgcurator
KC
  chmod 600 "$file"
}
