#!/usr/bin/env bash
# Trains the bundled models on one GPU, side by side (small models leave most of a big GPU
# idle; the CPU cores are split between their data workers): the pose recipe, the same recipe
# without two-stream convolutions (--plain: the iLAT* ablation, trained equally) and the
# natural recipe; then the GPU speed benchmarks (`bench speed`, three presets), alone on the GPU.
#   bash scripts/gpu_recipe.sh MINUTES RUN_DIR
# Runs from a source checkout (PYTHONPATH=src): needs torch, numpy, scipy, scikit-image,
# safetensors and Pillow, not napari. Writes RUN_DIR/{pose,pose-plain,natural}/ (runs, model,
# eval.json, recipe.json), RUN_DIR/*.log and RUN_DIR/speed_*.md. With $OUT set (the device
# machine's return folder), the exported weights and a tarball of the records are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
MIN=${1:?minutes}; RUN=${2:?run dir}
export PYTHONPATH=src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$RUN"
recipe() {  # name, workers, extra args...
    local name=$1 workers=$2; shift 2
    python3 -m napari_ilat.cli train recipe --minutes "$MIN" --out "$RUN/$name" --workers "$workers" \
        --n-eval 64 --stage1-share 0.6 --overwrite "$@" >"$RUN/$name.log" 2>&1
}
recipe pose 6 --data pose &
p1=$!
recipe pose-plain 5 --data pose --plain &
p2=$!
recipe natural 3 --data natural &
p3=$!
wait $p1; r1=$?; wait $p2; r2=$?; wait $p3; r3=$?
echo "recipes: pose $r1, pose-plain $r2, natural $r3"
collect() {
    [ -n "${OUT:-}" ] || return 0
    for n in pose pose-plain natural; do
        cp "$RUN/$n"/"$n".stage{1,2}.safetensors "$OUT/" 2>/dev/null
    done
    tar czf "$OUT/records.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.npz' "$RUN" 2>/dev/null
}
collect
for preset in default paper ilat-ffhq; do
    timeout 120 python3 -m napari_ilat.cli bench speed --preset "$preset" --device cuda --rates 0.066,0.32 \
        --repeats 10 --out "$RUN/speed_$preset.md" >"$RUN/speed_$preset.log" 2>&1
    echo "bench speed $preset: $?"
done
collect
tail -n 2 "$RUN"/*.log
exit $((r1 || r2 || r3))
