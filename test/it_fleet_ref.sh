# it_fleet_ref.sh — a networked run (real Mosquitto over TLS, fedmq-aggregator,
# 10 simulated devices, each on its own connection) equals the in-process
# FedAvg reference of fedmq-train for the same seed and partition:
#   f32 updates: the same weights within 1e-6 relative, with the arrival
#                order shuffled (half the devices hold their update back);
#   q8 updates:  one round, every weight within the quantization bound
#                sum_k (n_k/N) * step_k/2 <= max_k max|delta_k| / 254.
. test/fleet_lib.sh
it_start_broker
COMMON="--model mlp:128 --seed 1 --lr 0.01 --momentum 0.9 --batch 64"

# --- f32, 3 rounds, shuffled arrival
it_ref ref3 $COMMON --parties 10 --partition dirichlet:0.5 --rounds 3
it_sim simA --devices 10 --parties 10 --partition dirichlet:0.5 --seed 1 \
  --slow 0.5 --slow-ms 400 --fleet ref
it_agg aggA --fleet ref $COMMON --scheme f32 --cohort 10 --round-ms 60000 \
  --rounds 3 --holdout none --state-dir "$T/aggA" --save "$T/netA.bin"
it_wait_pid $AGG_PID 120 || fail "aggregator (f32) failed"
grep -q "round 3: 10/10 devices" "$T/aggA.log" || fail "round 3 did not close with 10/10"
it_close "$T/netA.bin" "$T/ref3.bin" 1e-6
pass "f32 over MQTT/TLS equals fedmq-train after 3 rounds (arrival order shuffled)"
kill -TERM $SIM_PID; wait $SIM_PID 2>/dev/null || true

# --- q8, 1 round, within the quantization bound
it_ref ref1 $COMMON --parties 10 --partition dirichlet:0.5 --rounds 1 --delta-stats
it_sim simB --devices 10 --parties 10 --partition dirichlet:0.5 --seed 1 --fleet refq
it_agg aggB --fleet refq $COMMON --scheme q8 --block 256 --cohort 10 \
  --round-ms 60000 --rounds 1 --holdout none --state-dir "$T/aggB" --save "$T/netB.bin"
it_wait_pid $AGG_PID 120 || fail "aggregator (q8) failed"
"$PY" - "$T/netB.bin" "$T/ref1.bin" "$T/ref1.log" <<'PYEOF' || fail "q8 run outside the quantization bound"
import array, re, sys
a = array.array('f'); a.frombytes(open(sys.argv[1], 'rb').read())
b = array.array('f'); b.frombytes(open(sys.argv[2], 'rb').read())
m = max(float(x) for x in re.findall(r"max_abs=(\S+)", open(sys.argv[3]).read()))
bound = m / 254 * 1.001 + 1e-7
err = max(abs(x - y) for x, y in zip(a, b))
print("  q8: max |w_net - w_ref| = %.3g, bound %.3g (max |delta| %.3g)" % (err, bound, m))
# within the bound, and not trivially equal (the quantization really happened)
sys.exit(0 if len(a) == len(b) and 0 < err <= bound else 1)
PYEOF
pass "q8 over MQTT/TLS is within the quantization bound of fedmq-train after 1 round"
