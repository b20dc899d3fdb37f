# it_trust_runtime.sh — signed global models and sealed updates in a running
# fleet (proto/SPEC.md §7), each attack of issue 5 tried against a real
# Mosquitto over TLS with the fedmq_auth plugin loaded (tokens and the ACL
# of SPEC §7.4), fedmq-aggregator and 3 simulated devices dev-0000..0002
# (model logreg, cohort 4), trust on as in production (fleet_lib.sh makes
# the aggregator's key pair and the token issuer's). Every client has its
# own token, and each attacker holds the identity its attack needs and
# nothing more:
#   globals  a rogue operator credential (ops-rogue, role aggregator: the
#            ACL lets it publish the global) publishes forged retained
#            globals while the devices hold version 2 — unsigned, tampered
#            (body changed under the genuine signature), signed by another
#            key, a genuine signature over another fleet's global, the
#            genuine version 1 (rolled back), version 2 with other weights;
#            every device refuses each with its reason (sig, sig, key,
#            fleet, stale, stale) and keeps version 2; the next genuine
#            globals are trained (rounds 2 and 3 close with every device);
#   reading  the broker operator's broad read right (ops-audit, role
#            aggregator: reads update/+ and the global) gets only sealed
#            envelopes to the aggregator's kid, which another key cannot
#            open (key) and whose plaintext bytes do not appear in them;
#   replay   a captured round-1 update republished in round 3: as it was
#            and with its clear round rewritten to 3, on its own device's
#            topic with that device's token, is a duplicate and seal; on
#            the topic of dev-0003 (in the cohort, not simulated: its token
#            is free) with dev-0003's token, it does not open (seal). The
#            two replays with the captured device's token are sent after
#            the fleet has sent its round-3 updates and stopped (a stolen
#            token of a device that is off): connecting with the id of a
#            running device takes its session over, and the device's
#            reconnect resends its pending update, one more duplicate per
#            takeover that depends on timing; this way round 3's counts are
#            exact;
#   ACL      what only the plugin stops: dev-0003, with its own valid
#            token, publishes a retained global on model/global and a
#            correctly sealed round-3 update for another device on that
#            device's update topic (sealing cannot stop it: anyone holding
#            the aggregator's public key seals for any device id). Both are
#            denied at the broker (its log: "denied"): the spy never gets
#            them, the devices refuse nothing more than the 18 forgeries
#            above, and round 3 counts nothing more than the replays;
#   summary  the plugin's summary at broker stop: no client refused, those
#            2 publishes denied and nothing else.
. test/fleet_lib.sh
TT="$B/tools/trust_tool"
env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory BUILD="$B" "$TT" || fail "building trust_tool"
FL=tr
it_start_broker_auth $FL
it_keygen other
KID=$("$TT" kid "$AGG_PUB")
TOKENS=$(it_tokens $FL 4) || fail "device tokens"
tok_of() { awk -v k="$1" '$1 == k { print $2 }' "$TOKENS"; }
SPY_TOK=$(it_token ops-audit aggregator $FL) || fail "spy token"
ROGUE_TOK=$(it_token ops-rogue aggregator $FL) || fail "rogue operator token"
AGG_TOK=$(it_token fedmq-agg-$FL aggregator $FL) || fail "aggregator token"
# the aggregator's token in its configuration file, out of ps
printf '# fedmq-aggregator settings for it_trust_runtime\npassword %s\n' "$AGG_TOK" >"$T/agg.conf"
chmod 600 "$T/agg.conf"
FREE=dev-0003
FREE_TOK=$(tok_of $FREE)
[ -n "$FREE_TOK" ] || fail "no token for $FREE in $TOKENS"
C="-h 127.0.0.1 -p $PORT --cafile $CA -V mqttv5"
# rogue FILE TOPIC [-r]: publish FILE as ops-rogue (QoS 1)
rogue() {
  mosquitto_pub $C -i ops-rogue -P "$ROGUE_TOK" -t "fedmq/$FL/$2" -q 1 ${3:-} -f "$1" ||
    fail "mosquitto_pub as ops-rogue on $2"
}
# dev_pub ID FILE TOPIC [-r]: publish FILE with device ID's token (QoS 1);
# what mosquitto_pub says is in $T/pub.out. It exits 0 when the broker
# denies the publish too (PUBACK 135, "Not authorized" in pub.out): judge
# by what is received.
dev_pub() {
  mosquitto_pub $C -i "$1" -P "$(tok_of "$1")" -t "fedmq/$FL/$3" -q 1 ${4:-} -f "$2" \
    >"$T/pub.out" 2>&1 || fail "mosquitto_pub as $1 on $3: $(cat "$T/pub.out")"
  cat "$T/pub.out" >>"$T/pub-$1.log"
}
# pub_denied / pub_taken: the last dev_pub was refused, was taken by the broker
pub_denied() { grep -q "Not authorized" "$T/pub.out" || fail "the broker took $1 (no PUBACK 135)"; }
pub_taken() { [ ! -s "$T/pub.out" ] || fail "the broker did not take $1: $(cat "$T/pub.out")"; }
# hex FILE: the file as one line of lower-case hex (as the spy prints it)
hex() { od -An -v -tx1 "$1" | tr -d ' \n'; }

# The spy: everything it may read on the model, update and metrics topics,
# as "topic hex"; ready when it reads a probe on metrics.
mosquitto_sub $C -i ops-audit -P "$SPY_TOK" -t "fedmq/$FL/model/global" -t "fedmq/$FL/update/+" \
  -t "fedmq/$FL/metrics" -F '%t %x' -q 1 >"$T/spy.hex" 2>"$T/spy.log" &
IT_PIDS="$IT_PIDS $!"
printf probe >"$T/probe"
n=0
until grep -q "^fedmq/$FL/metrics $(hex "$T/probe")$" "$T/spy.hex"; do
  n=$((n + 1)); [ $n -le 50 ] || fail "the spy did not start ($(cat "$T/spy.log"))"
  rogue "$T/probe" metrics
  sleep 0.1
done

DATA="--parties 3 --partition iid --seed 1"
# Globals only (--global-delta off): the forgeries below are retained
# globals on model/global, which devices read only while the aggregator
# publishes no deltas (SPEC §6.6; deltas are verified the same way,
# test_device.c and it_global_delta.sh).
AGGARGS="--config $T/agg.conf --fleet $FL --model logreg --seed 1 --cohort 4 --quorum 3
   --holdout none --state-dir $T/agg --global-delta off"
it_sim sim --fleet $FL $DATA --devices 3 --tokens "$TOKENS"
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
while [ "$(grep -c "/update/" "$T/spy.hex")" -lt 6 ]; do
  n=$((n + 1)); [ $n -le 300 ] || fail "the devices did not send their round-2 updates"
  sleep 0.1
done
pass "trust on, every client with its own token: round 1 closed with 3/4 devices, globals signed by $KID; round 2 trained"

# ----------------------------------------------------------- forged globals
"$PY" - "$T" "$FL" <<'PYEOF' || fail "crafting the forged globals"
import msgpack, sys
T, FL = sys.argv[1], sys.argv[2]
gl = [bytes.fromhex(l.split()[1]) for l in open(T + "/spy.hex")
      if l.startswith("fedmq/%s/model/global " % FL)]
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
put("v4.body", msgpack.packb(dict(g2, mv=4, r=4)))  # the device's forgery
PYEOF
"$TT" sign "$T/other.pem" "$T/v3.body" "$T/v3.other-key" || fail "trust_tool sign (other)"
"$TT" sign "$AGG_KEY" "$T/other-fleet.body" "$T/other-fleet.signed" || fail "trust_tool sign"
"$TT" sign "$AGG_KEY" "$T/v2-other.body" "$T/v2-other.signed" || fail "trust_tool sign"

# A device's own token does not open the global: dev-0003's retained
# forgery is denied before the rogue operator's six below. Had it been
# delivered, every device would refuse it (sig), one refusal each more
# than the 18 counted after them.
dev_pub $FREE "$T/v4.body" model/global -r
pub_denied "$FREE's global"
it_wait_line "$BROKER_LOG" "fedmq_auth: denied '$FREE' \(device of $FL\) publish on fedmq/$FL/model/global$" 10

# attack FILE REASON TEXT: ops-rogue publishes FILE as the retained global;
# each of the 3 devices must log a refusal with REASON and TEXT, keeping
# version 2.
attack() {
  before=$(grep -c "refused a global: $2: .*$3" "$T/sim.log" || true)
  rogue "$T/$1" model/global -r
  n=0
  while [ "$(grep -c "refused a global: $2: .*$3.*keeping model version 2 (round 2)" "$T/sim.log" || true)" -lt $((before + 3)) ]; do
    n=$((n + 1)); [ $n -le 200 ] || fail "$1: not refused with '$2: ... $3' by all 3 devices"
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
pass "a rogue operator token's unsigned, tampered, other-key, other-fleet, rolled-back and same-version-other-weights globals refused by every device, model version 2 kept"
nref=$(grep -c "refused a global" "$T/sim.log" || true)
[ "$nref" -eq 18 ] || fail "the devices refused $nref globals, not the rogue operator's 18"
grep -q " $(hex "$T/v4.body")$" "$T/spy.hex" && fail "the spy received $FREE's forged global"
pass "$FREE's own token cannot publish the global: denied at the broker, never delivered (the spy did not get it, the devices refused only the 18 above)"

# ------------------------------------------------------- what a reader sees
"$PY" - "$T" "$FL" "$KID" <<'PYEOF' || fail "update payloads are not all sealed to $KID"
import msgpack, sys
T, FL, KID = sys.argv[1:4]
n = 0
for l in open(T + "/spy.hex"):
    if not l.startswith("fedmq/%s/update/" % FL):
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
pass "ops-audit (the operator's read right on fedmq/$FL/update/+) reads only sealed envelopes; another key cannot open them (key), their plaintext does not show"

# ----------------------------------------------------------------- replay
# The round-1 update captured first, replayed in round 3: as it was and
# with its clear round rewritten to 3 with $CAPDEV's token, and moved to
# $FREE's topic with $FREE's token. And $FREE's forgery for VICTIM: the
# captured update's plaintext made VICTIM's round-3 update and sealed for
# it (fleet, device, round 3), published on VICTIM's topic.
[ "$CAPR" = 1 ] || fail "the first captured update is for round $CAPR, not 1"
case $CAPDEV in dev-0002) VICTIM=dev-0001 ;; *) VICTIM=dev-0002 ;; esac
"$PY" - "$T" "$VICTIM" <<'PYEOF' || fail "rewriting the round"
import msgpack, sys
T, victim = sys.argv[1:3]
e = msgpack.unpackb(open(T + "/cap.sealed", "rb").read(), raw=False)
e["r"] = 3
open(T + "/cap.r3", "wb").write(msgpack.packb(e))
u = msgpack.unpackb(open(T + "/cap.plain", "rb").read(), raw=False)
open(T + "/forged.plain", "wb").write(msgpack.packb(dict(u, dev=victim, r=3, mv=3)))
PYEOF
"$TT" seal "$AGG_PUB" "$FL" "$VICTIM" 3 "$T/forged.plain" "$T/forged.sealed" >/dev/null ||
  fail "trust_tool seal"
# it is well formed: the aggregator's key opens it as $VICTIM's round 3
"$TT" open "$AGG_KEY" "$FL" "$VICTIM" "$T/forged.sealed" "$T/forged.opened" >/dev/null ||
  fail "the forgery for $VICTIM does not open with the aggregator's key"
it_agg agg2 $AGGARGS --round-ms 8000 --rounds 3
it_wait_line "$T/agg2.log" "^round 2:" 60
grep -q "round 2 (resumed)" "$T/agg2.log" || fail "run 2 did not resume round 2"
# The fleet's round-3 updates are at the broker (the spy has them); then
# the fleet stops.
"$PY" - "$T/spy.hex" "$FL" 3 3 60 <<'PYEOF' || fail "the devices did not send their round-3 updates"
import msgpack, sys, time
f, FL, r, n, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
end = time.time() + secs
while True:
    devs = set()
    for l in open(f):
        p = l.split()
        if len(p) != 2 or not p[0].startswith("fedmq/%s/update/" % FL):
            continue
        try:
            e = msgpack.unpackb(bytes.fromhex(p[1]), raw=False)
        except Exception:
            continue  # a line still being written
        if e.get("r") == r:
            devs.add(p[0].rsplit("/", 1)[1])
    if len(devs) >= n:
        sys.exit(0)
    if time.time() > end:
        print("round %d updates from %s only" % (r, sorted(devs)))
        sys.exit(1)
    time.sleep(0.1)
PYEOF
kill -TERM $SIM_PID
it_wait_pid $SIM_PID 60 || true
s=$(grep "^fedmq-sim: 3 devices" "$T/sim.log") || fail "no fleet summary"
dev_pub $FREE "$T/forged.sealed" "update/$VICTIM"
pub_denied "$FREE's update for $VICTIM"
# the replays pass the broker (each on its publisher's own topic): the
# aggregator refuses them
dev_pub "$CAPDEV" "$T/cap.sealed" "update/$CAPDEV"
pub_taken "$CAPDEV's replay as it was"
dev_pub "$CAPDEV" "$T/cap.r3" "update/$CAPDEV"
pub_taken "$CAPDEV's re-rounded replay"
dev_pub $FREE "$T/cap.sealed" "update/$FREE"
pub_taken "the replay moved to $FREE"
it_wait_line "$BROKER_LOG" "fedmq_auth: denied '$FREE' \(device of $FL\) publish on fedmq/$FL/update/$VICTIM$" 10
it_wait_pid $AGG_PID 90 || fail "aggregator run 2 failed"
l2=$(grep "^round 2:" "$T/agg2.log")
l3=$(grep "^round 3:" "$T/agg2.log") || fail "round 3 did not close"
echo "  $l2"
echo "  $l3"
echo "$l2" | grep -q "3/4 devices" || fail "round 2 (after the forged globals) should close with the 3 devices"
echo "$l3" | grep -q "^round 3: 3/4 devices, 0 late (0 folded), 3 rejected (duplicate:1,seal:2)," ||
  fail "round 3 should close with the 3 devices, the replay as it was a duplicate, the re-rounded and the moved ones seal, and nothing else"
grep -q "update from $CAPDEV rejected: duplicate: round 1" "$T/agg2.log" || fail "no log line for the duplicate"
grep -q "update from $CAPDEV rejected: seal: does not open for fleet $FL, device $CAPDEV, round 3" "$T/agg2.log" ||
  fail "no log line for the re-rounded replay"
grep -q "update from $FREE rejected: seal: does not open for fleet $FL, device $FREE, round 1" "$T/agg2.log" ||
  fail "no log line for the moved replay"
pass "round-1 update replayed in round 3: as it was a duplicate, re-rounded ($CAPDEV's token) and moved to $FREE's topic ($FREE's token) refused (seal); rounds 2 and 3 trained by all 3 devices after the forgeries"
grep -q "round 3: update from $VICTIM" "$T/agg2.log" && fail "the aggregator received an update from $VICTIM in round 3"
grep -q " $(hex "$T/forged.sealed")$" "$T/spy.hex" && fail "the spy received $FREE's forged update for $VICTIM"
pass "$FREE's own token cannot publish on $VICTIM's topic: its sealed round-3 forgery denied at the broker, never delivered (not to the spy, not to the aggregator)"

echo "  $s"
echo "$s" | grep -q " 18 globals refused (sig:6,key:3,fleet:3,stale:6)," ||
  fail "the fleet summary should count the 18 forgeries by reason"
pass "the fleet counted its refusals by reason"

# ----------------------------------------------------------------- broker
sh "$ROOT/deploy/broker.sh" stop "$T/broker" >/dev/null 2>&1 || fail "stopping the broker"
sum=$(grep "fedmq_auth: summary:" "$BROKER_LOG") || fail "no plugin summary at broker stop"
echo "  ${sum#*fedmq_auth: }"
echo "$sum" | grep -Eq "summary: accepted [0-9]+ by token, 0 by certificate; refused 0; denied 2 publish, 0 subscribe, 0 receive, 0 without identity; 7 known clients$" ||
  fail "the summary should show no client refused and 2 publishes denied (7 clients)"
nd=$(grep -c "fedmq_auth: denied" "$BROKER_LOG" || true)
[ "$nd" -eq 2 ] || fail "$nd denial lines in the broker log, not 2: $(grep "fedmq_auth: denied" "$BROKER_LOG")"
pass "the plugin's summary at broker stop: no client refused, the 2 publishes of $FREE denied and nothing else"
