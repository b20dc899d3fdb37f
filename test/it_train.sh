#!/bin/sh
# fedmq-train end to end on the real Fashion-MNIST: central training and
# in-process FedAvg learn (accuracy well above chance), the same seed gives
# bit-identical weights, and bad arguments are refused with a message.
set -eu
B=${FMQ_BUILD:-build}
T=$B/bin/fedmq-train
W=$B/tmp/it_train
mkdir -p "$W"
fail() { echo "it_train: FAIL: $*"; exit 1; }

acc() { sed -n 's/.*test_acc=\([0-9.]*\).*/\1/p' "$1" | tail -1; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

"$T" central --model logreg --epochs 1 --seed 3 --save "$W/c.f32" >"$W/c.log"
a=$(acc "$W/c.log"); above "$a" 0.75 || fail "central logreg accuracy $a <= 0.75"
[ "$(stat -c %s "$W/c.f32")" -eq $((7850 * 4)) ] || fail "saved weights have the wrong size"

# label skew learns slower; chance is 0.1
for pt in iid:0.6 dirichlet:0.5:0.5 labels:2:0.3; do
  p=${pt%:*}; min=${pt##*:}
  "$T" fedavg --model logreg --parties 5 --partition "$p" --rounds 2 --seed 4 \
      --save "$W/f1.f32" >"$W/f1.log"
  a=$(acc "$W/f1.log"); above "$a" "$min" || fail "fedavg $p accuracy $a <= $min"
  [ "$(grep -c '^round=' "$W/f1.log")" -eq 2 ] || fail "fedavg $p: not one line per round"
done
# reproducible: same seed, same weights, bit for bit
"$T" fedavg --model logreg --parties 5 --partition labels:2 --rounds 2 --seed 4 \
    --save "$W/f2.f32" >"$W/f2.log"
cmp -s "$W/f1.f32" "$W/f2.f32" || fail "same seed gave different weights"
"$T" fedavg --model logreg --parties 5 --partition labels:2 --rounds 2 --seed 5 \
    --save "$W/f3.f32" >"$W/f3.log"
cmp -s "$W/f1.f32" "$W/f3.f32" && fail "different seeds gave identical weights"

# refusals
if "$T" fedavg --partition dirichlet:x >"$W/bad.log" 2>&1; then fail "bad partition accepted"; fi
grep -q "partition" "$W/bad.log" || fail "bad partition: no message"
if "$T" central --model rnn >"$W/bad.log" 2>&1; then fail "bad model accepted"; fi
grep -q "rnn" "$W/bad.log" || fail "bad model: message does not name it"
if "$T" central --epochs 0 >"$W/bad.log" 2>&1; then fail "--epochs 0 accepted"; fi
echo "it_train: ok (central logreg $(acc "$W/c.log"), fedavg labels:2 $(acc "$W/f1.log"))"
