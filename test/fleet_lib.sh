# fleet_lib.sh — shell helpers for the integration tests (test/it_*.sh):
# a private TLS Mosquitto (deploy/broker.sh), the aggregator and simulated
# fleets started in the background, waits with timeouts, weight
# comparisons, and a cleanup that stops every process on exit.
#
# Trust is on as in production: an aggregator key pair is made for the run
# with the openssl CLI ($T/agg.pem private, $T/agg.pub public, its key id
# in AGG_KID); it_agg passes --sign-key (it signs globals and opens sealed
# updates), it_sim --agg-key (devices verify globals and seal updates to
# it). A test that wants something else adds flags after them (later
# flags win), e.g. --no-seal.
#
# Broker identity is opt-in: it_start_broker_auth FLEET starts the broker
# with the fedmq_auth plugin (broker/README.md, proto/SPEC.md §7.4) and a
# token issuer key made for the run with fedmq-keygen ($T/issuer.pem,
# $T/issuer.pub, its key id in ISSUER_KID); every client then needs a
# token whose sub is its client id (it_token, it_tokens). Tests that call
# it_start_broker get a broker without the plugin, as before.
#
# Source it with FMQ_BUILD set (the Makefile does); it defines:
#   it_start_broker            broker in $T/broker; sets URI, CA, PORT
#   it_start_broker_auth FLEET the same with the plugin, serving FLEET only;
#                              also sets BROKER_LOG (the broker's log)
#   it_token SUB ROLE FLEET    prints a token (1 h) for client id SUB;
#                              use as TOK=$(it_token ...) || fail ...
#   it_tokens FLEET N          writes tokens for dev-0000..dev-<N-1>
#                              (fedmq-sim --tokens) and prints the file
#   it_restart_broker          starts it again on PORT, plugin or not
#   it_agg NAME ARGS...        aggregator in the background, stdout in
#                              $T/NAME.log; sets AGG_PID
#   it_sim NAME ARGS...        fedmq-sim in the background, $T/NAME.log
#   it_wait_line FILE REGEX SECONDS   wait until FILE has a matching line
#   it_wait_pid PID SECONDS    wait until PID ends (fail after SECONDS)
#   it_ref NAME ARGS...        fedmq-train fedavg --save $T/NAME.bin
#   it_close A.bin B.bin TOL   relative L2 distance <= TOL, else fail
#   pass MSG / fail MSG
set -eu

B=${FMQ_BUILD:-build}
ROOT=$(pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-it.XXXXXX")
IT_PIDS=""
IT_NAME=$(basename "$0" .sh)
IT_FAILED=0
# The lines added to the broker's configuration (deploy/broker.sh --conf):
# the plugin's, set by it_start_broker_auth; empty without it.
IT_BROKER_CONF=""

it_cleanup() {
  for p in $IT_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $IT_PIDS; do wait "$p" 2>/dev/null || true; done
  sh "$ROOT/deploy/broker.sh" stop "$T/broker" >/dev/null 2>&1 || true
  if [ -n "${FMQ_KEEP_TMP:-}" ] || [ "$IT_FAILED" -ne 0 ]; then
    echo "$IT_NAME: logs kept in $T"
  else
    rm -rf "$T"
  fi
}
trap it_cleanup EXIT
trap 'exit 130' INT TERM

# it_keygen NAME: an EC P-256 key pair $T/NAME.pem (SEC1) and $T/NAME.pub
it_keygen() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$T/$1.pem" 2>"$T/$1.keygen.err" &&
    openssl ec -in "$T/$1.pem" -pubout -out "$T/$1.pub" 2>>"$T/$1.keygen.err" ||
    { cat "$T/$1.keygen.err" >&2; echo "FAIL $IT_NAME: openssl could not make key $1" >&2; exit 1; }
}
it_keygen agg
AGG_KEY="$T/agg.pem"
AGG_PUB="$T/agg.pub"

fail() {
  IT_FAILED=1
  echo "FAIL $IT_NAME: $*" >&2
  for f in "$T"/*.log; do
    [ -f "$f" ] || continue
    echo "---- $f (last 15 lines)" >&2
    tail -15 "$f" >&2
  done
  if [ -n "$IT_BROKER_CONF" ] && [ -f "$T/broker/mosquitto.log" ]; then
    echo "---- $T/broker/mosquitto.log (fedmq_auth, last 15 lines)" >&2
    grep fedmq_auth "$T/broker/mosquitto.log" | tail -15 >&2
  fi
  exit 1
}

pass() { echo "ok   $IT_NAME: $*"; }

# it_broker START-ARGS...: deploy/broker.sh start $T/broker --tls, with the
# plugin's configuration when there is one.
it_broker() {
  if [ -n "$IT_BROKER_CONF" ]; then
    sh "$ROOT/deploy/broker.sh" start "$T/broker" --tls --conf "$IT_BROKER_CONF" "$@"
  else
    sh "$ROOT/deploy/broker.sh" start "$T/broker" --tls "$@"
  fi
}

it_start_broker() {
  it_broker --watch $$ >"$T/broker-start.out" 2>&1 ||
    { cat "$T/broker-start.out" >&2; fail "broker did not start"; }
  PORT=$(cat "$T/broker/port")
  URI="mqtts://127.0.0.1:$PORT"
  CA="$T/broker/certs/ca.crt"
}

it_start_broker_auth() {
  kg="$B/bin/fedmq-keygen"
  so="$ROOT/$B/lib/fedmq_auth.so"
  case $B in /*) so="$B/lib/fedmq_auth.so" ;; esac
  [ -x "$kg" ] && [ -f "$so" ] || fail "build $kg and $so first (make all)"
  ISSUER="$T/issuer.pem"
  ISSUER_KID=$("$kg" key "$ISSUER" --pub "$T/issuer.pub" 2>"$T/issuer.err") ||
    { cat "$T/issuer.err" >&2; fail "fedmq-keygen could not make the issuer key"; }
  printf 'plugin %s\nplugin_opt_issuer_key %s\nplugin_opt_fleet %s\n' \
    "$so" "$T/issuer.pub" "$1" >"$T/broker-auth.conf"
  IT_BROKER_CONF="$T/broker-auth.conf"
  BROKER_LOG="$T/broker/mosquitto.log"
  it_start_broker
  it_wait_line "$BROKER_LOG" "fedmq_auth: tokens ES256 from issuer keys? $ISSUER_KID, fleet $1," 10
}

# (fedmq-keygen's notes, e.g. on an aggregator token for another id than
# fedmq-agg-<fleet>, go to $T/keygen.err)
it_token() {
  "$B/bin/fedmq-keygen" token --key "$ISSUER" --fleet "$3" --sub "$1" --role "$2" --ttl 3600 \
    2>>"$T/keygen.err" ||
    { cat "$T/keygen.err" >&2; echo "FAIL $IT_NAME: fedmq-keygen token --sub $1 --role $2 --fleet $3" >&2; exit 1; }
}

it_tokens() {
  "$B/bin/fedmq-keygen" tokens --key "$ISSUER" --fleet "$1" --role device --prefix dev \
    --count "$2" --ttl 3600 --out "$T/$1.tokens" 2>>"$T/keygen.err" ||
    { cat "$T/keygen.err" >&2; echo "FAIL $IT_NAME: fedmq-keygen tokens --fleet $1 --count $2" >&2; exit 1; }
  echo "$T/$1.tokens"
}

it_kill_broker() {
  kill -KILL "$(cat "$T/broker/pid")" 2>/dev/null || true
  i=0
  while kill -0 "$(cat "$T/broker/pid")" 2>/dev/null && [ $i -lt 50 ]; do
    sleep 0.1; i=$((i + 1))
  done
}

it_restart_broker() {
  it_broker --port "$PORT" --watch $$ >"$T/broker-restart.out" 2>&1 ||
    { cat "$T/broker-restart.out" >&2; fail "broker did not restart"; }
}

it_agg() {
  name=$1; shift
  "$B/bin/fedmq-aggregator" --broker "$URI" --ca "$CA" --sign-key "$AGG_KEY" "$@" >>"$T/$name.log" 2>&1 &
  AGG_PID=$!
  IT_PIDS="$IT_PIDS $AGG_PID"
}

it_sim() {
  name=$1; shift
  "$B/bin/fedmq-sim" --broker "$URI" --ca "$CA" --agg-key "$AGG_PUB" "$@" >>"$T/$name.log" 2>&1 &
  SIM_PID=$!
  IT_PIDS="$IT_PIDS $SIM_PID"
}

it_wait_line() {
  file=$1; re=$2; secs=$3
  i=0
  while ! grep -Eq "$re" "$file" 2>/dev/null; do
    i=$((i + 1))
    [ $i -le $((secs * 10)) ] || fail "no line matching '$re' in $(basename "$file") after ${secs}s"
    sleep 0.1
  done
}

it_wait_pid() {
  pid=$1; secs=$2
  i=0
  while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    [ $i -le $((secs * 10)) ] || fail "process $pid still running after ${secs}s"
    sleep 0.1
  done
  wait "$pid" 2>/dev/null
}

it_ref() {
  name=$1; shift
  "$B/bin/fedmq-train" fedavg --save "$T/$name.bin" "$@" >"$T/$name.log" 2>&1 ||
    fail "fedmq-train $*"
}

# it_close A B TOL: ||A - B||_2 / ||B||_2 <= TOL (prints the distance)
it_close() {
  "$PY" - "$1" "$2" "$3" <<'EOF' || fail "weights $(basename "$1") and $(basename "$2") differ"
import array, math, sys
a = array.array('f'); a.frombytes(open(sys.argv[1], 'rb').read())
b = array.array('f'); b.frombytes(open(sys.argv[2], 'rb').read())
if len(a) != len(b) or not a:
    print("  lengths %d and %d" % (len(a), len(b))); sys.exit(1)
d = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
n = math.sqrt(sum(y * y for y in b))
print("  relative L2 distance %.3g (tolerance %s), max abs %.3g" %
      (d / n, sys.argv[3], max(abs(x - y) for x, y in zip(a, b))))
sys.exit(0 if d / n <= float(sys.argv[3]) else 1)
EOF
}
