# it_trust_runtime.sh — signed global models and sealed updates in a running
# fleet (proto/SPEC.md §7), each attack of issue 5 tried against a real
# Mosquitto over TLS with fedmq-aggregator and 3 simulated devices (model
# logreg), trust on as in production (fleet_lib.sh makes the key pair):
#   globals  forged retained globals on fedmq/<fleet>/model/global while the
#            devices hold version 2 — unsigned, tampered (body changed under
#            the genuine signature), signed by another key, a genuine
#            signature over another fleet's global, the genuine version 1
#            (rolled back), version 2 with other weights — are refused by
#            every device with its reason (sig, sig, key, fleet, stale,
#            stale), the model kept (version 2); the next genuine globals
#            are trained (rounds 2 and 3 close with every device);
#   reading  a subscriber on fedmq/<fleet>/update/+ gets only sealed
#            envelopes to the aggregator's kid, which another key cannot
#            open (key) and whose plaintext bytes do not appear in them;
#   replay   a captured round-1 update republished in round 3 as it was is
#            a duplicate; with its round rewritten to 3, or on another
#            device's topic, it does not open (seal).
# The broker's ACL plugin is not loaded here: this is what the devices and
# the aggregator refuse by themselves.
. test/fleet_lib.sh
TT="$B/tools/trust_tool"
env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory BUILD="$B" "$TT" || fail "building trust_tool"
it_start_broker
FL=tr
it_keygen other
SUB="-h 127.0.0.1 -p $PORT --cafile $CA"
KID=$("$TT" kid "$AGG_PUB")

# Everything that is published on the model and update topics, as "topic hex".
mosquitto_sub $SUB -t "fedmq/$FL/model/global" -F '%t %x' -q 1 >"$T/globals.hex" 2>"$T/gsub.log" &
IT_PIDS="$IT_PIDS $!"
mosquitto_sub $SUB -t "fedmq/$FL/update/+" -F '%t %x' -q 1 >"$T/updates.hex" 2>"$T/usub.log" &
IT_PIDS="$IT_PIDS $!"
sleep 0.3

DATA="--parties 3 --partition iid --seed 1"
AGGARGS="--fleet $FL --model logreg --seed 1 --cohort 4 --quorum 3 --holdout none
   --state-dir $T/agg"
it_sim sim --fleet $FL $DATA --devices 3
# Run 1: round 1 closes at its deadline with the 3 devices, the global of
# round 2 goes out, and the aggregator stops: the devices train round 2 and
# their sealed updates wait in the aggregator's session.
it_agg agg1 $AGGARGS --round-ms 3000 --rounds 1
it_wait_pid $AGG_PID 60 || fail "aggregator run 1 failed"
grep -q "^round 1: 3/4 devices, 0 late (0 folded), 0 rejected" "$T/agg1.log" ||
  fail "round 1 should close with 3/4 and nothing rejected"
grep -q "globals signed by key $KID, updates sealed to key $KID" "$T/agg1.log" ||
  fail "the aggregator does not say it signs and requires sealing with $KID"
n=0
while [ "$(grep -c "update/" "$T/updates.hex")" -lt 6 ]; do
  n=$((n + 1)); [ $n -le 300 ] || fail "the devices did not send their round-2 updates"
  sleep 0.1
done
pass "trust on: round 1 closed with 3/4 devices, globals signed by $KID; round 2 trained"

# ----------------------------------------------------------- forged globals
"$PY" - "$T" "$FL" <<'PYEOF' || fail "crafting the forged globals"
import msgpack, sys
T, FL = sys.argv[1], sys.argv[2]
gl = [bytes.fromhex(l.split()[1]) for l in open(T + "/globals.hex") if l.strip()]
def inner(env):
    e = msgpack.unpackb(env, raw=False)
    assert e["t"] == "signed", e["t"]
    return e, msgpack.unpackb(e["body"], raw=False)
bodies = {}
for env in gl:
    e, g = inner(env)
    bodies[g["mv"]] = (env, e, g)
assert 1 in bodies and 2 in bodies, sorted(bodies)
env2, e2, g2 = bodies[2]
def put(name, b):
    open(T + "/" + name, "wb").write(b)
put("v1.signed", bodies[1][0])                      # rolled back
g3 = dict(g2, mv=3, r=3)
put("v3.body", msgpack.packb(g3))                   # unsigned, and to sign with other keys
put("v3.tampered", msgpack.packb(dict(e2, body=msgpack.packb(g3))))  # old sig, new body
put("other-fleet.body", msgpack.packb(dict(g3, fl="other")))
w = dict(g2["w"]); c = bytearray(w["c"]); c[0] ^= 0x01; w["c"] = bytes(c)
put("v2-other.body", msgpack.packb(dict(g2, w=w)))  # same version, other weights
PYEOF
"$TT" sign "$T/other.pem" "$T/v3.body" "$T/v3.other-key" || fail "trust_tool sign (other)"
"$TT" sign "$AGG_KEY" "$T/other-fleet.body" "$T/other-fleet.signed" || fail "trust_tool sign"
"$TT" sign "$AGG_KEY" "$T/v2-other.body" "$T/v2-other.signed" || fail "trust_tool sign"

# attack FILE REASON TEXT: publish FILE as the retained global; each of the
# 3 devices must log a refusal with REASON and TEXT, keeping version 2.
attack() {
  before=$(grep -c "refused a global: $2: .*$3" "$T/sim.log" || true)
  mosquitto_pub $SUB -t "fedmq/$FL/model/global" -q 1 -r -f "$T/$1" ||
    fail "mosquitto_pub $1"
  n=0
  while [ "$(grep -c "refused a global: $2: .*$3.*keeping model version 2 (round 2)" "$T/sim.log" || true)" -lt $((before + 3)) ]; do
    n=$((n + 1)); [ $n -le 100 ] || fail "$1: not refused with '$2: ... $3' by all 3 devices"
    sleep 0.1
  done
  echo "  $1: $(grep "refused a global: $2" "$T/sim.log" | tail -1 | sed 's/.*refused/refused/')"
}
attack v3.body sig "unsigned"
attack v3.tampered sig "does not verify"
attack v3.other-key key "not a trusted key"
attack other-fleet.signed fleet "fleet other"
attack v1.signed stale "is older"
attack v2-other.signed stale "other content"
pass "unsigned, tampered, other-key, other-fleet, rolled-back and same-version-other-weights globals refused by every device, model version 2 kept"

# ------------------------------------------------------- what a reader sees
"$PY" - "$T" "$FL" "$KID" <<'PYEOF' || fail "update payloads are not all sealed to $KID"
import msgpack, sys
T, FL, KID = sys.argv[1:4]
n = 0
for l in open(T + "/updates.hex"):
    if not l.strip():
        continue
    topic, hx = l.split()
    e = msgpack.unpackb(bytes.fromhex(hx), raw=False)
    assert e["t"] == "sealed" and e["kid"] == KID, (topic, e.get("t"), e.get("kid"))
    assert set(e) >= {"v", "t", "kid", "r", "epk", "iv", "ct"}, sorted(e)
    dev = topic.split("/")[-1]
    if n == 0:
        open(T + "/cap.sealed", "wb").write(bytes.fromhex(hx))
        open(T + "/cap.dev", "w").write(dev)
        open(T + "/cap.round", "w").write(str(e["r"]))
    n += 1
print("  %d update payloads on fedmq/%s/update/+, every one a sealed envelope to %s" % (n, FL, KID))
PYEOF
CAPDEV=$(cat "$T/cap.dev")
CAPR=$(cat "$T/cap.round")
if "$TT" open "$T/other.pem" "$FL" "$CAPDEV" "$T/cap.sealed" "$T/cap.other" 2>"$T/open-other.err"; then
  fail "another key opened a sealed update"
fi
grep -q "refused: key" "$T/open-other.err" || fail "another key: not refused with key ($(cat "$T/open-other.err"))"
"$TT" open "$AGG_KEY" "$FL" "$CAPDEV" "$T/cap.sealed" "$T/cap.plain" >/dev/null ||
  fail "the aggregator's key does not open the captured update"
"$PY" - "$T" <<'PYEOF' || fail "plaintext bytes of the update appear in its sealed form"
import msgpack, sys
T = sys.argv[1]
u = msgpack.unpackb(open(T + "/cap.plain", "rb").read(), raw=False)
sealed = open(T + "/cap.sealed", "rb").read()
codes = u["d"]["c"]
assert u["t"] == "update" and len(codes) >= 1024
# no 16-byte window of the quantized delta occurs in what the broker saw
hits = sum(1 for i in range(0, len(codes) - 16, 16) if codes[i:i + 16] in sealed)
print("  the aggregator's key opens it (%d delta code bytes); 16-byte windows found in the ciphertext: %d" % (len(codes), hits))
sys.exit(1 if hits else 0)
PYEOF
pass "a subscriber on fedmq/$FL/update/+ reads only sealed envelopes; another key cannot open them (key), their plaintext does not show"

# ----------------------------------------------------------------- replay
# The round-1 update captured first, replayed in round 3: as it was, with
# its clear round rewritten to 3, and on another device's topic.
[ "$CAPR" = 1 ] || fail "the first captured update is for round $CAPR, not 1"
case $CAPDEV in dev-0000) OTHER=dev-0001 ;; *) OTHER=dev-0000 ;; esac
"$PY" - "$T" <<'PYEOF' || fail "rewriting the round"
import msgpack, sys
T = sys.argv[1]
e = msgpack.unpackb(open(T + "/cap.sealed", "rb").read(), raw=False)
e["r"] = 3
open(T + "/cap.r3", "wb").write(msgpack.packb(e))
PYEOF
it_agg agg2 $AGGARGS --round-ms 8000 --rounds 3
it_wait_line "$T/agg2.log" "^round 2:" 60
grep -q "round 2 (resumed)" "$T/agg2.log" || fail "run 2 did not resume round 2"
for f in "cap.sealed:$CAPDEV" "cap.r3:$CAPDEV" "cap.sealed:$OTHER"; do
  mosquitto_pub $SUB -t "fedmq/$FL/update/${f#*:}" -q 1 -f "$T/${f%%:*}" || fail "replaying ${f%%:*}"
done
it_wait_pid $AGG_PID 60 || fail "aggregator run 2 failed"
l2=$(grep "^round 2:" "$T/agg2.log")
l3=$(grep "^round 3:" "$T/agg2.log") || fail "round 3 did not close"
echo "  $l2"
echo "  $l3"
echo "$l2" | grep -q "3/4 devices" || fail "round 2 (after the forged globals) should close with the 3 devices"
echo "$l3" | grep -q "3/4 devices" || fail "round 3 should close with the 3 devices"
echo "$l3" | grep -q "3 rejected (.*duplicate:1" || fail "round 3: the replay as it was should be a duplicate"
echo "$l3" | grep -q "seal:2" || fail "round 3: the re-rounded and the moved replays should be seal"
grep -q "update from $CAPDEV rejected: duplicate: round 1" "$T/agg2.log" || fail "no log line for the duplicate"
grep -q "update from $CAPDEV rejected: seal: does not open for fleet $FL, device $CAPDEV, round 3" "$T/agg2.log" ||
  fail "no log line for the re-rounded replay"
grep -q "update from $OTHER rejected: seal: does not open for fleet $FL, device $OTHER, round 1" "$T/agg2.log" ||
  fail "no log line for the moved replay"
pass "round-1 update replayed in round 3: as it was a duplicate, re-rounded and moved to $OTHER's topic refused (seal); rounds 2 and 3 trained by all 3 devices after the forgeries"

kill -TERM $SIM_PID; wait $SIM_PID 2>/dev/null || true
s=$(grep "^fedmq-sim: 3 devices" "$T/sim.log") || fail "no fleet summary"
echo "  $s"
for why in sig:6 key:3 fleet:3 stale:6; do
  echo "$s" | grep -q "$why" || fail "the fleet summary should count $why"
done
pass "the fleet counted its refusals by reason"
