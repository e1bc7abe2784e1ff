"""Sampling settings (guidance scale, temperature) against quality, on the VALIDATION split
(defaults are chosen here; the test split then measures the chosen default,
docs/benchmarks.md, "Sampling: guidance" and "Sampling: temperature"). The same cases and
seeds for every setting, so the columns compare paired.

    OMP_NUM_THREADS=1 python scripts/sweep_sampling.py --n 100 --guidance 1,1.5,2,3 --sets pose,sketch
    OMP_NUM_THREADS=1 python scripts/sweep_sampling.py --n 100 --temperature 1,0.8,0.6 --sets pose

pose: in-mask PSNR with the true target pose and how often it strictly beats the source
pose and another pair's pose (napari_ilat.train.evaluate.pose_following). sketch: in-mask
PSNR with the true XDoG sketch inside brush masks, and its gain over the unguided edit (no
sketch, same temperature: guidance has no effect there). Prints one JSON line per set and
setting (every guidance scale with every temperature).
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
from napari_ilat.evaluation.quality import natural_cases
from napari_ilat.train.evaluate import pose_following


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--guidance", default="1")
    ap.add_argument("--temperature", default="1")
    ap.add_argument("--sets", default="pose,sketch")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--top-k", type=int, default=20, help="0 = whole distribution")
    args = ap.parse_args()
    torch.set_num_threads(1)
    settings = [(float(g), float(t)) for g in args.guidance.split(",") for t in args.temperature.split(",")]
    top_k = args.top_k or None
    for name in args.sets.split(","):
        if name == "pose":
            model = load_model("pose")
            for g, t in settings:
                r = pose_following(model, args.n, split=args.split, guidance=g, temperature=t, top_k=top_k)
                print(
                    json.dumps({"set": "pose", "guidance": g, "temperature": t, "split": args.split, **r}), flush=True
                )
        elif name == "sketch":
            model = load_model("natural")
            cases = list(natural_cases(args.n, 128, True, split=args.split))
            base = {}
            for g, temp in settings:
                kw = dict(model=model, top_k=top_k, temperature=temp)
                if temp not in base:
                    base[temp] = float(
                        np.mean([psnr(edit(s, m, seed=seed, **kw), t, m, cap=PSNR_CAP) for seed, s, t, m, _ in cases])
                    )
                ps = [
                    psnr(edit(s, m, seed=seed, guidance=g, **kw, **c), t, m, cap=PSNR_CAP) for seed, s, t, m, c in cases
                ]
                row = {"set": "sketch", "guidance": g, "temperature": temp, "split": args.split, "n": args.n}
                row.update(psnr_mask=float(np.mean(ps)), unguided=base[temp])
                row["gain"] = row["psnr_mask"] - row["unguided"]
                print(json.dumps(row), flush=True)
        else:
            raise SystemExit(f"unknown set {name!r}")


if __name__ == "__main__":
    main()
