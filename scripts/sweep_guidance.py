"""Classifier-free guidance scale against quality, on the VALIDATION split (the scale is
chosen here; the test split then measures the chosen default, docs/benchmarks.md,
"Sampling: guidance"). The same cases and seeds for every scale, so the columns compare paired.

    OMP_NUM_THREADS=1 python scripts/sweep_guidance.py --n 100 --guidance 1,1.5,2,3 --sets pose,sketch

pose: in-mask PSNR with the true target pose and how often it strictly beats the source
pose and another pair's pose (napari_ilat.train.evaluate.pose_following). sketch: in-mask
PSNR with the true XDoG sketch inside brush masks, and its gain over the unguided edit (no
sketch: guidance has no effect there). Prints one JSON line per set and scale.
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.evaluation.metrics import psnr
from napari_ilat.evaluation.quality import natural_cases
from napari_ilat.train.evaluate import pose_following


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--guidance", default="1,1.5,2,3")
    ap.add_argument("--sets", default="pose,sketch")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--top-k", type=int, default=20, help="0 = whole distribution")
    args = ap.parse_args()
    torch.set_num_threads(1)
    scales = [float(g) for g in args.guidance.split(",")]
    top_k = args.top_k or None
    for name in args.sets.split(","):
        if name == "pose":
            model = load_model("pose")
            for g in scales:
                r = pose_following(model, args.n, split=args.split, guidance=g)
                print(json.dumps({"set": "pose", "guidance": g, "split": args.split, **r}), flush=True)
        elif name == "sketch":
            model = load_model("natural")
            cases = list(natural_cases(args.n, 128, True, split=args.split))
            base = [psnr(edit(s, m, model=model, seed=seed, top_k=top_k), t, m) for seed, s, t, m, _ in cases]
            for g in scales:
                ps = [
                    psnr(edit(s, m, model=model, seed=seed, top_k=top_k, guidance=g, **c), t, m)
                    for seed, s, t, m, c in cases
                ]
                row = {"set": "sketch", "guidance": g, "split": args.split, "n": args.n}
                row.update(psnr_mask=float(np.mean(ps)), unguided=float(np.mean(base)))
                row["gain"] = row["psnr_mask"] - row["unguided"]
                print(json.dumps(row), flush=True)
        else:
            raise SystemExit(f"unknown set {name!r}")


if __name__ == "__main__":
    main()
