"""In-mask PSNR of the bundled models against top-k, on held-out cases (docs/benchmarks.md,
"Sampling: top-k"). The same cases and seeds for every K, so the columns compare paired.

    OMP_NUM_THREADS=1 python scripts/sweep_topk.py --n 60 --top-k 0,10,20,50 --sets box,brush,pose

K = 0 samples from the whole distribution. Prints one JSON line per set and K.
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.evaluation.metrics import psnr
from napari_ilat.evaluation.quality import box_cases, natural_cases, pose_cases

CASES = {
    "box": lambda n: box_cases(n, 128),
    "brush": lambda n: natural_cases(n, 128, False),
    "sketch": lambda n: natural_cases(n, 128, True),
    "pose": lambda n: pose_cases(n, 128),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--top-k", default="0,10,20,50")
    ap.add_argument("--sets", default="box,brush,pose")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) or None for k in args.top_k.split(",")]
    for name in args.sets.split(","):
        model = load_model("pose" if name == "pose" else "natural")
        cases = list(CASES[name](args.n))
        for k in ks:
            ps = [
                psnr(edit(src, mask, model=model, seed=seed, top_k=k, **cond), tgt, mask)
                for seed, src, tgt, mask, cond in cases
            ]
            print(
                json.dumps({"set": name, "top_k": k, "n": args.n, "psnr_mask": round(float(np.mean(ps)), 3)}),
                flush=True,
            )


if __name__ == "__main__":
    main()
