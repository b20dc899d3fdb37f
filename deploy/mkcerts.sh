#!/bin/sh
# Certificates for a fedmq fleet, made with the openssl CLI (EC P-256).
#
#   deploy/mkcerts.sh DIR                 CA + server certificate for the broker
#   deploy/mkcerts.sh DIR client NAME     also a client certificate for NAME
#
# Writes into DIR (created 0700 if missing):
#   ca.key, ca.crt                     the fleet's CA (self-signed, 10 years)
#   server.key, server.crt             the broker: SAN IP:127.0.0.1, DNS:localhost
#                                      (825 days, extendedKeyUsage serverAuth)
#   client-NAME.key, client-NAME.crt   CN=NAME, extendedKeyUsage clientAuth
# Keys are 0600, certificates 0644. Idempotent: a file that exists is kept
# (a server or client certificate is only made when its key or certificate
# is missing), so running it again for a second client leaves the CA alone.
# Extra names for the server certificate: FMQ_CERT_SAN="DNS:broker.lan,IP:10.0.0.2".
set -eu

usage() {
  echo "usage: $0 DIR [client NAME]" >&2
  exit 2
}

[ $# -ge 1 ] || usage
dir=$1
shift
client=""
if [ $# -gt 0 ]; then
  [ "$1" = client ] && [ $# -eq 2 ] || usage
  client=$2
  # Client names become file names and certificate subjects: ids only (SPEC §3.3).
  case $client in
    "" | *[!A-Za-z0-9._-]*) echo "mkcerts: client name must match [A-Za-z0-9._-]{1,64}" >&2; exit 2 ;;
  esac
  [ ${#client} -le 64 ] || { echo "mkcerts: client name longer than 64 bytes" >&2; exit 2; }
fi

command -v openssl >/dev/null 2>&1 || { echo "mkcerts: openssl not found (deploy/install-deps.sh)" >&2; exit 1; }

umask 077
mkdir -p "$dir"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fmq-mkcerts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

newkey() { # FILE
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null
  chmod 0600 "$1"
}

serial() { echo "0x$(openssl rand -hex 16)"; }

# sign NAME SUBJECT EXTFILE: DIR/NAME.key + CSR -> DIR/NAME.crt signed by the CA
sign() {
  openssl req -new -key "$dir/$1.key" -subj "$2" -out "$tmp/$1.csr"
  openssl x509 -req -in "$tmp/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -set_serial "$(serial)" -days 825 -sha256 -extfile "$3" \
    -out "$dir/$1.crt" 2>/dev/null
  chmod 0644 "$dir/$1.crt"
}

# ---------------------------------------------------------------- the CA
if [ -f "$dir/ca.key" ] && [ -f "$dir/ca.crt" ]; then
  echo "mkcerts: CA exists: $dir/ca.crt"
else
  [ -f "$dir/ca.key" ] || newkey "$dir/ca.key"
  cat >"$tmp/ca.ext" <<EOF
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = fedmq fleet CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl req -new -x509 -key "$dir/ca.key" -config "$tmp/ca.ext" \
    -set_serial "$(serial)" -days 3650 -sha256 -out "$dir/ca.crt"
  chmod 0644 "$dir/ca.crt"
  # A new CA invalidates every certificate signed by an old one.
  rm -f "$dir/server.crt" "$dir"/client-*.crt
  echo "mkcerts: made CA (EC P-256, 10 years): $dir/ca.crt, key $dir/ca.key"
fi

# ------------------------------------------------------------ the server
if [ -f "$dir/server.key" ] && [ -f "$dir/server.crt" ]; then
  echo "mkcerts: server certificate exists: $dir/server.crt"
else
  [ -f "$dir/server.key" ] || newkey "$dir/server.key"
  san="IP:127.0.0.1,DNS:localhost${FMQ_CERT_SAN:+,$FMQ_CERT_SAN}"
  cat >"$tmp/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth
subjectAltName = $san
authorityKeyIdentifier = keyid
EOF
  sign server "/CN=localhost" "$tmp/server.ext"
  echo "mkcerts: made server certificate ($san): $dir/server.crt, key $dir/server.key"
fi

# ------------------------------------------------------------ a client
if [ -n "$client" ]; then
  if [ -f "$dir/client-$client.key" ] && [ -f "$dir/client-$client.crt" ]; then
    echo "mkcerts: client certificate exists: $dir/client-$client.crt"
  else
    [ -f "$dir/client-$client.key" ] || newkey "$dir/client-$client.key"
    cat >"$tmp/client.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
    sign "client-$client" "/CN=$client" "$tmp/client.ext"
    echo "mkcerts: made client certificate (CN=$client): $dir/client-$client.crt, key $dir/client-$client.key"
  fi
fi
