#!/bin/sh
# it_operate.sh — what the aggregator tells operators (issue 7, items 1
# and 3), against a real Mosquitto over TLS, trust on:
#   - a device sending noise (fedmq-sim --hostile dev-0004:noise:1) is
#     flagged noisy every round;
#   - a device that says it is online (a retained status, published by
#     hand) but never sends an update is flagged stuck from round 3;
#   - a device whose updates are malformed each round (trailing bytes
#     after a one-byte MessagePack value) is flagged rejected
#     from its third;
#   - each flag is logged, sent in the retained metrics message (fg), and
#     written to the JSON-lines file and the Prometheus file; every JSON
#     line parses and has one line per round; the Prometheus file has the
#     gauges, the counters and one fedmq_device_flagged series per flag.
. test/fleet_lib.sh
it_start_broker
FL=op
SUB="-h 127.0.0.1 -p $PORT --cafile $CA -q 1"
# dev-0009 says it is online, retained, and then nothing
"$PY" -c 'import msgpack, sys
sys.stdout.buffer.write(msgpack.packb({"t": "status", "v": 1, "fl": "op", "dev": "dev-0009", "on": True}))' >"$T/online.bin"
mosquitto_pub $SUB -t "fedmq/$FL/status/dev-0009" -r -f "$T/online.bin" || fail "publishing dev-0009's status"
it_sim sim --fleet $FL --parties 5 --devices 5 --hostile dev-0004:noise:1 --seed 1
it_agg agg --fleet $FL --model logreg --seed 1 --cohort 6 --quorum 5 --round-ms 1500 --rounds 5 \
  --holdout none --state-dir "$T/agg" --prom-file "$T/fedmq.prom"
# dev-0008 publishes garbage on its own update topic in rounds 1..4
for r in 1 2 3 4; do
  it_wait_line "$T/agg.log" "fedmq-aggregator: fleet $FL" 30
  [ $r -eq 1 ] || it_wait_line "$T/agg.log" "^round $((r - 1)): " 30
  printf 'not an update %s' $r | mosquitto_pub $SUB -t "fedmq/$FL/update/dev-0008" -s ||
    fail "publishing dev-0008's garbage"
done
it_wait_pid $AGG_PID 90 || fail "the aggregator failed"
grep -q '^round 5: ' "$T/agg.log" || fail "5 rounds did not close"

n=$(grep -c 'flagged dev-0004: noisy' "$T/agg.log")
[ "$n" -eq 5 ] || fail "dev-0004 should be flagged noisy in every round (5), got $n"
grep -q 'round 2: flagged dev-0009' "$T/agg.log" && fail "dev-0009 flagged stuck too early"
for r in 3 4 5; do
  grep -q "round $r: flagged dev-0009: stuck (online and in the cohort, silent for $r rounds)" "$T/agg.log" ||
    fail "dev-0009 not flagged stuck in round $r"
done
grep -q 'round 2: flagged dev-0008' "$T/agg.log" && fail "dev-0008 flagged rejected too early"
grep -q "round 3: flagged dev-0008: rejected (3 updates rejected in the last 5 rounds (last: trailing))" "$T/agg.log" ||
  fail "dev-0008 not flagged rejected after its third malformed update"
grep -E 'flagged dev-000[0-3]' "$T/agg.log" && fail "an honest device was flagged"
pass "flags in the log: dev-0004 noisy in 5/5 rounds, dev-0009 stuck from round 3, dev-0008 rejected from its third malformed update, no honest device flagged"

"$PY" - "$T/agg/metrics.jsonl" <<'PYEOF' || fail "metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["round"] for r in rows] == [1, 2, 3, 4, 5], [r["round"] for r in rows]
last = rows[-1]
assert last["fleet"] == "op" and last["participants"] >= 5, last
flags = {(f["device"], f["why"]) for f in last["flags"]}
assert flags >= {("dev-0004", "noisy"), ("dev-0009", "stuck")}, flags
assert sum(r["rejected"].get("trailing", 0) for r in rows) == 4, [r["rejected"] for r in rows]
print("  metrics.jsonl: %d lines, round 5 flags %s" % (len(rows), sorted(flags)))
PYEOF
grep -q '^fedmq_round{fleet="op"} 5$' "$T/fedmq.prom" &&
  grep -q '^fedmq_rounds_total{fleet="op"} 5$' "$T/fedmq.prom" &&
  grep -q '^fedmq_device_flagged{fleet="op",device="dev-0004",why="noisy"} 1$' "$T/fedmq.prom" &&
  grep -q '^fedmq_device_flagged{fleet="op",device="dev-0009",why="stuck"} 1$' "$T/fedmq.prom" &&
  grep -q '^fedmq_rejected_total{fleet="op",reason="trailing"} 4$' "$T/fedmq.prom" &&
  grep -q '^# TYPE fedmq_updates_total counter$' "$T/fedmq.prom" ||
  { cat "$T/fedmq.prom" >&2; fail "the Prometheus file"; }
pass "the JSON-lines file has a line per round with the flags; the Prometheus file has the round, the counters and a series per flag"

mosquitto_sub $SUB -t "fedmq/$FL/metrics" -C 1 -W 5 -F '%x' >"$T/metrics.hex" 2>"$T/msub.err" ||
  fail "reading the retained metrics"
"$PY" - "$T/metrics.hex" <<'PYEOF' || fail "the retained metrics message"
import msgpack, sys
m = msgpack.unpackb(bytes.fromhex(open(sys.argv[1]).read().strip()), raw=False)
assert m["t"] == "metrics" and m["r"] == 5, m
fg = {(f["dev"], f["why"]) for f in m["fg"]}
assert ("dev-0004", "noisy") in fg and ("dev-0009", "stuck") in fg, fg
print("  retained metrics: round %d, fg %s" % (m["r"], sorted(fg)))
PYEOF
pass "the retained metrics message carries the flags (fg)"
