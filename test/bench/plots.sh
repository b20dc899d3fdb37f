#!/bin/sh
# Plots for humans (issue 7): accuracy against round and against bytes
# received by the aggregator, one line per run, for every benchmark that
# left aggregator logs (BUILD/bench/<bench>/*.agg: the progress lines
# "round N: ..., test acc A, K KB in, S s", optionally prefixed with a
# timestamp, as fleet_bench.sh's stamp writes them).
#
#   test/bench/plots.sh [BUILD]
#
# Writes BUILD/bench/plots/<bench>-accuracy-round.png and
# <bench>-accuracy-bytes.png (gnuplot, pngcairo; deploy/install-deps.sh
# bench) and the data behind them, <bench>.dat. A bench without logs, or
# whose runs have no test accuracy (trivial training), is skipped.
set -eu
BUILD=${1:-build}
PY=/usr/bin/python3
out=$BUILD/bench/plots
mkdir -p "$out"
command -v gnuplot >/dev/null 2>&1 || { echo "plots: gnuplot is missing (deploy/install-deps.sh bench)" >&2; exit 1; }
made=0
for dir in "$BUILD"/bench/*/; do
  bench=$(basename "$dir")
  [ "$bench" = plots ] && continue
  ls "$dir"*.agg >/dev/null 2>&1 || continue
  # one gnuplot data block per run: round, accuracy, cumulative MB in
  runs=$("$PY" - "$dir" "$out/$bench.dat" <<'PYEOF'
import glob, os, re, sys
d, dat = sys.argv[1], sys.argv[2]
pat = re.compile(r"round (\d+): .*test acc ([0-9.]+|nan), ([0-9.]+) KB in, ([0-9.]+) s(, .*)?$")
blocks = []
for f in sorted(glob.glob(os.path.join(d, "*.agg"))):
    rows, mb = [], 0.0
    for line in open(f, errors="replace"):
        m = pat.search(line.rstrip("\n"))
        if not m or m.group(2) == "nan":
            continue
        mb += float(m.group(3)) / 1000.0
        rows.append("%s %s %.4f" % (m.group(1), m.group(2), mb))
    if rows:
        blocks.append((os.path.basename(f)[:-4], rows))
if not blocks:
    sys.exit(0)
with open(dat, "w") as o:
    for name, rows in blocks:
        o.write("# %s\n%s\n\n\n" % (name, "\n".join(rows)))
print(" ".join(name for name, _ in blocks))
PYEOF
)
  [ -n "$runs" ] || continue
  for what in round bytes; do
    if [ $what = round ]; then col=1; xl="round"; else col=3; xl="MB received by the aggregator (all devices, cumulative)"; fi
    {
      echo "set terminal pngcairo size 900,560 font 'sans,10'"
      echo "set output '$out/$bench-accuracy-$what.png'"
      echo "set title 'fedmq $bench benchmark: test accuracy against $what'"
      echo "set xlabel '$xl'; set ylabel 'Fashion-MNIST test accuracy'"
      echo "set yrange [0:1]; set grid; set key outside right top"
      printf 'plot'
      i=0; sep=" "
      for r in $runs; do
        printf "%s'%s' index %d using %d:2 with linespoints pt 7 ps 0.4 title '%s'" "$sep" "$out/$bench.dat" $i $col "$r"
        i=$((i + 1)); sep=", "
      done
      echo
    } >"$out/$bench-$what.gp"
    gnuplot "$out/$bench-$what.gp" || { echo "plots: gnuplot failed on $out/$bench-$what.gp" >&2; exit 1; }
    made=$((made + 1))
  done
  echo "plots: $bench: $(echo "$runs" | wc -w) runs -> $out/$bench-accuracy-round.png, $out/$bench-accuracy-bytes.png"
done
[ $made -gt 0 ] || echo "plots: no benchmark logs with test accuracy under $BUILD/bench (run make bench)"
