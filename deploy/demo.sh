#!/bin/sh
# make demo — fedmq's main job, end to end, on this machine:
#
#   a CA and a server certificate made for the run (deploy/mkcerts.sh);
#   keys and tokens made for the run with fedmq-keygen (broker/README.md):
#   the aggregator's EC P-256 key pair — it signs every global model, the
#   devices pin its public half, verify every global with it and seal
#   their updates to it (proto/SPEC.md §7) — and the fleet's token issuer
#   key, which issues each device and the aggregator an ES256 token (1 h);
#   a private Mosquitto on a free loopback port with a TLS listener,
#   persistence and the fedmq_auth plugin (deploy/broker.sh): a client
#   without a valid token for its client id is refused, and each identity
#   may publish and read only its own topics (SPEC §2);
#   the aggregator, and a simulated fleet of 10 devices, each with its own
#   TLS connection, its own token and its own share of Fashion-MNIST split
#   dirichlet:0.5. Rounds run until the hold-out
#   accuracy reaches FMQ_DEMO_TARGET or FMQ_DEMO_ROUNDS rounds are done;
#   the aggregator prints one progress line per round, then a summary;
#   the dashboard's address is printed at the start (FMQ_DEMO_TARGET=1
#   FMQ_DEMO_ROUNDS=200 leaves time to watch it).
#
#   sh deploy/demo.sh [BUILD]      (BUILD defaults to build)
#
# Environment: FMQ_DEMO_TARGET (0.82), FMQ_DEMO_ROUNDS (40),
# FMQ_DEMO_MODEL (mlp:128), FMQ_DEMO_SCHEME (q8), FMQ_KEEP_TMP=1 keeps the
# run's directory (logs, certificates, checkpoints) for a look afterwards.
# Every process it starts is stopped when it ends, however it ends.
set -eu

BUILD=${1:-build}
TARGET=${FMQ_DEMO_TARGET:-0.82}
ROUNDS=${FMQ_DEMO_ROUNDS:-40}
MODEL=${FMQ_DEMO_MODEL:-mlp:128}
SCHEME=${FMQ_DEMO_SCHEME:-q8}
DEVICES=10
FLEET=demo
here=$(cd "$(dirname "$0")" && pwd)

for b in fedmq-aggregator fedmq-sim fedmq-keygen; do
  [ -x "$BUILD/bin/$b" ] || { echo "demo: $BUILD/bin/$b is missing (make all)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-demo.XXXXXX")
sim_pid=""
agg_pid=""
cleanup() {
  for p in $agg_pid $sim_pid; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $agg_pid $sim_pid; do wait "$p" 2>/dev/null || true; done
  sh "$here/broker.sh" stop "$tmp/broker" >/dev/null 2>&1 || true
  if [ -n "${FMQ_KEEP_TMP:-}" ]; then echo "demo: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(date +%s.%N)
echo "== fedmq demo: $DEVICES devices, Fashion-MNIST dirichlet:0.5, model $MODEL, $SCHEME updates, TLS, device tokens and ACL at the broker, signed models, sealed updates"
[ -f "$BUILD/lib/fedmq_auth.so" ] || { echo "demo: $BUILD/lib/fedmq_auth.so is missing (make all)" >&2; exit 1; }
KG="$BUILD/bin/fedmq-keygen"

# Keys: the aggregator's (private half to the aggregator only) and the
# token issuer's (private half to whoever enrols devices; the broker gets
# the public half). Tokens: one per device, one for the aggregator.
mkdir -p "$tmp/keys"
chmod 700 "$tmp/keys"
"$KG" key "$tmp/keys/agg.pem" --pub "$tmp/keys/agg.pub" >/dev/null
"$KG" key "$tmp/keys/issuer.pem" --pub "$tmp/keys/issuer.pub" >/dev/null
"$KG" tokens --key "$tmp/keys/issuer.pem" --fleet "$FLEET" --role device \
  --prefix dev --count $DEVICES --ttl 3600 --out "$tmp/keys/devices.tokens"
agg_token=$("$KG" token --key "$tmp/keys/issuer.pem" --fleet "$FLEET" \
  --sub "fedmq-agg-$FLEET" --role aggregator --ttl 3600)
# the aggregator's token goes in its configuration file, not on its
# command line (where ps would show it)
printf '# fedmq-aggregator settings for the demo\npassword %s\n' "$agg_token" \
  >"$tmp/keys/aggregator.conf"
chmod 600 "$tmp/keys/aggregator.conf"

printf 'plugin %s\nplugin_opt_issuer_key %s\nplugin_opt_fleet %s\n' \
  "$(cd "$BUILD/lib" && pwd)/fedmq_auth.so" "$tmp/keys/issuer.pub" "$FLEET" \
  >"$tmp/broker.conf"
sh "$here/broker.sh" start "$tmp/broker" --tls --conf "$tmp/broker.conf" --watch $$ \
  --dashboard "$BUILD/dashboard"
port=$(cat "$tmp/broker/port")
uri="mqtts://127.0.0.1:$port"
ca="$tmp/broker/certs/ca.crt"
# the live dashboard (deploy/dashboard/), served by this broker on
# loopback, with a read-only dashboard token in the address's fragment
if [ -f "$BUILD/dashboard/UNAVAILABLE" ]; then
  echo "== no dashboard: $(tr '\n' ' ' <"$BUILD/dashboard/UNAVAILABLE")"
else
  echo "== dashboard, while the demo runs: $(sh "$here/dashboard.sh" url "$BUILD" "$tmp/broker" "$tmp/keys/issuer.pem" "$FLEET")"
fi

# The fleet first: its devices wait for the retained global model.
"$BUILD/bin/fedmq-sim" --broker "$uri" --ca "$ca" --fleet "$FLEET" --agg-key "$tmp/keys/agg.pub" \
  --tokens "$tmp/keys/devices.tokens" --devices $DEVICES \
  --parties $DEVICES --partition dirichlet:0.5 --seed 1 \
  >"$tmp/sim.log" 2>&1 &
sim_pid=$!

# The aggregator in the foreground: its progress lines are the demo's.
set +e
"$BUILD/bin/fedmq-aggregator" --config "$tmp/keys/aggregator.conf" --broker "$uri" --ca "$ca" \
  --fleet "$FLEET" --sign-key "$tmp/keys/agg.pem" --model "$MODEL" \
  --seed 1 --cohort $DEVICES --quorum 8 --round-ms 30000 \
  --rounds "$ROUNDS" --target-acc "$TARGET" --scheme "$SCHEME" \
  --state-dir "$tmp/aggregator" 2>"$tmp/aggregator.err" | tee "$tmp/aggregator.log"
agg_rc=$?
set -e
if [ $agg_rc -ne 0 ] || ! grep -q "summary:" "$tmp/aggregator.log"; then
  echo "demo: the aggregator failed (exit $agg_rc):" >&2
  tail -20 "$tmp/aggregator.err" >&2
  echo "-- fleet:" >&2
  tail -20 "$tmp/sim.log" >&2
  exit 1
fi

# The fleet ends on the final model; stop it and read its totals.
sleep 1
kill -TERM "$sim_pid" 2>/dev/null || true
wait "$sim_pid" 2>/dev/null || true
sim_pid=""
# the broker too: its plugin logs what it accepted and refused as it stops
sh "$here/broker.sh" stop "$tmp/broker" >/dev/null 2>&1 || true
t1=$(date +%s.%N)

/usr/bin/python3 - "$tmp/aggregator.log" "$tmp/sim.log" "$t0" "$t1" "$DEVICES" "$TARGET" "$tmp/broker/mosquitto.log" <<'EOF'
import re, sys
agg, sim = open(sys.argv[1]).read(), open(sys.argv[2]).read()
try:
    blog = open(sys.argv[7], errors="replace").read()
except OSError:
    blog = ""
t0, t1, ndev, target = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
s = re.search(r"summary: (\d+) rounds, test accuracy ([\d.]+), (\d+) updates of ([\d.]+) KB on average "
              r"\(float32 deltas: ([\d.]+) KB, ([\d.]+)x larger\)", agg)
f = re.search(r"(\d+) devices, (\d+) updates trained, (\d+) globals refused.*bytes up (\d+), down (\d+)", sim)
rounds, acc, nupd = int(s.group(1)), float(s.group(2)), int(s.group(3))
kb, f32kb, ratio = float(s.group(4)), float(s.group(5)), float(s.group(6))
print("== demo summary")
print("accuracy      %.2f %% on the Fashion-MNIST test set after %d rounds (target %.0f %%: %s)"
      % (100 * acc, rounds, 100 * target, "reached" if acc >= target else "not reached"))
print("updates       %d counted; %.1f KB per device per round up (float32 deltas: %.1f KB, %.2fx more)"
      % (nupd, kb, f32kb, ratio))
if f:
    up, down = int(f.group(4)), int(f.group(5))
    print("fleet         %d devices sent %.1f MB and received %.1f MB in all (MQTT payload and topic bytes)"
          % (int(f.group(1)), up / 1e6, down / 1e6))
k = re.search(r"globals signed by key (\w+), updates sealed to key (\w+)", agg)
if k:
    print("trust         globals signed by key %s, updates sealed to key %s; %s globals refused by devices"
          % (k.group(1), k.group(2), f.group(3) if f else "?"))
b = re.findall(r"fedmq_auth: summary: (.*)", blog)
if b:
    print("broker        fedmq_auth: %s" % b[-1])
print("time          %.1f s, including certificates, broker start and data loading" % (t1 - t0))
EOF
