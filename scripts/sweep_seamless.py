"""The seamless correction's fill (engine/blend.py, HARMONIC_DEPTH): biharmonic everywhere
("none", the fill before the eighteenth session) against biharmonic at the mask's edge
turning harmonic DEPTH px inside, on held-out cases, the same cases and seeds for every
depth, so the differences are paired (docs/benchmarks.md, "Sampling: the seamless
correction's fill").

    OMP_NUM_THREADS=1 python scripts/sweep_seamless.py --n 100 --split validation --sets pose,box,brush,sketch
    OMP_NUM_THREADS=1 python scripts/sweep_seamless.py --n 200 --split test --sets box,brush,sketch
    OMP_NUM_THREADS=1 python scripts/sweep_seamless.py --n 200 --split test --sets pose

Sets: pose (train eval's pose following: in-mask PSNR with the true target pose, and how
often it strictly beats the source pose and another pair's; the bundled pose model), box
holes of 48-64 px and brush strokes of 10-40% without a sketch, the same strokes with the
true sketch (its gain: the sketch set minus the brush set, the same strokes and seeds); the
bundled natural model, default sampling (top-k 20, the context palette "auto"). Prints one
JSON line per set: each depth's means, and each depth's paired difference from the first
with its standard error.
"""

import argparse
import json

import numpy as np
import torch
from sweep_topk import CASES

from napari_ilat import edit, load_model
from napari_ilat.engine import blend
from napari_ilat.evaluation.metrics import PSNR_CAP, paired_difference, psnr
from napari_ilat.train.evaluate import pose_following


def paired(scores: dict, first) -> dict:
    """Each depth's mean, and its paired difference from ``first`` +- standard error."""
    out = {}
    for depth, s in scores.items():
        s = np.asarray(s, float)
        row = {"mean": round(float(s.mean()), 3)}
        if depth != first:
            diff, se = paired_difference(s, scores[first])
            row.update(diff=round(diff, 3), se=round(se, 3))
        out[str(depth)] = row
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--sets", default="pose,box,brush,sketch")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--depths", default="none,16", help="HARMONIC_DEPTH values, 'none' = biharmonic everywhere")
    args = ap.parse_args()
    torch.set_num_threads(1)
    depths = [None if d == "none" else float(d) for d in args.depths.split(",")]
    for name in args.sets.split(","):
        row = {"set": name, "n": args.n, "split": args.split}
        if name == "pose":
            model, rates, scores = load_model("pose"), {}, {}
            for depth in depths:
                blend.HARMONIC_DEPTH = depth
                r = pose_following(model, args.n, split=args.split, per_case=True)
                scores[depth] = r["cases"]["true"]
                rates[str(depth)] = {k: r[k] for k in ("true_beats_source_pose", "true_beats_other_pose")}
            row.update(psnr_mask_true_pose=paired(scores, depths[0]), following=rates)
        else:
            make_cases, model, mode = CASES[name]
            model = load_model(model or "natural")
            cases = list(make_cases(args.n, args.split))
            scores = {}
            for depth in depths:
                blend.HARMONIC_DEPTH = depth
                scores[depth] = [
                    psnr(edit(src, mask, model=model, mode=mode, seed=seed, **cond), tgt, mask, cap=PSNR_CAP)
                    for seed, src, tgt, mask, cond in cases
                ]
            row["psnr_mask"] = paired(scores, depths[0])
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
