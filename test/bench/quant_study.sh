#!/bin/sh
# Quantization study (issue 8, item 4): what each compression costs in
# accuracy and what it saves on the wire. A fleet of 10 simulated devices
# (fedmq-sim, the built-in engine) on Fashion-MNIST split dirichlet:0.5
# with the seeds of deploy/demo.sh, models cnn and mlp:128, over a private
# Mosquitto with TLS, trust on (globals and deltas signed, updates
# sealed), a fixed number of rounds (QUANT_ROUNDS, default 20: the whole
# study takes about 12 minutes on 2 cores), for each of
#
#   f32          f32 updates, full f32 models down (the baseline)
#   q8up         q8 updates, full f32 models down
#   q8both       q8 updates, q8 deltas down (SPEC §6.6)
#   q4ef         q4 updates with error feedback, full models down
#   q4noef       q4 updates without error feedback, full models down
#   q4sr         q4 updates, stochastic rounding, error feedback
#   q4both       q4 updates with error feedback, q4 deltas down
#   q1ef         q1 updates (nearest: sign and mean magnitude) with error
#                feedback, full models down
#   q1q4         q1 updates with error feedback, q4 deltas down
#
# (q4ef and q4sr differ only in the rounding: nearest against stochastic.)
# Each run reports the aggregator's last test accuracy (10,000 test
# images) and the bytes per device per round counted at the MQTT layer
# (fedmq-sim's bytes up and down: payloads and topics, every message a
# device sent or received, status reports included): up, down in steady
# state (a delta, or a full model, per round), and in all (the first full
# model spread over the rounds). Flower's figures for the same model
# (issue 8): 407.7 KB each way per round, 815.4 KB in all.
#
#   test/bench/quant_study.sh [BUILD]
#
# Environment: QUANT_ROUNDS (20), QUANT_MODELS ("cnn mlp:128"), QUANT_RUNS
# (labels to run, default all), QUANT_REPORT_ONLY=1 (no runs: the tables
# and the plot again from BUILD/bench/quant/). Logs stay in
# BUILD/bench/quant/: the
# aggregator's <model>-<run>.agg (test/bench/plots.sh draws accuracy
# against round and bytes in), <model>-<run>.sim, results.txt, and
# quant-updown.dat with accuracy against cumulative up + down bytes per
# device (drawn into BUILD/bench/plots/quant-accuracy-updown.png when
# gnuplot is there).
set -eu
BUILD=${1:-build}
ROUNDS=${QUANT_ROUNDS:-20}
MODELS=${QUANT_MODELS:-"cnn mlp:128"}
ONLY=${QUANT_RUNS:-}
DEVICES=10
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
here=$(cd "$(dirname "$0")/../.." && pwd)
AGG=$BUILD/bin/fedmq-aggregator
SIM=$BUILD/bin/fedmq-sim
for b in "$AGG" "$SIM"; do
  [ -x "$b" ] || { echo "quant_study: build $b first (make all)" >&2; exit 1; }
done
out=$BUILD/bench/quant
REPORT_ONLY=${QUANT_REPORT_ONLY:-0}
if [ "$REPORT_ONLY" != 1 ]; then
  rm -rf "$out"
  mkdir -p "$out"
fi
[ -f "$out/results.txt" ] || [ "$REPORT_ONLY" != 1 ] ||
  { echo "quant_study: no $out/results.txt to report on" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-quant.XXXXXX")
sim_pid=""
cleanup() {
  [ -n "$sim_pid" ] && { kill -TERM "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; }
  sh "$here/deploy/broker.sh" stop "$tmp/broker" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/agg.pem" 2>/dev/null &&
  openssl ec -in "$tmp/agg.pem" -pubout -out "$tmp/agg.pub" 2>/dev/null ||
  { echo "quant_study: openssl could not make the aggregator's key" >&2; exit 1; }
if [ "$REPORT_ONLY" != 1 ]; then
  sh "$here/deploy/broker.sh" start "$tmp/broker" --tls --watch $$ >/dev/null
  uri=mqtts://127.0.0.1:$(cat "$tmp/broker/port")
  ca=$tmp/broker/certs/ca.crt
fi

# label|aggregator flags
RUNS='f32|--scheme f32 --global-delta off
q8up|--scheme q8 --global-delta off
q8both|--scheme q8 --global-delta q8
q4ef|--scheme q4 --global-delta off
q4noef|--scheme q4 --no-error-feedback --global-delta off
q4sr|--scheme q4 --stochastic --global-delta off
q4both|--scheme q4 --global-delta q4
q1ef|--scheme q1 --global-delta off
q1q4|--scheme q1 --global-delta q4'

res=$out/results.txt
[ "$REPORT_ONLY" = 1 ] || : >"$res"
# run MODEL LABEL FLAGS: appends "model label acc rounds up_total
# down_total trained devices seconds" to $res
run() {
  model=$1 label=$2 flags=$3
  mtag=$(printf '%s' "$model" | tr -c 'a-zA-Z0-9\n' '_' | sed 's/_*$//')
  log=$out/$mtag-$label
  fl=qs-$mtag-$label
  t0=$(date +%s.%N)
  "$SIM" --broker "$uri" --ca "$ca" --fleet "$fl" --agg-key "$tmp/agg.pub" \
    --devices $DEVICES --parties $DEVICES --partition dirichlet:0.5 --seed 1 \
    --max-seconds 1800 </dev/null >"$log.sim" 2>"$log.sim.err" &
  sim_pid=$!
  # shellcheck disable=SC2086
  "$AGG" --broker "$uri" --ca "$ca" --fleet "$fl" --sign-key "$tmp/agg.pem" \
    --model "$model" --seed 1 --cohort $DEVICES --round-ms 120000 \
    --rounds "$ROUNDS" --state-dir "$tmp/agg-$fl" $flags \
    </dev/null >"$log.agg" 2>"$log.agg.err" ||
    { echo "quant_study: the aggregator failed ($model $label); see $log.agg.err" >&2
      tail -5 "$log.agg.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  sleep 1 # the last version reaches the devices
  kill -TERM "$sim_pid" 2>/dev/null || true
  wait "$sim_pid" 2>/dev/null || true
  sim_pid=""
  "$PY" - "$log" "$model" "$label" "$t0" "$t1" >>"$res" <<'EOF'
import re, sys
log, model, label, t0, t1 = sys.argv[1:6]
a = open(log + ".agg").read()
s = open(log + ".sim").read()
acc = re.search(r"summary: (\d+) rounds, test accuracy ([\d.]+)", a)
m = re.search(r"(\d+) devices, (\d+) updates trained, (\d+) globals refused.*"
              r"bytes up (\d+), down (\d+)", s)
if not acc or not m:
    sys.exit("quant_study: no summary in %s.agg or .sim" % log)
print(model, label, acc.group(2), acc.group(1), m.group(4), m.group(5),
      m.group(2), m.group(1), "%.1f" % (float(t1) - float(t0)))
EOF
  tail -1 "$res" | awk '{printf "  %-8s %-7s acc %s after %s rounds, %.1f s\n", $1, $2, $3, $4, $9}'
}

keep() {
  [ -z "$ONLY" ] && return 0
  for o in $ONLY; do [ "$o" = "$1" ] && return 0; done
  return 1
}

echo "== quant_study: $DEVICES devices, Fashion-MNIST dirichlet:0.5, models $MODELS, TLS, $ROUNDS rounds"
[ "$REPORT_ONLY" = 1 ] && MODELS=""
for model in $MODELS; do
  while IFS='|' read -r label flags <&3; do
    keep "$label" || continue
    run "$model" "$label" "$flags"
  done 3<<EOF
$RUNS
EOF
done

"$PY" - "$res" "$out" <<'EOF'
import os, re, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
out = sys.argv[2]
FLOWER_WAY, FLOWER = 407.7, 815.4  # KB per round (issue 8)
by = {}
for model, label, acc, rounds, up, down, trained, devs, sec in rows:
    by[(model, label)] = dict(acc=float(acc), rounds=int(rounds), up=int(up),
                              down=int(down), n=int(trained) / int(devs),
                              devs=int(devs), sec=float(sec))
# A device received rounds + 1 model messages (versions 1 .. rounds + 1:
# the sim stops after the last one arrived): the first is the retained
# full model, the rest deltas when deltas are on; it sent one update per
# round it trained (n; the last version's may still have been in
# training when the sim stopped). Up per round is per update sent, down
# per model message; with deltas "steady" leaves out the first, full
# model, whose size is what a device of a run without deltas got per
# message.
def deltas_on(label):
    return label.endswith("both") or label == "q1q4"
def per_round(model, label):
    r = by[(model, label)]
    msgs = r["rounds"] + 1
    up = r["up"] / r["devs"] / r["n"]
    down_all = r["down"] / r["devs"] / msgs
    ref = [by[k] for k in by if k[0] == model and not deltas_on(k[1])]
    full = min(x["down"] / x["devs"] / (x["rounds"] + 1) for x in ref) if ref else down_all
    steady = down_all
    if deltas_on(label):
        steady = (r["down"] / r["devs"] - full) / (msgs - 1)
    return up / 1000, steady / 1000, (up + down_all) / 1000, full / 1000
print()
for model in dict.fromkeys(k[0] for k in by):
    base = by.get((model, "f32"))
    print("%s, %d rounds (accuracy: the aggregator's last test accuracy; KB per device per round at the MQTT layer)" %
          (model, next(by[k]["rounds"] for k in by if k[0] == model)))
    print()
    # the yardstick: Flower's 815.4 KB for mlp:128 (issue 8); for another
    # model, this study's f32-both-ways run (Flower's protobuf framing
    # would be a little larger)
    ref = FLOWER if model == "mlp:128" else (sum(per_round(model, "f32")[:2]) if base else float("nan"))
    rname = "Flower 815.4 KB" if model == "mlp:128" else "f32 both ways %.1f KB" % ref
    print("| run | test acc | vs f32 | up KB | down KB (steady) | up + down KB | vs %s | in all, first model spread |" % rname)
    print("|---|---|---|---|---|---|---|---|")
    for (m, label), r in by.items():
        if m != model:
            continue
        up, steady, allin, full = per_round(m, label)
        d = (r["acc"] - base["acc"]) * 100 if base else float("nan")
        print("| %s | %.2f %% | %+.2f | %.1f | %.1f | %.1f | 1/%.2f | %.1f KB (1/%.2f) |" %
              (label, 100 * r["acc"], d, up, steady, up + steady,
               ref / (up + steady), allin, ref / allin))
    print()
    def target(what, ok):
        print("target %-78s %s" % (what, "met" if ok else "MISSED"))
    for label, frac, pts in (("q8both", 4, 0.5), ("q4both", 7, 1.0)):
        if (model, label) in by and base:
            up, steady, allin, _ = per_round(model, label)
            d = (by[(model, label)]["acc"] - base["acc"]) * 100
            target("%s %s: up+down %.1f KB <= 1/%d of %s (%.1f KB)" %
                   (model, label, up + steady, frac, rname.split(" ")[0] if model == "mlp:128" else "f32",
                    ref / frac), up + steady <= ref / frac)
            target("%s %s: accuracy %+.2f points of f32 (within %.1f)" % (model, label, d, pts),
                   d >= -pts)
    if (model, "q1ef") in by and base:
        d = (by[(model, "q1ef")]["acc"] - base["acc"]) * 100
        up, steady, _, _ = per_round(model, "q1ef")
        print("q1ef (reported, no target): %+.2f points of f32, %.1f KB up per round (1/%.1f of f32 up)"
              % (d, up, per_round(model, "f32")[0] / up))
    print()
# accuracy against cumulative up + down bytes per device (spread evenly)
with open(os.path.join(out, "quant-updown.dat"), "w") as o:
    for (model, label), r in by.items():
        tag = re.sub(r"[^a-zA-Z0-9]+", "_", model).strip("_")
        f = os.path.join(out, "%s-%s.agg" % (tag, label))
        accs = [float(x) for x in re.findall(r"^round \d+: .*test acc ([0-9.]+)", open(f).read(), re.M)]
        up, _, allin, _ = per_round(model, label)
        per = allin / 1000
        o.write("# %s-%s\n" % (tag, label))
        for i, a in enumerate(accs):
            o.write("%d %.4f %.4f\n" % (i + 1, a, per * (i + 1)))
        o.write("\n\n")
EOF
if command -v gnuplot >/dev/null 2>&1; then
  mkdir -p "$BUILD/bench/plots"
  runs=$(grep '^# ' "$out/quant-updown.dat" | cut -c3-)
  {
    echo "set terminal pngcairo size 1000,600 font 'sans,10' noenhanced"
    echo "set output '$BUILD/bench/plots/quant-accuracy-updown.png'"
    echo "set title 'fedmq quantization study: test accuracy against MB per device (up + down, cumulative)'"
    echo "set xlabel 'MB per device, up + down (MQTT layer, cumulative)'; set ylabel 'Fashion-MNIST test accuracy'"
    echo "set logscale x; set xrange [0.05:*]; set yrange [0.3:0.85]; set grid; set key outside right top"
    printf 'plot'
    i=0; sep=" "
    for r in $runs; do
      printf "%s'%s' index %d using 3:2 with linespoints pt 7 ps 0.4 title '%s'" "$sep" "$out/quant-updown.dat" $i "$r"
      i=$((i + 1)); sep=", "
    done
    echo
  } >"$out/quant-updown.gp"
  gnuplot "$out/quant-updown.gp" && echo "quant_study: $BUILD/bench/plots/quant-accuracy-updown.png"
fi
