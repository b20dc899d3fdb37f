#!/bin/sh
# The NIID-Bench FedAvg table on Fashion-MNIST with fedmq's engine, in
# process: 10 parties, full participation, the simple CNN, batch 64,
# lr 0.01, momentum 0.9. Prints the last round's test accuracy per
# partition, beside Flower's reproduction of the table (FedAvg after 50
# rounds: IID 89.0, Dirichlet 0.5 88.4, #C=2 81.0, #C=3 83.2).
#
#   test/bench/niid_table.sh [BUILD] [ROUNDS] [LOCAL_EPOCHS]
#
# Defaults are the full table: 50 rounds of 10 local epochs (about half an
# hour per partition on one core with OpenBLAS). `make bench` runs the short
# version: 10 rounds, 1 local epoch.
set -eu
BUILD=${1:-build}
ROUNDS=${2:-50}
EPOCHS=${3:-10}
TRAIN=$BUILD/bin/fedmq-train
[ -x "$TRAIN" ] || { echo "niid_table: build $TRAIN first (make)" >&2; exit 1; }
mkdir -p "$BUILD/bench"
printf '%-14s %8s %10s\n' partition rounds test_acc
for p in iid dirichlet:0.5 labels:2 labels:3; do
  log=$BUILD/bench/niid-$(echo "$p" | tr ':.' '__')-r$ROUNDS-e$EPOCHS.log
  "$TRAIN" fedavg --model cnn --parties 10 --partition "$p" --rounds "$ROUNDS" \
      --local-epochs "$EPOCHS" --batch 64 --lr 0.01 --momentum 0.9 --seed 1 >"$log"
  acc=$(grep "^round=" "$log" | tail -1 | sed -n "s/.*test_acc=\([0-9.]*\).*/\1/p")
  printf '%-14s %8s %10s\n' "$p" "$ROUNDS" "$acc"
done
