# it_strategies.sh — aggregation strategies over a real Mosquitto with TLS,
# fedmq-aggregator and 10 simulated devices (model logreg):
#   fedbuff  asynchronous: a version every K = 4 updates, no deadline, the
#            devices training every version they receive; stale updates
#            folded in (those past max staleness are rejected `stale`, as
#            many as timing makes); the model learns (a later version's
#            hold-out accuracy above the first's);
#   krum:2   one device sends -10 x its honest delta every round: Krum never
#            picks it, the median-multiple norm bound clips it, and the
#            model learns.
# The arithmetic of every strategy is test/test_strategy.c's; this checks
# that they run as configured against a real fleet.
. test/fleet_lib.sh
it_start_broker
COMMON="--model logreg --seed 1 --lr 0.05 --momentum 0.9 --batch 64"
DATA="--parties 10 --partition dirichlet:0.5 --seed 1"

# ------------------------------------------------------------- fedbuff
it_sim fb --fleet fb --id-prefix fb $DATA --devices 10 --slow 0.3 --slow-ms 300
it_agg fba --fleet fb $COMMON --strategy fedbuff --buffer-k 4 --max-staleness 3 \
  --cohort 10 --rounds 8 --state-dir "$T/agg-fb"
it_wait_pid $AGG_PID 180 || fail "fedbuff: the aggregator failed"
kill -TERM $SIM_PID; wait $SIM_PID 2>/dev/null || true
grep -q "strategy fedbuff$" "$T/fba.log" || fail "fedbuff: not on the start line"
n=$(grep -c "^round [0-9]*: 4/4 devices, .*strategy fedbuff (buffer 4 of K 4, " "$T/fba.log")
[ "$n" -eq 8 ] || fail "fedbuff: $n of 8 versions were made of 4 updates"
grep -q "^round [2-8]: .*, [1-4] stale)" "$T/fba.log" || fail "fedbuff: no stale update was folded in"
"$PY" - "$T/fba.log" <<'PYEOF' || fail "fedbuff: the model did not learn"
import re, sys
acc = [float(a) for a in re.findall(r"^round \d+: .*test acc ([\d.]+)", open(sys.argv[1]).read(), re.M)]
print("  fedbuff: hold-out accuracy by version", " ".join("%.3f" % a for a in acc))
# stale updates make it noisy: the best later version beats the first
sys.exit(0 if len(acc) == 8 and max(acc[1:]) > acc[0] + 0.05 else 1)
PYEOF
pass "fedbuff: 8 versions of K = 4 updates each with no rounds, stale updates folded in, the model learned"

# ------------------------------------------------------------- krum
it_sim kr --fleet kr --id-prefix kr $DATA --devices 10 --hostile kr-0009:scale:-10
it_agg kra --fleet kr $COMMON --strategy krum:2 --cohort 10 --quorum 8 --rounds 4 \
  --round-ms 30000 --state-dir "$T/agg-kr" --norm-clip-median 3
it_wait_pid $AGG_PID 180 || fail "krum: the aggregator failed"
kill -TERM $SIM_PID; wait $SIM_PID 2>/dev/null || true
n=$(grep -c "^round [0-9]*: 10/10 devices, .*strategy krum:2 (krum picked kr-000[0-8], 1 clipped)" "$T/kra.log")
[ "$n" -eq 4 ] || fail "krum: $n of 4 rounds picked an honest device and clipped the hostile one"
"$PY" - "$T/kra.log" <<'PYEOF' || fail "krum: the model did not learn"
import re, sys
acc = [float(a) for a in re.findall(r"^round \d+: .*test acc ([\d.]+)", open(sys.argv[1]).read(), re.M)]
print("  krum:2: hold-out accuracy by round", " ".join("%.3f" % a for a in acc))
sys.exit(0 if len(acc) == 4 and acc[-1] > 0.6 else 1)
PYEOF
pass "krum:2 with a hostile device: an honest update picked every round, the hostile one clipped at 3 x the median norm, the model learned"
