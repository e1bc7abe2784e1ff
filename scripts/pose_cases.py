"""Which pose edits does the true pose lose? Per-case pose following (the measurement of
``napari-ilat train eval``: the true target pose against the source pose, same seed), with
what each pair asks for: how far its keypoints moved, how much of the image the mask covers,
and how different the ground truth is from the source inside the mask (the source image's
own in-mask PSNR against the target: high means the source pose is nearly right already).

    OMP_NUM_THREADS=1 python scripts/pose_cases.py --n 200 --split test --out runs/pose_cases_test.json

Prints the win rate of the true pose by tercile of each property.

    OMP_NUM_THREADS=1 python scripts/pose_cases.py --n 200 --sampling-seed 0 --show 5,151

``--sampling-seed K`` samples every case with seed K (default: case i with seed i, as
``train eval``); ``--show`` prints where those scenes' true-pose edits rank among the n
(the pose sample, ``napari-ilat demo``, is a test scene edited with seed 0).
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.data.pose_scenes import make_edit_pair
from napari_ilat.data.splits import split_seeds
from napari_ilat.evaluation.metrics import psnr


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default="pose")
    ap.add_argument("--out", default=None)
    ap.add_argument("--sampling-seed", type=int, default=None, help="one sampling seed for every case")
    ap.add_argument("--show", default="", help="comma-separated scenes (seeds) whose rank to print")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    rows = []
    for i, s in enumerate(split_seeds(args.split, args.n)):
        p = make_edit_pair(int(s), model.resolution)
        k = i if args.sampling_seed is None else args.sampling_seed  # as pose_following: seed 0 + i
        kw = dict(model=model, seed=k, device="cpu")
        a = psnr(edit(p.source, p.mask, pose=p.target_pose, **kw), p.target, p.mask)
        b = psnr(edit(p.source, p.mask, pose=p.source_pose, **kw), p.target, p.mask)
        d = np.linalg.norm(p.target_pose[:, :2] - p.source_pose[:, :2], axis=1)
        rows.append(
            dict(
                seed=int(s),
                true=float(a),
                source=float(b),
                max_move_px=float(d.max()),
                mask_frac=float(p.mask.mean()),
                source_vs_target=float(psnr(p.source, p.target, p.mask)),
                moved=list(p.moved_limbs),
            )
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    win = np.array([r["true"] > r["source"] for r in rows])
    print(f"{args.split}: true pose beats the source pose in {win.mean():.1%} of {len(rows)}")
    for key in ("max_move_px", "mask_frac", "source_vs_target"):
        v = np.array([r[key] for r in rows])
        edges = np.quantile(v, [1 / 3, 2 / 3])
        t = np.digitize(v, edges)
        parts = [f"{v[t == k].min():.3g}-{v[t == k].max():.3g}: {win[t == k].mean():.0%}" for k in range(3)]
        print(f"  by {key}: " + "; ".join(parts))
    true = np.array([r["true"] for r in rows])
    print(f"  true-pose PSNR in the mask: mean {true.mean():.2f}, median {np.median(true):.2f} dB")
    for scene in filter(None, args.show.split(",")):
        (r,) = [r for r in rows if r["seed"] == int(scene)]
        print(
            f"  scene {r['seed']} ({', '.join(r['moved'])}): {r['true']:.2f} dB, above {(true < r['true']).mean():.0%} "
            f"of the {len(rows)}"
        )
    lost = sorted((r for r in rows if r["true"] <= r["source"]), key=lambda r: r["source"] - r["true"])
    print("  lost:", [(r["seed"], round(r["true"] - r["source"], 2), round(r["max_move_px"], 1)) for r in lost])


if __name__ == "__main__":
    main()
