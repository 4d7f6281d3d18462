# PKI and kubeconfigs, shared by scripts/k8s/control-plane.sh (the loopback
# control plane of the API tests) and tests/e2e/cluster/cluster.sh (the
# single-node cluster): one way to make a CA, the certificates it signs, the
# service-account key pair and a token kubeconfig. Source it; needs openssl.
#
# ECDSA P-256 throughout: instant to generate (RSA-2048 takes seconds on a
# busy 2-core machine); Go, rustls and the token signer all take it.

# pki_ca DIR CN: a self-signed CA (DIR/ca.crt, DIR/ca.key).
pki_ca() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 3650 \
    -keyout "$1/ca.key" -out "$1/ca.crt" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# pki_cert DIR NAME SUBJECT USAGE [SANS]: DIR/NAME.crt and .key signed by
# DIR's CA, for USAGE (serverAuth or clientAuth), with subjectAltName SANS
# (e.g. IP:127.0.0.1,DNS:localhost) when given.
pki_cert() {
  local dir=$1 name=$2 subject=$3 usage=$4 sans=${5:-}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$subject" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } > "$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -sha256 -days 3650 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr"
}

# pki_service_accounts DIR: the token signing key pair (DIR/sa.key, sa.pub);
# then every key in DIR is made private.
pki_service_accounts() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$1/sa.key"
  openssl ec -in "$1/sa.key" -pubout -out "$1/sa.pub" 2>/dev/null
  chmod 600 "$1"/*.key
}

# The API server's in-cluster names (its certificate's DNS SANs).
PKI_APISERVER_DNS="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"

# write_kubeconfig FILE SERVER_URL CA_FILE CLUSTER USER TOKEN: a kubeconfig
# of one context, CLUSTER as USER with a bearer token (mode 600).
write_kubeconfig() {
  cat > "$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: $4
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 "$3")
users:
- name: $5
  user:
    token: $6
contexts:
- name: $4
  context:
    cluster: $4
    user: $5
    namespace: default
current-context: $4
KUBECONFIG
  chmod 600 "$1"
}
