"""A user's strokes against the sketch the natural model was trained on. The model learnt from
XDoG edge maps (engine/sketch.py: dense, with dark regions counted as ink); a user draws a
few thin lines. Stand-in for those lines: the true XDoG map inside the mask thinned to its
1 px skeleton, pieces of at most L px dropped, drawn 2 px wide. Brush strokes (10-40%) on
held-out patches, the same cases and seeds in every column; in-mask PSNR of no sketch, the true
XDoG map, and the thin strokes at L = 4 and 16, each paired against no sketch
(docs/benchmarks.md, "Thin strokes").

    OMP_NUM_THREADS=1 python scripts/thin_strokes.py --n 100 --split validation [--model M.json]

Prints one JSON line: the share of the mask each sketch inks, and per compositing and sketch
the mean, the paired difference from no sketch and its standard error.
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.engine.sketch import thin_strokes
from napari_ilat.evaluation.metrics import PSNR_CAP, paired_difference, psnr
from napari_ilat.evaluation.quality import natural_cases

SKETCHES = ("none", "xdog", "thin4", "thin16")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--model", default="natural", help="a sketch model: bundled name or NAME.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    scores = {(k, b): [] for k in SKETCHES for b in ("seamless", "alpha")}
    ink = {k: [] for k in SKETCHES}
    for seed, src, tgt, mask, cond in natural_cases(args.n, 128, True, args.split):
        edges = cond["sketch"]
        sketches = {
            "none": None,
            "xdog": edges,
            "thin4": thin_strokes(edges, mask, 4),
            "thin16": thin_strokes(edges, mask, 16),
        }
        for k, s in sketches.items():
            ink[k].append(0.0 if s is None else float((s[mask] > 0.5).mean()))
        for (k, b), out in scores.items():
            edited = edit(src, mask, model=model, seed=seed, blend=b, sketch=sketches[k])
            out.append(psnr(edited, tgt, mask, cap=PSNR_CAP))
    row = {
        "n": args.n,
        "split": args.split,
        "model": args.model,
        "ink": {k: round(float(np.mean(v)), 3) for k, v in ink.items()},
    }
    for b, label in (("seamless", "seamless"), ("alpha", "pasted")):
        base = np.array(scores["none", b])
        row[label] = {}
        for k in SKETCHES:
            s = np.array(scores[k, b])
            diff, se = paired_difference(s, base)
            row[label][k] = {"mean": round(float(s.mean()), 3), "diff": round(diff, 3), "se": round(se, 3)}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
