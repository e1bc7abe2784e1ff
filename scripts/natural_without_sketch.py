"""What a natural edit without a sketch draws: the sketch-conditioned natural model then runs
unconditionally (the branch condition dropout trains), and pasting its fill as decoded
(blend alpha) shows what that branch has learnt. For box holes, the same cases and seeds in
every column: in-mask PSNR pasted and seamless, and the mean absolute difference (0-255)
between the fill's mean colour and the truth's, at top-k 20 (the default) and over the whole
distribution; beside it the conditional branch given the XDoG of the unmasked image and no
strokes inside the hole ("empty sketch"), the alternative to running unconditionally.

    OMP_NUM_THREADS=1 python scripts/natural_without_sketch.py --n 100 --split validation \\
        --grid docs/images/natural_without_sketch.png

The grid: five test box holes; columns input, truth, then pasted as decoded: no sketch at
top-k 20 / whole distribution / greedy, the true sketch (XDoG of the truth) at top-k 20; last
the default edit (no sketch, top-k 20, seamless). Prints one JSON line per setting.
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.engine.sketch import xdog
from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
from napari_ilat.evaluation.quality import box_cases

GRID_CASES = (2, 4, 7, 9, 11)  # of the first test box holes: a cup and four cat-face holes


def grid(model, path):
    import skimage.io

    cases = list(box_cases(max(GRID_CASES) + 1, 128, split="test"))
    rows = []
    for i in GRID_CASES:
        seed, src, truth, mask, _ = cases[i]
        sketch = np.where(mask, xdog(truth), 0).astype(np.float32)
        outs = [edit(src, mask, model=model, seed=seed, top_k=k, blend="alpha") for k in (20, None, 1)]
        outs.append(edit(src, mask, sketch=sketch, model=model, seed=seed, top_k=20, blend="alpha"))
        outs.append(edit(src, mask, model=model, seed=seed))
        shown = src.copy()
        shown[mask] = 128
        rows.append(np.concatenate([shown, truth, *outs], 1))
    skimage.io.imsave(path, np.concatenate(rows, 0), check_contrast=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--model", default="natural")
    ap.add_argument("--grid", default=None, help="also write the example grid here (PNG)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    if model.cond != "sketch":
        raise SystemExit(f"{args.model} is not sketch-conditioned")
    cases = list(box_cases(args.n, 128, split=args.split))
    settings = [("none", 20), ("none", None), ("empty", 20)]
    for branch, top_k in settings:
        row = {"split": args.split, "n": args.n, "sketch": branch, "top_k": top_k}
        for blend in ("alpha", "seamless"):
            ps, offset = [], []
            for seed, src, truth, mask, _ in cases:
                kw = {"sketch": np.zeros(mask.shape, np.float32)} if branch == "empty" else {}
                out = edit(src, mask, model=model, seed=seed, top_k=top_k, blend=blend, **kw)
                ps.append(psnr(out, truth, mask, cap=PSNR_CAP))
                offset.append(np.abs(out[mask].mean(0) - truth[mask].mean(0)).mean())
            row[f"psnr_{blend}"] = round(float(np.mean(ps)), 2)
            row[f"colour_offset_{blend}"] = round(float(np.mean(offset)), 1)
        print(json.dumps(row), flush=True)
    if args.grid:
        grid(model, args.grid)


if __name__ == "__main__":
    main()
