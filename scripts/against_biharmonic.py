"""The bundled models' default edits against biharmonic inpainting, paired case by case, on as
many held-out cases as it takes to tell them apart (the goals "at least biharmonic" of issues
12 and 13; the 200-case tables of docs/benchmarks.md are the first 200 of these cases, with
the same sampling seeds as `bench quality`).

    OMP_NUM_THREADS=1 python scripts/against_biharmonic.py --sets box --n 1000

Sets: box (one 48-64 px hole), brush (strokes over 10-40%), sketch (the same strokes with the
true XDoG sketch), with the bundled natural model; pose (pose edit pairs with the target pose)
with the bundled pose model. Default sampling and the default seamless compositing. Prints a
JSON line per set every ``--every`` cases and at the end: in-mask PSNR of the model and of
biharmonic inpainting, and their paired difference +- its standard error.
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.evaluation.metrics import all_metrics, paired_difference
from napari_ilat.evaluation.quality import box_cases, classical_methods, natural_cases, pose_cases

SETS = {  # set -> (cases(n, split), bundled model)
    "box": (lambda n, split: box_cases(n, 128, split), "natural"),
    "brush": (lambda n, split: natural_cases(n, 128, False, split), "natural"),
    "sketch": (lambda n, split: natural_cases(n, 128, True, split), "natural"),
    "pose": (lambda n, split: pose_cases(n, 128, split), "pose"),
}


def summary(name: str, split: str, model: list, biharmonic: list) -> dict:
    diff, se = paired_difference(model, biharmonic)
    return {
        "set": name,
        "split": split,
        "n": len(model),
        "model": round(float(np.mean(model)), 3),
        "biharmonic": round(float(np.mean(biharmonic)), 3),
        "difference": round(diff, 3),
        "se": round(se, 3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="box")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--split", default="test")
    ap.add_argument("--every", type=int, default=100, help="print the running means every this many cases")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fill = classical_methods()["biharmonic"]
    for name in args.sets.split(","):
        make_cases, model_name = SETS[name]
        model = load_model(model_name)
        ours, theirs = [], []
        for seed, source, target, mask, cond in make_cases(args.n, args.split):
            ours.append(all_metrics(edit(source, mask, model=model, seed=seed, **cond), target, mask)["psnr_mask"])
            theirs.append(all_metrics(fill(source, mask), target, mask)["psnr_mask"])
            if len(ours) % args.every == 0 and len(ours) < args.n:
                print(json.dumps(summary(name, args.split, ours, theirs)), flush=True)
        print(json.dumps(summary(name, args.split, ours, theirs)), flush=True)


if __name__ == "__main__":
    main()
