# it_global_delta.sh — compressed global models (proto/SPEC.md §6.6) and
# per-class update schemes (§6.1 uqc) over a real Mosquitto with TLS,
# signed globals and deltas, sealed updates, keys made for the run:
#   A. 10 devices follow q8 deltas for 5 rounds and end with weights bit
#      for bit the aggregator's (fedmq-sim --save-dir, fedmq-aggregator
#      --save); no full fetch; bytes down per device per round beside the
#      same run with --global-delta off;
#   B. a device offline for round 3 misses that delta, fetches the full
#      model once at round 4's delta, is back on deltas, and ends on the
#      aggregator's weights too;
#   C. classes cell (q4) and hub (q8, blocks of 128) and others (q8/256)
#      in one round: nothing rejected, bytes up as the mix predicts, and
#      again every device on the aggregator's weights.
. test/fleet_lib.sh
it_start_broker
COMMON="--model mlp:128 --seed 1 --lr 0.01 --momentum 0.9 --batch 64"

# same_weights DIR AGG.bin: the 10 devices' DIR/*.bin are byte for byte AGG.bin
same_weights() {
  n=0
  for f in "$1"/*.bin; do
    [ -f "$f" ] || fail "no device weights in $1"
    cmp -s "$f" "$2" || fail "$(basename "$f") differs from the aggregator's model $(basename "$2")"
    n=$((n + 1))
  done
  [ $n -eq 10 ] || fail "$n device weight files in $1, expected 10"
  echo "  $n devices hold the aggregator's weights bit for bit"
}

# summary LOG FIELD: a number from fedmq-sim's summary line
summary() {
  "$PY" - "$1" "$2" <<'EOF'
import re, sys
s = open(sys.argv[1]).read()
m = re.search(r"(\d+) devices, (\d+) updates trained, (\d+) globals refused.*"
              r"deltas applied (\d+), full fetches (\d+); bytes up (\d+), down (\d+)", s)
if not m:
    sys.exit(1)
keys = ["devices", "trained", "refused", "deltas", "fetches", "up", "down"]
print(dict(zip(keys, m.groups()))[sys.argv[2]])
EOF
}

# run NAME DELTA [AGG ARGS...]: 10 devices, 5 rounds; the sim is stopped
# (SIGTERM: it saves its devices' weights) once the aggregator is done
run() {
  rn=$1; rd=$2; shift 2 # (not $name: it_sim and it_agg set it)
  it_sim sim$rn --devices 10 --parties 10 --partition dirichlet:0.5 --seed 1 \
    --fleet gd$rn --save-dir "$T/dev$rn"
  sp=$SIM_PID
  it_agg agg$rn --fleet gd$rn $COMMON --cohort 10 --round-ms 60000 --rounds 5 \
    --holdout none --global-delta "$rd" --state-dir "$T/agg$rn" --save "$T/agg$rn.bin" "$@"
  it_wait_pid $AGG_PID 180 || fail "aggregator $rn failed"
  sleep 2 # the last version reaches every device
  kill -TERM $sp
  wait $sp 2>/dev/null || true
  grep -q "round 5: 10/10 devices, 0 late (0 folded), 0 rejected" "$T/agg$rn.log" ||
    fail "run $rn: round 5 did not close with 10/10 and nothing rejected"
}

# --- A: deltas followed, bit for bit; bytes down against deltas off
run A q8 --scheme q8
grep -q "deltas q8/256 on model/delta" "$T/aggA.log" || fail "the aggregator does not say it publishes q8 deltas"
same_weights "$T/devA" "$T/aggA.bin"
[ "$(summary "$T/simA.log" refused)" = 0 ] || fail "devices refused globals or deltas"
[ "$(summary "$T/simA.log" deltas)" = 50 ] || fail "expected 50 deltas applied (10 devices x 5 versions)"
[ "$(summary "$T/simA.log" fetches)" = 0 ] || fail "a device fetched the full model"
run O off --scheme q8
grep -q "deltas off" "$T/aggO.log" || fail "--global-delta off is not off"
same_weights "$T/devO" "$T/aggO.bin"
[ "$(summary "$T/simO.log" deltas)" = 0 ] || fail "deltas applied with --global-delta off"
"$PY" - "$(summary "$T/simA.log" down)" "$(summary "$T/simO.log" down)" <<'EOF' || fail "deltas do not cut the bytes down"
import sys
a, o = int(sys.argv[1]), int(sys.argv[2])
# 6 model messages per device (versions 1..6): one full model, then 5
# deltas, against 6 full models; per round: what the 5 rounds cost after
# the first model
full = o / 10 / 6
per = (a / 10 - full) / 5
print("  down per device per round: q8 deltas %.1f KB, full f32 models %.1f KB "
      "(%.2fx less); in all %.1f KB against %.1f KB" % (per / 1000, full / 1000,
      full / per, a / 10000, o / 10000))
sys.exit(0 if per < 0.27 * full else 1)
EOF
pass "10 devices follow q8 deltas for 5 rounds and hold the aggregator's weights bit for bit; bytes down cut ~4x"

# --- B: a device offline for round 3 fetches the full model once
it_sim simB1 --devices 9 --parties 10 --partition dirichlet:0.5 --seed 1 \
  --fleet gdB --save-dir "$T/devB"
s1=$SIM_PID
it_sim simB2 --devices 1 --first-party 9 --parties 10 --partition dirichlet:0.5 --seed 1 \
  --fleet gdB --save-dir "$T/devB" --offline 1 --offline-rounds 3 --offline-ms 1500
s2=$SIM_PID
it_agg aggB --fleet gdB $COMMON --scheme q8 --global-delta q8 --cohort 10 --quorum 9 \
  --round-ms 4000 --rounds 5 --holdout none --state-dir "$T/aggB" --save "$T/aggB.bin"
it_wait_pid $AGG_PID 180 || fail "aggregator B failed"
sleep 2
kill -TERM $s1 $s2
wait $s1 2>/dev/null || true
wait $s2 2>/dev/null || true
grep -q "round 3: 9/10 devices" "$T/aggB.log" || fail "round 3 should close with 9 of 10 (dev-0009 offline)"
grep -q "round 4: 10/10 devices" "$T/aggB.log" || fail "dev-0009 is not back in round 4"
grep -q "round 5: 10/10 devices" "$T/aggB.log" || fail "dev-0009 is not in round 5"
[ "$(summary "$T/simB2.log" fetches)" = 1 ] || fail "dev-0009 should fetch the full model exactly once"
[ "$(summary "$T/simB2.log" refused)" = 0 ] || fail "dev-0009 refused something"
[ "$(summary "$T/simB1.log" fetches)" = 0 ] || fail "an online device fetched the full model"
same_weights "$T/devB" "$T/aggB.bin"
"$PY" - "$(summary "$T/simB2.log" down)" "$(summary "$T/simB1.log" down)" "$(summary "$T/simB2.log" deltas)" <<'EOF'
import sys
off, on, d = int(sys.argv[1]), int(sys.argv[2]) / 9, int(sys.argv[3])
print("  dev-0009: %d deltas applied, 1 full fetch, %.1f KB down in all; an online "
      "device %.1f KB" % (d, off / 1000, on / 1000))
EOF
pass "a device that missed round 3's delta fetched the full model once, went back to deltas and holds the aggregator's weights"

# --- C: classes cell (q4), hub (q8/128), the rest (q8/256), one round mixed
it_sim simC --devices 10 --parties 10 --partition dirichlet:0.5 --seed 1 \
  --fleet gdC --classes cell:0.4,hub:0.3 --save-dir "$T/devC"
sc=$SIM_PID
it_agg aggC --fleet gdC $COMMON --scheme q8 --class-scheme cell:q4,hub:q8/128 \
  --cohort 10 --round-ms 60000 --rounds 2 --holdout none --state-dir "$T/aggC" --save "$T/aggC.bin"
it_wait_pid $AGG_PID 120 || fail "aggregator C failed"
sleep 2
kill -TERM $sc
wait $sc 2>/dev/null || true
for r in 1 2; do
  grep -q "round $r: 10/10 devices, 0 late (0 folded), 0 rejected" "$T/aggC.log" ||
    fail "round $r with mixed classes did not count all 10 without rejections"
done
grep -q "class schemes cell:q4,hub:q8/128" "$T/aggC.log" || fail "the aggregator does not name the class schemes"
same_weights "$T/devC" "$T/aggC.bin"
"$PY" - "$T/simC.log" <<'EOF' || fail "bytes up do not match the class mix"
import re, sys
s = open(sys.argv[1]).read()
cls = dict((k, int(v)) for k, v in re.findall(r"class (\w+): (\d+) devices", s))
none = int(re.search(r"no class: (\d+) devices", s).group(1))
up = int(re.search(r"bytes up (\d+)", s).group(1))
P = 101770
def size(bits, block):  # codes + scales (the rest is a few hundred bytes)
    return (P * bits + 7) // 8 + 4 * -(-P // block)
want = 3 * (cls.get("cell", 0) * size(4, 256) + cls.get("hub", 0) * size(8, 128) +
            none * size(8, 256))   # 3 updates each: rounds 1, 2 and the
                                   # final version's (trained, not counted)
print("  classes %s, no class %d: %.1f KB up per round, the mix predicts %.1f KB"
      % (cls, none, up / 3000, want / 3000))
ok = cls.get("cell", 0) > 0 and cls.get("hub", 0) > 0 and none > 0
sys.exit(0 if ok and abs(up - want) / want < 0.02 else 1)
EOF
pass "cell devices sent q4, hub devices q8/128, the others q8/256 in the same rounds; nothing rejected; weights bit for bit"
