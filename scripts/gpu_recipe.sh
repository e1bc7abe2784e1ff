#!/usr/bin/env bash
# Trains the bundled models on one GPU, side by side (small models leave most of a big GPU
# idle; the CPU cores are split between their data workers), then the GPU benchmarks, alone
# on the GPU.
#   bash scripts/gpu_recipe.sh MINUTES RUN_DIR            from scratch: pose, pose --plain (the
#                                                         iLAT* ablation, trained equally) and
#                                                         natural; then `bench speed`, 3 presets
#   bash scripts/gpu_recipe.sh MINUTES RUN_DIR continue   warm start: pose and natural go on from
#                                                         the bundled models (`--init`, a new data
#                                                         seed); then `bench regenerate` (whole
#                                                         edit, iLAT vs Taming) at 2 presets
#   MODELS=pose WORKERS_POSE=14 STAGE1_SHARE=0.3 BENCH= bash scripts/gpu_recipe.sh 9 RUN_DIR continue
#                                                         one model alone, most cores making its
#                                                         data, 30% of the time for stage 1 (the
#                                                         recipe's share; default 0.6), no benchmarks
#   MODELS=pose WORKERS_POSE=14 STAGE1_SHARE=0 BENCH= bash scripts/gpu_recipe.sh 9 RUN_DIR continue
#                                                         the transformer alone on the bundled first
#                                                         stage, kept bit for bit (where the error
#                                                         is: docs/benchmarks.md); CPU-tested; used
#                                                         for the bundled pose (run 4, 8 minutes)
#   NATIVE=1 ... continue                                 then `bench native` (issue 16's 1024 px image with
#                                                         a 512 px mask, native resolution) on the GPU
#   VAL_EDITS=64 ... continue                              validation edits (in-mask PSNR) every 1000 steps of
#                                                         a continuation; its export is the best step's
#                                                         transformer (VAL_EDITS=0: the last step's)
#   SEED=5 IMAGEBART_MIN=5 MODELS=pose STAGE1_SHARE=0 ... continue
#                                                         the bundled natural-imagebart goes on beside
#                                                         the pose transformer (`train imagebart --init`)
#   MODELS= IMAGEBART_STAGES=5 IMAGEBART_MIN=7 ... continue a new ImageBART of 5 stages from scratch on
#                                                         the bundled natural first stage (issue 15's longer
#                                                         schedule); $OUT takes 8 files: with the pose run
#                                                         beside it, at most 4 stages unless MODELS= (none)
#   POOL=120000 ... continue                              the transformer cycles over the first 120,000
#                                                         training items, each made once by the data
#                                                         workers as first drawn: after the first pass
#                                                         the GPU no longer waits for the scene generator
#   COND_DROPOUT=0.5 ... continue                         half the transformer's steps without the pose /
#                                                         sketch: the branch a natural edit without a
#                                                         sketch runs (the recipe's default 0.2)
#   THIN_STROKES=0.5 MODELS=natural ... continue           half the natural transformer's training sketches
#                                                         drawn as thin lines inside the mask, as a user
#                                                         draws (`--thin-strokes`), not the dense XDoG map
#   DECODER_MIN=7 MODELS=pose STAGE1_SHARE=0 ... continue
#                                                         the bundled pose first stage's decoder trains
#                                                         alone beside the transformer (`train vqgan
#                                                         --decoder-only`: encoder and codebook frozen, so
#                                                         the codes and the transformer stay valid), then
#                                                         RUN_DIR/pose-decoder/pose-decoder.json is the continued
#                                                         transformer with that decoder (`train export
#                                                         --first-stage`); WORKERS_DECODER data workers
#                                                         (default 2), batch 32, each batch used 3 times
#   SEED=3 ...                                            data seed of a continuation (default 1): give
#                                                         each continuation a new one, or its batches
#                                                         repeat an earlier run's order
#   SEED=3 IMAGEBART_MIN=6.5 bash scripts/gpu_recipe.sh 7.5 RUN_DIR ablation
#                                                         the iLAT* ablation, equally trained: the bundled
#                                                         pose model's transformer goes on twice, side by
#                                                         side, from the same weights, seed and data, on
#                                                         the same first stage, once on its two-stream
#                                                         tokens (pose) and once on plain ones (pose-plain,
#                                                         `--plain`); IMAGEBART_MIN > 0 trains ImageBART
#                                                         (the recipe's sizes) on the bundled natural
#                                                         first stage beside them, from scratch
# Runs from a source checkout (PYTHONPATH=src): needs torch, numpy, scipy, scikit-image,
# safetensors and Pillow, not napari. Writes RUN_DIR/NAME/ (runs, model, eval.json,
# recipe.json), RUN_DIR/*.log and RUN_DIR/*.md. With $OUT set (the device machine's return
# folder), the exported models and a tarball of the records are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
MIN=${1:?minutes}; RUN=${2:?run dir}; MODE=${3:-scratch}
export PYTHONPATH=src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$RUN"
limit() {  # minutes of budget, seconds of slack -> a `timeout` limit in seconds
    # a safety net for a lease's hard end: past its budget + 15% + the slack a run gets
    # SIGTERM and stops training; a recipe still exports and evaluates what it learnt, a
    # `train imagebart` run keeps a resumable checkpoint
    awk -v m="$1" -v s="$2" 'BEGIN { printf "%d", m * 60 * 1.15 + s }'
}
recipe() {  # name, workers, extra args...
    local name=$1 workers=$2; shift 2
    timeout -k 120 "$(limit "$MIN" 60)" python3 -m napari_ilat.cli train recipe --minutes "$MIN" --out "$RUN/$name" \
        --workers "$workers" --n-eval 64 --stage1-share "${STAGE1_SHARE:-0.6}" --overwrite "$@" >"$RUN/$name.log" 2>&1
}
pids=()
wait_all() {  # waits for every "name:pid" in pids, prints each exit status; sets status
    status=0
    for pm in "${pids[@]}"; do
        wait "${pm#*:}"; r=$?
        echo "${pm%%:*}: $r"
        status=$((status || r))
    done
}
collect() {  # $OUT takes 8 files: only what changed, JSONs (ablation: all in records.tgz)
    [ -n "${OUT:-}" ] || return 0
    for d in "$RUN"/*/; do
        n=$(basename "$d")
        case $n in
            *imagebart) files=$(cd "$d" && ls "$n".bart*.safetensors 2>/dev/null | sed "s/^$n\.//; s/\.safetensors$//") ;;
                # its stages only: its first stage is the bundled natural one
            *-decoder) files=stage1 ;;  # its stage2 is NAME's; its JSON only in records.tgz (8 files)
            *) if [ "$MODE" = ablation ] || [ "${STAGE1_SHARE:-0.6}" = 0 ]; then files=stage2
               else files="stage1 stage2"; fi ;;
        esac
        for f in $files; do cp "$d/$n.$f.safetensors" "$OUT/" 2>/dev/null; done
        [ "$MODE" = ablation ] || [[ $n == *-decoder ]] || cp "$d/$n.json" "$OUT/" 2>/dev/null
    done
    tar czf "$OUT/records.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.npz' "$RUN" 2>/dev/null
}
decoder() {  # model: its bundled first stage's decoder trains alone for DECODER_MIN minutes
    timeout -k 120 "$(limit "$DECODER_MIN" 90)" \
        python3 -m napari_ilat.cli train vqgan --data "$1" --init "$1" --decoder-only \
        --out "$RUN/$1-decoder/run" --overwrite --quiet --device "${DEVICE:-cuda}" --batch-size 32 --reuse 3 \
        --workers "${WORKERS_DECODER:-2}" --budget "$DECODER_MIN" --seed "${SEED:-1}" --val-every 500 \
        --val-size 64 --sample-every 0 --save-every 500 >"$RUN/$1-decoder.log" 2>&1 &
    pids+=("decoder $1:$!")
}
# a new ImageBART's sizes (the bundled model's): 256 wide, 8 heads, 2 encoder + 4 decoder blocks
IB_SIZES="--n-embd 256 --n-head 8 --n-enc-layer 2 --n-dec-layer 4"
imagebart() {  # trains ImageBART for IMAGEBART_MIN minutes beside the other runs; extra args:
    # its start (the recipe's sizes from scratch, or --init MODEL)
    mkdir -p "$RUN/natural-imagebart"
    timeout -k 120 "$(limit "$IMAGEBART_MIN" 90)" \
        python3 -m napari_ilat.cli train imagebart --data natural \
        --out "$RUN/natural-imagebart/run" --overwrite --quiet --device "${DEVICE:-cuda}" --batch-size 64 --lr 6e-4 \
        --workers "${WORKERS_IMAGEBART:-3}" --budget "$IMAGEBART_MIN" --seed "${SEED:-1}" --val-every 500 \
        --val-size 64 "$@" --export "$RUN/natural-imagebart/natural-imagebart" >"$RUN/natural-imagebart.log" 2>&1 &
    pids+=("imagebart:$!")
}
if [ "$MODE" = continue ]; then
    nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv -l 30 >"$RUN/gpu.log" 2>&1 &
    # MODELS: which bundled models go on (default both, side by side); each model's data
    # workers: WORKERS_POSE / WORKERS_NATURAL (defaults 10 / 4 side by side; one model alone
    # should take most of the cores: the scene generators, not the GPU, set the pace)
    for m in ${MODELS-pose natural}; do
        case $m in
            pose) w=${WORKERS_POSE:-10} ;;
            natural) w=${WORKERS_NATURAL:-4} ;;
            *) echo "unknown model $m" >&2; exit 2 ;;
        esac
        # VAL_EDITS (default 64): validation edits every 1000 steps; the best step is exported
        # POOL=N: the transformer cycles over the first N training items, made once by the
        # workers as first drawn (later passes at the GPU's pace, not the scene generator's)
        # COND_DROPOUT=F: fraction of steps without the pose / sketch (the recipe's 0.2)
        # THIN_STROKES=F (natural): that share of its training sketches as thin lines, as a user draws
        thin=()
        [ "$m" = natural ] && [ -n "${THIN_STROKES:-}" ] && thin=(--thin-strokes "$THIN_STROKES")
        recipe "$m" "$w" --data "$m" --init "$m" --seed "${SEED:-1}" --val-edits "${VAL_EDITS:-64}" \
            ${POOL:+--token-pool "$POOL"} ${COND_DROPOUT:+--cond-dropout "$COND_DROPOUT"} "${thin[@]}" &
        pids+=("recipe $m:$!")
        [ -n "${DECODER_MIN:-}" ] && decoder "$m"
    done
    # IMAGEBART_MIN > 0: the bundled natural-imagebart goes on beside them (its stages and
    # first stage, a fresh optimiser and schedule over these minutes); with IMAGEBART_STAGES=N
    # a new ImageBART of N stages (a longer schedule: each stage redraws less) from scratch on
    # the bundled natural first stage instead, the bundled model's sizes
    if [ -n "${IMAGEBART_MIN:-}" ] && [ -n "${IMAGEBART_STAGES:-}" ]; then
        imagebart --first-stage natural --n-stages "$IMAGEBART_STAGES" $IB_SIZES
    elif [ -n "${IMAGEBART_MIN:-}" ]; then
        imagebart --init natural-imagebart
    fi
    wait_all
    if [ -n "${DECODER_MIN:-}" ]; then  # each continued transformer with its new decoder
        for m in ${MODELS-pose natural}; do
            python3 -m napari_ilat.cli train export --transformer "$RUN/$m/$m.json" \
                --first-stage "$RUN/$m-decoder/run" --out "$RUN/$m-decoder/$m-decoder" --name "$m" \
                >>"$RUN/$m-decoder.log" 2>&1
            r=$?; echo "export $m with its new decoder: $r"; status=$((status || r))
        done
    fi
    collect
    for preset in ${BENCH-default paper}; do
        timeout 75 python3 -m napari_ilat.cli bench regenerate --preset "$preset" --device cuda --repeats 5 \
            --out "$RUN/regenerate_$preset.md" >"$RUN/regenerate_$preset.log" 2>&1
        echo "bench regenerate $preset: $?"
    done
    if [ -n "${NATIVE:-}" ]; then  # NATIVE=1: a 512 px mask on a 1024 px image at native resolution
        timeout 150 python3 -m napari_ilat.cli bench native --device "${DEVICE:-cuda}" --threads 1 \
            --out "$RUN/native.json" >"$RUN/native.log" 2>&1
        echo "bench native: $?"
    fi
    collect  # again: records.tgz with the benchmarks' results (the models went back before them)
elif [ "$MODE" = ablation ]; then
    nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv -l 30 >"$RUN/gpu.log" 2>&1 &
    STAGE1_SHARE=0  # both keep the bundled first stage: only the transformers train
    [ -n "${IMAGEBART_MIN:-}" ] && imagebart --first-stage natural --n-stages 3 $IB_SIZES
    recipe pose "${WORKERS_POSE:-6}" --data pose --init pose --seed "${SEED:-1}" &
    pids+=("pose:$!")
    recipe pose-plain "${WORKERS_POSE:-6}" --data pose --init pose --seed "${SEED:-1}" --plain &
    pids+=("pose-plain:$!")
    wait_all
else
    recipe pose 6 --data pose &
    p1=$!
    recipe pose-plain 5 --data pose --plain &
    p2=$!
    recipe natural 3 --data natural &
    p3=$!
    wait $p1; r1=$?; wait $p2; r2=$?; wait $p3; r3=$?
    echo "recipes: pose $r1, pose-plain $r2, natural $r3"
    status=$((r1 || r2 || r3))
    collect
    for preset in default paper ilat-ffhq; do
        timeout 120 python3 -m napari_ilat.cli bench speed --preset "$preset" --device cuda --rates 0.066,0.32 \
            --repeats 10 --out "$RUN/speed_$preset.md" >"$RUN/speed_$preset.log" 2>&1
        echo "bench speed $preset: $?"
    done
fi
collect
tail -n 3 "$RUN"/*.log
exit $status
