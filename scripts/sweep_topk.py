"""In-mask PSNR of the bundled models against top-k, on held-out cases (docs/benchmarks.md,
"Sampling: top-k"). The same cases and seeds for every K, so the columns compare paired.

    OMP_NUM_THREADS=1 python scripts/sweep_topk.py --n 60 --top-k 0,10,20,50 --sets box,brush,pose

K = 0 samples from the whole distribution. Prints one JSON line per set and K.
Upper-half completion with both engines on one first stage (docs/imagebart.md):

    OMP_NUM_THREADS=1 python scripts/sweep_topk.py --n 40 --top-k 5,10,20,50,0 --split validation \
        --sets upper-imagebart,upper-taming --ilat-model runs/nat-old/natural.json
    OMP_NUM_THREADS=1 python scripts/sweep_topk.py --n 100 --top-k 0,20,5,1 --split validation \
        --sets upper-imagebart,upper-taming,upper-ilat
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.evaluation import imagebart as ib
from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
from napari_ilat.evaluation.quality import box_cases, natural_cases, pose_cases

CASES = {  # set -> (cases(n, split), model, mode); model None = --ilat-model
    "box": (lambda n, sp: box_cases(n, 128, sp), None, "ilat"),
    "brush": (lambda n, sp: natural_cases(n, 128, False, sp), None, "ilat"),
    "sketch": (lambda n, sp: natural_cases(n, 128, True, sp), None, "ilat"),
    "pose": (lambda n, sp: pose_cases(n, 128, sp), "pose", "ilat"),
    "upper-imagebart": (lambda n, sp: ib.natural_cases("upper_half", n, 128, sp), "natural-imagebart", "imagebart"),
    "upper-taming": (lambda n, sp: ib.natural_cases("upper_half", n, 128, sp), None, "taming"),
    "upper-ilat": (lambda n, sp: ib.natural_cases("upper_half", n, 128, sp), None, "ilat"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--top-k", default="0,10,20,50")
    ap.add_argument("--sets", default="box,brush,pose")
    ap.add_argument("--split", default="test")
    ap.add_argument("--ilat-model", default="natural", help="the natural iLAT model (default: the bundled one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) or None for k in args.top_k.split(",")]
    for name in args.sets.split(","):
        make_cases, model, mode = CASES[name]
        model = load_model(model or args.ilat_model)
        cases = list(make_cases(args.n, args.split))
        for k in ks:
            ps = [
                psnr(edit(src, mask, model=model, mode=mode, seed=seed, top_k=k, **cond), tgt, mask, cap=PSNR_CAP)
                for seed, src, tgt, mask, cond in cases
            ]
            print(
                json.dumps(
                    {
                        "set": name,
                        "top_k": k,
                        "n": args.n,
                        "split": args.split,
                        "psnr_mask": round(float(np.mean(ps)), 3),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
