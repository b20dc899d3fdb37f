#!/bin/sh
# Heterogeneous fleets (issue 6, item 5): 10 simulated devices (fedmq-sim,
# the built-in engine) on Fashion-MNIST split labels:2 (each device holds
# two labels, NIID-Bench's #C=2), model mlp:128, q8 updates, trust on,
# over a private Mosquitto with TLS (deploy/broker.sh), the seeds of
# deploy/demo.sh. Two parts:
#
# 1. Stragglers, accuracy against wall-clock time. In every round each
#    device is slow with probability HETERO_SLOW (0.3; fedmq-sim --slow,
#    drawn per (device, round)): it trains, then holds its update back
#    HETERO_SLOW_MS (3000) ms — or until the next global arrives, when it
#    sends it first, late. Each aggregation runs HETERO_SECONDS (60) s of
#    wall clock (then SIGTERM):
#      fedavg, waits for all   the round closes when all 10 answered
#      fedavg, deadline        closes with >= HETERO_QUORUM (6) updates at
#                              HETERO_DEADLINE_MS (1000); late ones dropped
#      fedavg, deadline, fold  the same, late updates folded (FedBuff's
#                              1/sqrt(1+tau))
#      fedbuff                 the model moves every HETERO_BUFFER_K (5)
#                              updates, whichever version they trained on
#    Printed: rounds done, the test accuracy reached by 15/30/45/60 s (the
#    last round closed by then, time from the aggregator's first line;
#    each progress line is timestamped as it is read, as fleet_bench.sh
#    does) and the seconds to first reach HETERO_TIME_ACC (0.70).
#
# 2. Rounds to accuracy, no stragglers: fedavg, fedprox (mu HETERO_MU,
#    0.01, inside the FedProx paper's 0.001-1 range) and fedadam (its
#    defaults) for up to HETERO_ROUNDS (100) rounds, stopping at
#    HETERO_TARGET (0.80) test accuracy; printed: the round that reached
#    it, or "not reached in N rounds", the first round at HETERO_TIME_ACC
#    (0.70), and the best accuracy seen (labels:2 swings by several points
#    from round to round).
#
# A strategy that fedmq-aggregator does not know (yet) is printed as "not
# available".
#
#   test/bench/hetero_bench.sh [BUILD]
#
# Environment: the HETERO_* above, HETERO_MODEL (mlp:128), HETERO_PARTS
# ("1 2"). Logs stay in BUILD/bench/hetero/. About 8 minutes on 2 cores.
set -eu
BUILD=${1:-build}
MODEL=${HETERO_MODEL:-mlp:128}
SLOW=${HETERO_SLOW:-0.3}
SLOW_MS=${HETERO_SLOW_MS:-3000}
SECONDS_=${HETERO_SECONDS:-60}
QUORUM=${HETERO_QUORUM:-6}
DEADLINE_MS=${HETERO_DEADLINE_MS:-1000}
BUFFER_K=${HETERO_BUFFER_K:-5}
TIME_ACC=${HETERO_TIME_ACC:-0.70}
ROUNDS=${HETERO_ROUNDS:-100}
TARGET=${HETERO_TARGET:-0.80}
MU=${HETERO_MU:-0.01}
PARTS=${HETERO_PARTS:-"1 2"}
DEVICES=10
PART=labels:2
. "$(dirname "$0")/bench_lib.sh"
bench_init hetero
bench_broker

# run TAG SECONDS SIMFLAGS AGGFLAGS: one federated run, the aggregator's
# stdout timestamped in $out/TAG.agg. SECONDS > 0: stopped (SIGTERM) after
# that long. Returns 0; 3 when the aggregator refused its settings at
# start (a strategy it does not have), with the reason in $out/TAG.why.
run() {
  tag=$1 secs=$2 simflags=$3 aggflags=$4
  log=$out/$tag
  fl=hb$(printf '%s' "$tag" | cksum | cut -d' ' -f1)
  # shellcheck disable=SC2086
  "$SIM" --broker "$uri" --ca "$ca" --fleet "$fl" --agg-key "$tmp/agg.pub" \
    --devices $DEVICES --parties $DEVICES --partition $PART --seed 1 \
    --max-seconds 1200 $simflags </dev/null >"$log.sim" 2>"$log.sim.err" &
  sim_pid=$!
  # devices first (data loaded, connected), so round 1 starts with them
  i=0
  until grep -q 'devices connected' "$log.sim" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$sim_pid" 2>/dev/null; then
      echo "hetero_bench: fedmq-sim did not connect ($tag); see $log.sim.err" >&2
      tail -5 "$log.sim.err" >&2; exit 1
    fi
    sleep 0.1
  done
  # the aggregator's stdout through a FIFO to stamp(), so that agg_pid is
  # the aggregator itself
  rm -f "$tmp/agg.fifo"
  mkfifo "$tmp/agg.fifo"
  stamp <"$tmp/agg.fifo" >"$log.agg" &
  stamp_pid=$!
  # shellcheck disable=SC2086
  "$AGG" --broker "$uri" --ca "$ca" --fleet "$fl" --sign-key "$tmp/agg.pem" \
    --model "$MODEL" --seed 1 --scheme q8 --state-dir "$tmp/agg-$fl" \
    $aggflags </dev/null >"$tmp/agg.fifo" 2>"$log.agg.err" &
  agg_pid=$!
  # SECONDS > 0: stop it SECONDS after its first line (SIGTERM: it prints
  # its summary). The fleet never ends by itself: if it does, or a run
  # takes over 900 s, the bench stops.
  i=0
  until [ -s "$log.agg" ] || [ $i -gt 600 ] || ! kill -0 "$agg_pid" 2>/dev/null; do
    i=$((i + 1)); sleep 0.1
  done
  start=$(date +%s)
  t_end=$((start + secs))
  while kill -0 "$agg_pid" 2>/dev/null; do
    now=$(date +%s)
    if [ "$secs" -gt 0 ] && [ "$now" -ge $t_end ]; then
      kill -TERM "$agg_pid" 2>/dev/null || true
      break
    fi
    if ! kill -0 "$sim_pid" 2>/dev/null || [ $((now - start)) -gt 900 ]; then
      kill -TERM "$agg_pid" 2>/dev/null || true
      echo "hetero_bench: $tag: the fleet ended early or the run took over 900 s; see $log.sim.err" >&2
      tail -3 "$log.sim.err" >&2
      exit 1
    fi
    sleep 0.2
  done
  set +e
  wait "$agg_pid"
  agg_rc=$?
  set -e
  agg_pid=""
  wait "$stamp_pid" 2>/dev/null || true
  kill -TERM "$sim_pid" 2>/dev/null || true
  wait "$sim_pid" 2>/dev/null || true
  sim_pid=""
  if ! grep -q '^[0-9.]* round ' "$log.agg"; then
    if [ $agg_rc -ne 0 ]; then
      head -1 "$log.agg.err" >"$log.why"
      return 3
    fi
    echo "hetero_bench: the aggregator closed no round ($tag); see $log.agg.err" >&2
    tail -5 "$log.agg.err" >&2
    exit 1
  fi
  return 0
}

# ---------------------------------------------------------------- part 1
part1() {
  echo "== hetero_bench part 1: $DEVICES devices, Fashion-MNIST $PART, $MODEL, q8, TLS; each round a device is slow (${SLOW_MS} ms) with probability $SLOW; ${SECONDS_} s per run"
  slowflags="--slow $SLOW --slow-ms $SLOW_MS"
  : >"$out/part1.txt"
  while IFS='|' read -r label aggflags <&3; do
    tag=p1-$(printf '%s' "$label" | tr -c 'a-zA-Z0-9\n' '_')
    set +e
    run "$tag" "$SECONDS_" "$slowflags" "--rounds 100000 $aggflags"
    rc=$?
    set -e
    if [ $rc -eq 3 ]; then
      printf '%s|n/a|%s\n' "$label" "$(cat "$out/$tag.why")" >>"$out/part1.txt"
    else
      printf '%s|%s\n' "$label" "$out/$tag.agg" >>"$out/part1.txt"
    fi
    echo "  $label: done"
  done 3<<EOF
fedavg, waits for all|--cohort $DEVICES --quorum $DEVICES --round-ms 600000
fedavg, deadline ${DEADLINE_MS} ms, quorum $QUORUM|--cohort $DEVICES --quorum $QUORUM --round-ms $DEADLINE_MS
fedavg, deadline ${DEADLINE_MS} ms, quorum $QUORUM, late folded|--cohort $DEVICES --quorum $QUORUM --round-ms $DEADLINE_MS --late fold
fedbuff, buffer_k $BUFFER_K|--strategy fedbuff --buffer-k $BUFFER_K --cohort $DEVICES --round-ms 600000
EOF
  "$PY" - "$out/part1.txt" "$SECONDS_" "$TIME_ACC" <<'PYEOF'
import re, sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
secs, tacc = float(sys.argv[2]), float(sys.argv[3])
marks = [secs * f for f in (0.25, 0.5, 0.75, 1.0)]
print()
print("| run | rounds in %g s | %s | best | s to %.0f %% | late / dropped late |"
      % (secs, " | ".join("acc @ %g s" % m for m in marks), 100 * tacc))
print("|---|---|%s---|---|---|" % ("---|" * len(marks)))
for r in rows:
    if r[1] == "n/a":
        print("| %s | not available (%s) |%s | | |" % (r[0], r[2], " |" * len(marks)))
        continue
    t0, pts, late, folded = None, [], 0, 0
    for line in open(r[1]):
        m = re.match(r"([0-9.]+) (.*)", line)
        if not m:
            continue
        t, text = float(m.group(1)), m.group(2)
        if t0 is None:
            t0 = t
        m = re.match(r"round (\d+): .*?, (\d+) late \((\d+) folded\).*test acc ([0-9.]+)", text)
        if m:
            pts.append((t - t0, int(m.group(1)), float(m.group(4))))
            late += int(m.group(2))
            folded += int(m.group(3))
    def at(s):
        a = [p[2] for p in pts if p[0] <= s]
        return "%.2f %%" % (100 * a[-1]) if a else "-"
    reach = [p[0] for p in pts if p[2] >= tacc]
    within = [p for p in pts if p[0] <= secs + 1]
    print("| %s | %d | %s | %.2f %% | %s | %d / %d |"
          % (r[0], len(within), " | ".join(at(m) for m in marks),
             100 * max(p[2] for p in pts), "%.1f" % reach[0] if reach else "not reached",
             late, late - folded))
PYEOF
}

# ---------------------------------------------------------------- part 2
part2() {
  echo "== hetero_bench part 2: $DEVICES devices, Fashion-MNIST $PART, $MODEL, q8, TLS, no stragglers; rounds to ${TARGET} test accuracy (at most $ROUNDS)"
  : >"$out/part2.txt"
  prox="--strategy fedprox --mu $MU"
  while IFS='|' read -r label aggflags <&3; do
    tag=p2-$(printf '%s' "$label" | tr -c 'a-zA-Z0-9\n' '_')
    set +e
    run "$tag" 0 "" "--cohort $DEVICES --round-ms 600000 --rounds $ROUNDS --target-acc $TARGET $aggflags"
    rc=$?
    set -e
    if [ $rc -eq 3 ]; then
      printf '%s|n/a|%s\n' "$label" "$(cat "$out/$tag.why")" >>"$out/part2.txt"
    else
      printf '%s|%s\n' "$label" "$out/$tag.agg" >>"$out/part2.txt"
    fi
    echo "  $label: done"
  done 3<<EOF
fedavg|
fedprox, mu $MU ($prox)|$prox
fedadam|--strategy fedadam
EOF
  "$PY" - "$out/part2.txt" "$ROUNDS" "$TARGET" "$TIME_ACC" <<'PYEOF'
import re, sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
R, target, lower = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print()
print("| run | rounds to %.0f %% | rounds to %.0f %% | best (round) | last | seconds |"
      % (100 * target, 100 * lower))
print("|---|---|---|---|---|---|")
for r in rows:
    if r[1] == "n/a":
        print("| %s | not available (%s) | | | | |" % (r[0], r[2]))
        continue
    pts, t0, t1 = [], None, None
    for line in open(r[1]):
        m = re.match(r"([0-9.]+) (.*)", line)
        if not m:
            continue
        t, text = float(m.group(1)), m.group(2)
        t0 = t if t0 is None else t0
        m = re.match(r"round (\d+): .*test acc ([0-9.]+)", text)
        if m:
            pts.append((int(m.group(1)), float(m.group(2))))
            t1 = t
    hit = [k for k, a in pts if a >= target]
    low = [k for k, a in pts if a >= lower]
    best = max(pts, key=lambda p: p[1])
    print("| %s | %s | %s | %.2f %% (%d) | %.2f %% | %.1f |"
          % (r[0], str(hit[0]) if hit else "not reached in %d rounds" % len(pts),
             str(low[0]) if low else "not reached", 100 * best[1], best[0],
             100 * pts[-1][1], t1 - t0))
PYEOF
}

for p in $PARTS; do
  case $p in
    1) part1 ;;
    2) part2 ;;
    *) echo "hetero_bench: HETERO_PARTS takes 1 and 2" >&2; exit 2 ;;
  esac
done
