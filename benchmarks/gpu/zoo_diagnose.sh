#!/bin/bash
# The diagnostic's check on the shipped digits models (issue 29): `indis eval --diagnose` on each model / guidance / NFE
# of the digits tables, with the sampler the bench's INDIS row chose there (seed 0) and the bench's training-set size
# (10,000), on a teacher set of 4,000 pairs from a seed none of the bench's splits uses. All five run side by side on
# one GPU (small U-Net: the kernels are launch-bound, so parallel processes use the GPU better than one).
# On CPU (2026-12-04: 9-32 min each on one thread): ONLY=NAME ... zoo_diagnose.sh cpu, one name at a time, with the
# virtual environment's python3 first on PATH and OMP_NUM_THREADS=1.
# Compare each predicted_ratio with the trained INDIS/GOD teacher-MSE ratio of benchmarks/README.md (tables E, C3, C5,
# D3, reruns). Usage (repository root, indis importable): OUT=DIR LIMIT=540 benchmarks/gpu/zoo_diagnose.sh [DEVICE]
# On the lent H200 (2026-12-04) indis ran from the source tree with POT carried as a wheel: in the device command,
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
# (.whl/ holds `pip download pot==<version> --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64`).
set -u
DEV=${1:-cuda}
OUT=${OUT:-runs/zoo-diagnose}
mkdir -p "$OUT"
W=${WORK:-/tmp/zoo-diagnose}
NUM=${NUM:-4000}  # teacher pairs; EXTRA: more `indis eval --diagnose` flags; ONLY: run just this name (smoke tests)
run() {  # name model guidance nfe solver afs
    local name=$1 model=$2 g=$3 nfe=$4 solver=$5 afs=$6 gflag=() aflag=()
    [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ] && return 0
    [ "$g" != "-" ] && gflag=(--guidance "$g")
    [ "$afs" = "afs" ] && aflag=(--afs)
    local t0=$(date +%s)
    python3 -m indis teacher --model "$model" "${gflag[@]}" --out "$W/$name-teacher" --num "$NUM" --seed 4242 \
        --device "$DEV" --batch-size 1000 --no-progress > "$OUT/$name.log" 2>&1 &&
    timeout "${LIMIT:-540}" python3 -m indis eval --diagnose --model "$model" "${gflag[@]}" --teacher "$W/$name-teacher" --nfe "$nfe" \
        --solver "$solver" "${aflag[@]}" --train-size 10000 --device "$DEV" --no-progress --json ${EXTRA:-} \
        > "$OUT/$name.json" 2>> "$OUT/$name.log"
    echo "$name rc $? $(( $(date +%s) - t0 )) s" | tee -a "$OUT/$name.log"
}
run digits-nfe3 zoo:digits - 3 unipc afs &
run digits-nfe5 zoo:digits - 5 unipc afs &
run cond-g1-nfe3 zoo:digits-cond - 3 unipc afs &
run cond-g4-nfe3 zoo:digits-cond 4 3 dpmpp_3m no &
run cond-g4-nfe5 zoo:digits-cond 4 5 dpmpp_3m afs &
wait
