#!/bin/bash
# Cells of `indis bench scaling` on one GPU, one process per (K, condition) side by side (the exact mixtures' kernels
# are small: parallel processes use the GPU better than one), each stopped after LIMIT seconds; every finished cell's
# result.json is packed into $OUT/cells.tgz (commit them to benchmarks/results/scaling/cells/; a cell's result does not
# depend on the device beyond round-off, tests/test_cuda.py). Usage (repository root, indis importable):
#   OUT=DIR LIMIT=480 DIMS="1024" NFES="3" SEEDS=single benchmarks/gpu/scaling.sh [DEVICE]
# (indis from the source tree, POT carried as a wheel: see zoo_diagnose.sh)
set -u
DEV=${1:-cuda}
OUT=${OUT:-runs/scaling-gpu}
W=${WORK:-/tmp/scaling-gpu}
LIMIT=${LIMIT:-480}
mkdir -p "$OUT" "$W"
seeds=(); [ "${SEEDS:-single}" = single ] && seeds=(--single-seed)
for K in ${KS:-2 10 100}; do
  for C in ${CONDITIONS:-none class class-g4 embedding embedding-g4}; do
    timeout "$LIMIT" python3 -m indis bench scaling --dims ${DIMS:-1024} --components "$K" --conditions "$C" \
        --nfe ${NFES:-3} --no-digits "${seeds[@]}" --device "$DEV" --out "$W/K$K-$C" --no-progress \
        > "$OUT/K$K-$C.log" 2>&1 &
  done
done
wait
(cd "$W" && find . -name result.json -path '*/cells/*' | tar czf "$OUT/cells.tgz" -T -)
tar tzf "$OUT/cells.tgz" | wc -l
