#!/usr/bin/env bash
# Trains the bundled models on one GPU: the pose and the natural recipe side by side (small
# models leave most of a big GPU idle; the CPU cores are split between their data workers).
#   bash scripts/gpu_recipe.sh MINUTES RUN_DIR [POSE_WORKERS NATURAL_WORKERS]
# Runs from a source checkout (PYTHONPATH=src): needs torch, numpy, scipy, scikit-image,
# safetensors and Pillow, not napari. Writes RUN_DIR/{pose,natural}/ (runs, model, eval.json)
# and RUN_DIR/{pose,natural}.log.
set -uo pipefail
cd "$(dirname "$0")/.."
MIN=${1:?minutes}; RUN=${2:?run dir}; WP=${3:-9}; WN=${4:-5}
export PYTHONPATH=src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
mkdir -p "$RUN"
python3 -m napari_ilat.cli train recipe --data pose --minutes "$MIN" --out "$RUN/pose" --workers "$WP" \
    --overwrite >"$RUN/pose.log" 2>&1 &
pid=$!
python3 -m napari_ilat.cli train recipe --data natural --minutes "$MIN" --out "$RUN/natural" --workers "$WN" \
    --overwrite >"$RUN/natural.log" 2>&1
rn=$?
wait $pid
rp=$?
tail -n 3 "$RUN/pose.log" "$RUN/natural.log"
exit $((rp || rn))
