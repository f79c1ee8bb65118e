#!/usr/bin/env bash
# Makes the Secrets the manifests reference (none are kept in the repository):
#   turbosparse-api-key     api-key                   the coordinator's HTTP API key
#   turbosparse-expert-tls  tls.crt tls.key ca.crt    expert nodes: server side of mTLS
#   turbosparse-client-tls  tls.crt tls.key ca.crt    coordinator and workers: client side of mTLS
# Both certificates are signed by one private CA made here (reused when OUT/ca.key exists, so
# re-running for more nodes keeps existing peers valid). The expert certificate names every pod
# address of the shard maps (turbosparse-expert-N.turbosparse-expert) up to --max-nodes.
#
#   k8s/scripts/make-secrets.sh [--namespace turbosparse] [--max-nodes 64] [--cluster-domain cluster.local]
#                               [--days 825] [--out ./turbosparse-secrets] | kubectl apply -f -
#
# Keys and certificates stay in OUT (mode 700): keep it private, or delete it and keep only the
# Secrets. The API key is in OUT/api-key. Needs openssl and base64.
set -euo pipefail

namespace=turbosparse
max_nodes=64
cluster_domain=cluster.local
days=825
out=./turbosparse-secrets
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace=$2; shift 2 ;;
    --max-nodes) max_nodes=$2; shift 2 ;;
    --cluster-domain) cluster_domain=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--namespace NS] [--max-nodes N] [--cluster-domain D] [--days D] [--out DIR]" >&2; exit 2 ;;
  esac
done
[[ "$max_nodes" =~ ^[0-9]+$ ]] && [ "$max_nodes" -ge 1 ] || { echo "--max-nodes must be a positive number" >&2; exit 2; }

umask 077
mkdir -p "$out"
service=turbosparse-expert

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f "$out/ca.key" ]; then
  new_key "$out/ca.key"
  cat > "$out/ca.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = turbosparse-ca
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
  openssl req -x509 -new -key "$out/ca.key" -config "$out/ca.cnf" -days 3650 -out "$out/ca.crt"
  rm -f "$out/ca.cnf"
  echo "made a new CA: $out/ca.crt" >&2
fi

# sign NAME CN EXTENDED_KEY_USAGE SUBJECT_ALT_NAMES
sign() {
  local name=$1 cn=$2 eku=$3 sans=$4
  new_key "$out/$name.key"
  openssl req -new -key "$out/$name.key" -subj "/CN=$cn" -out "$out/$name.csr"
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature"
    echo "extendedKeyUsage = $eku"
    echo "authorityKeyIdentifier = keyid"
    [ -n "$sans" ] && echo "subjectAltName = $sans"
  } > "$out/$name.ext"
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$days" -extfile "$out/$name.ext" -out "$out/$name.crt" 2>/dev/null
  rm -f "$out/$name.csr" "$out/$name.ext"
}

sans="DNS:$service,DNS:*.$service.$namespace.svc,DNS:*.$service.$namespace.svc.$cluster_domain"
# Short pod names (the shard-map addresses) one by one: a wildcard over a two-label name
# (*.turbosparse-expert) is not accepted by TLS hostname checks.
for ((i = 0; i < max_nodes; i++)); do sans+=",DNS:$service-$i.$service"; done
sign expert "$service" serverAuth "$sans"
sign client turbosparse-client clientAuth ""

[ -f "$out/api-key" ] || openssl rand -hex 32 | tr -d '\n' > "$out/api-key"

b64() { base64 < "$1" | tr -d '\n'; }

tls_secret() {
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $namespace
  labels:
    app.kubernetes.io/part-of: turbosparse
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$out/$2.crt")
  tls.key: $(b64 "$out/$2.key")
  ca.crt: $(b64 "$out/ca.crt")
YAML
}

tls_secret turbosparse-expert-tls expert
tls_secret turbosparse-client-tls client
cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: turbosparse-api-key
  namespace: $namespace
  labels:
    app.kubernetes.io/part-of: turbosparse
type: Opaque
data:
  api-key: $(b64 "$out/api-key")
YAML
echo "secrets for namespace $namespace written to stdout; keys and certificates in $out" >&2
