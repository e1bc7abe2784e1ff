"""Sampling settings (guidance scale, temperature) against quality, on the
VALIDATION split (defaults are chosen here; the test split then measures the chosen
default, docs/benchmarks.md, "Sampling: ..."). The same cases and seeds for every setting,
so the columns compare paired.

    OMP_NUM_THREADS=1 python scripts/sweep_sampling.py --n 100 --guidance 1,1.5,2,3 --sets pose,sketch
    OMP_NUM_THREADS=1 python scripts/sweep_sampling.py --n 100 --temperature 1,0.8,0.6 --sets pose
    OMP_NUM_THREADS=1 python scripts/sweep_sampling.py --n 100 --temperature 1,0.8 --sets box,brush
    OMP_NUM_THREADS=1 python scripts/sweep_sampling.py --n 100 --sets pose --palette on

pose: in-mask PSNR with the true target pose and how often it strictly beats the source
pose and another pair's pose (napari_ilat.train.evaluate.pose_following). sketch: in-mask
PSNR with the true XDoG sketch inside brush masks, and its gain over the unguided edit (no
sketch, same temperature: guidance has no effect there). box, brush: in-mask
PSNR of unguided natural edits (box holes of 48-64 px, brush strokes of 10-40%). Prints one
JSON line per set and setting (every guidance scale with every temperature).
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.engine.palette import check_palette
from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
from napari_ilat.evaluation.quality import box_cases, natural_cases
from napari_ilat.train.evaluate import pose_following


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--guidance", default="1")
    ap.add_argument("--temperature", default="1")
    ap.add_argument("--sets", default="pose,sketch")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--top-k", type=int, default=20, help="0 = whole distribution")
    ap.add_argument("--palette", default="auto", help="the context palette for every edit: auto, on or off")
    ap.add_argument("--pose-model", default="pose", help="bundled name or NAME.json for the pose set")
    ap.add_argument("--natural-model", default="natural", help="bundled name or NAME.json for the other sets")
    args = ap.parse_args()
    torch.set_num_threads(1)
    settings = [(float(g), float(t)) for g in args.guidance.split(",") for t in args.temperature.split(",")]
    top_k = args.top_k or None
    palette = check_palette(args.palette)
    for name in args.sets.split(","):
        if name == "pose":
            model = load_model(args.pose_model)
            for g, t in settings:
                r = pose_following(
                    model, args.n, split=args.split, guidance=g, temperature=t, top_k=top_k, palette=palette
                )
                row = {"set": "pose", "guidance": g, "temperature": t, "palette": palette, "split": args.split, **r}
                print(json.dumps(row), flush=True)
        elif name in ("sketch", "box", "brush"):
            model = load_model(args.natural_model)
            if name == "box":
                cases = list(box_cases(args.n, 128, split=args.split))
            else:
                cases = list(natural_cases(args.n, 128, name == "sketch", split=args.split))
            base = {}
            for g, temp in settings:
                kw = dict(model=model, top_k=top_k, temperature=temp, palette=palette)
                if name == "sketch" and temp not in base:
                    base[temp] = float(
                        np.mean([psnr(edit(s, m, seed=seed, **kw), t, m, cap=PSNR_CAP) for seed, s, t, m, _ in cases])
                    )
                ps = [
                    psnr(edit(s, m, seed=seed, guidance=g, **kw, **c), t, m, cap=PSNR_CAP) for seed, s, t, m, c in cases
                ]
                row = {"set": name, "guidance": g, "temperature": temp, "palette": palette, "split": args.split}
                row.update(n=args.n, psnr_mask=float(np.mean(ps)))
                if name == "sketch":
                    row.update(unguided=base[temp], gain=row["psnr_mask"] - base[temp])
                print(json.dumps(row), flush=True)
        else:
            raise SystemExit(f"unknown set {name!r}")


if __name__ == "__main__":
    main()
