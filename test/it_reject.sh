# it_reject.sh — bad updates are rejected with their reason while the round
# goes on, and a duplicate (same device, same round) is counted once. A real
# Mosquitto over TLS and fedmq-aggregator (model logreg, P = 7,850); the
# updates are made and published by test/tools/fmq_forge, sealed to the
# aggregator's key as devices seal them (so every check behind the opening
# is tried), and once unsealed (refused: seal). The aggregator reads its
# settings from a file, with flags overriding it.
. test/fleet_lib.sh
it_start_broker
F="$B/tools/fmq_forge"
P=7850
# The settings come from a configuration file (mosquitto.conf style), with
# flags overriding it: the file's cohort of 5 becomes 3 on the command line.
cat > "$T/agg.conf" <<EOC
# fedmq-aggregator settings for it_reject
fleet rej
model logreg
cohort 5
round_ms 60000
rounds 1
holdout none
log_level warning
EOC
it_agg rej --config "$T/agg.conf" --cohort 3 --quorum 3 --state-dir "$T/agg-rej"
it_wait_line "$T/rej.log" "fleet rej, model logreg" 30
sleep 0.3
forge() { "$F" --seal "$AGG_PUB" "$URI" "$CA" rej "$@" || fail "fmq_forge $*"; }
forge dev-a 1 1 $P good 3        # the same update three times
forge dev-b 1 1 $P nan
forge dev-c 1 1 $P wrongp
forge dev-d 1 1 $P garbage
forge dev-e 1 1 $P oversize
forge dev-f 1 1 $P fleet
forge dev-g 1 1 $P liar
forge dev-h 5 5 $P good          # a round from the future
"$F" "$URI" "$CA" rej dev-i 1 1 $P good || fail "fmq_forge unsealed"  # not sealed
sleep 0.5
grep -q "^round 1:" "$T/rej.log" && fail "the round closed on bad updates alone"
forge dev-b 1 1 $P good          # the round goes on: two good updates close it
forge dev-c 1 1 $P good
it_wait_pid $AGG_PID 30 || fail "aggregator failed"
line=$(grep "^round 1:" "$T/rej.log") || fail "round 1 did not close"
echo "  $line"
echo "$line" | grep -q "3/3 devices" || fail "round 1 should count dev-a once, dev-b and dev-c (cohort 3 from the flag over the file's 5)"
for why in duplicate:2 nonfinite:1 model:1 malformed:1 too_large:1 fleet:1 inval:1 stale:1 seal:1; do
  echo "$line" | grep -qi "$why" || fail "round 1 should count rejection $why"
done
echo "$line" | grep -q "10 rejected" || fail "round 1 should show 10 rejected"
for what in "dev-b rejected: nonfinite" "dev-c rejected: model: 7849 values" \
            "dev-e rejected: too_large" "dev-a rejected: duplicate" \
            "dev-i rejected: seal: an unsealed update"; do
  grep -qi "$what" "$T/rej.log" || fail "no log line naming '$what'"
done
pass "duplicates counted once; NaN, wrong-size, malformed, oversized, wrong-fleet, wrong-device, future (all sealed) and unsealed updates rejected with their reasons while the round went on"
