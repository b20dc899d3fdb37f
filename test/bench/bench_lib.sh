# bench_lib.sh — what the federated benchmarks (poison_bench.sh,
# hetero_bench.sh) share. Source it with BUILD set; it defines
#   bench_init NAME   the programs present, BUILD/bench/NAME emptied ($out),
#                     a temporary directory ($tmp) with copies of
#                     fedmq-aggregator and fedmq-sim ($AGG, $SIM: a rebuild
#                     of BUILD/bin while the bench runs changes nothing),
#                     the aggregator's P-256 key pair made for the run
#                     ($tmp/agg.pem, $tmp/agg.pub), and a trap that stops
#                     $agg_pid, $sim_pid and the broker and removes $tmp
#   bench_broker      a private Mosquitto with TLS in $tmp/broker ($uri, $ca)
#   stamp             copy stdin to stdout, each line prefixed with a
#                     monotonic timestamp in seconds
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
here=$(cd "$(dirname "$0")/../.." && pwd)

bench_init() {
  for b in fedmq-aggregator fedmq-sim; do
    [ -x "$BUILD/bin/$b" ] || { echo "$1: build $BUILD/bin/$b first (make all)" >&2; exit 1; }
  done
  out=$BUILD/bench/$1
  rm -rf "$out"
  mkdir -p "$out"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-$1.XXXXXX")
  mkdir "$tmp/bin"
  cp "$BUILD/bin/fedmq-aggregator" "$BUILD/bin/fedmq-sim" "$tmp/bin/"
  AGG=$tmp/bin/fedmq-aggregator
  SIM=$tmp/bin/fedmq-sim
  sim_pid=""
  agg_pid=""
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/agg.pem" 2>/dev/null &&
    openssl ec -in "$tmp/agg.pem" -pubout -out "$tmp/agg.pub" 2>/dev/null ||
    { echo "$1: openssl could not make the aggregator's key" >&2; exit 1; }
}

bench_cleanup() {
  for p in $agg_pid $sim_pid; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $agg_pid $sim_pid; do wait "$p" 2>/dev/null || true; done
  sh "$here/deploy/broker.sh" stop "$tmp/broker" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}

bench_broker() {
  sh "$here/deploy/broker.sh" start "$tmp/broker" --tls --watch $$ >/dev/null
  uri=mqtts://127.0.0.1:$(cat "$tmp/broker/port")
  ca=$tmp/broker/certs/ca.crt
}

stamp() {
  "$PY" -u -c 'import sys, time
for line in sys.stdin:
    sys.stdout.write("%.6f %s" % (time.monotonic(), line))
    sys.stdout.flush()'
}
