"""Pose edits on figures larger or smaller than the pose model's training figures.

Held-out pose edit pairs rendered at ``k`` x the model's resolution (``make_edit_pair(seed,
k * 128)``: the same scene, crisp, its figure k times larger; the mask and both poses scale with
it), or, for k < 1, rendered at the model's resolution, shrunk k times and edge-padded back to
at least the model's resolution (a small figure in a larger image). Each pair is edited with
the bundled pose model (sampling seed = case index, as ``train eval``) by

- ``native``: ``resolution="native"`` (the model's pixel scale, sliding windows),
- ``auto``: ``resolution="auto"`` (the default: native, or the figure's scale when the figure is
  more than ``FIGURE_SCALE_BAND`` x off),
- ``figure``: the figure's scale whatever the figure's size (to place the threshold),
- ``figure<=Nx`` (any N): the same, rescaled at most N times either way (what enlarging a small
  figure only part of the way is worth; also where that leaves the figure below
  ``FIGURE_ENLARGE_MIN_SIZE``, at which "auto" does not enlarge),
- ``resize``: one window resized to the model's resolution,

and scored in the mask against the ground truth (PSNR, SSIM), with the median seconds per edit.

    OMP_NUM_THREADS=1 python scripts/pose_scale.py --n 50 --split validation --factors 2,3,4
    OMP_NUM_THREADS=1 python scripts/pose_scale.py --n 50 --split validation --factors 0.33,0.5
    OMP_NUM_THREADS=1 python scripts/pose_scale.py --n 30 --factors 0.12,0.2 --methods "native,figure,figure<=4x"

Prints one JSON line per factor and method: means, the paired difference from ``native`` (+- one
standard error), the scale each edit used (image pixels per model pixel, median) and seconds;
``--out`` keeps each case's figure ratio (``figure_ratio``) and PSNR per method; ``--examples
PNG`` draws the last factor's first cases (input with the mask tinted, truth, each method;
tiles shrunk to 256 px).
"""

import argparse
import json
import time
import warnings

import numpy as np
import torch
from skimage.transform import rescale, resize

import napari_ilat.engine.editing as editing
from napari_ilat import edit_with_info, load_model
from napari_ilat.data.pose_scenes import make_edit_pair
from napari_ilat.data.splits import split_seeds
from napari_ilat.engine.pose_mask import figure_ratio
from napari_ilat.evaluation.metrics import paired_difference, psnr, ssim
from napari_ilat.evaluation.quality import examples_png

METHODS = ("native", "auto", "figure", "resize")


def scaled_pair(seed: int, k: float, res: int):
    """(source, target, mask, target pose) of test pair ``seed`` with its figure k times the usual size."""
    if k >= 1:
        p = make_edit_pair(seed, int(round(k * res)))
        return p.source, p.target, p.mask, p.target_pose
    p = make_edit_pair(seed, res)
    small = [rescale(a, k, channel_axis=-1, anti_aliasing=True) for a in (p.source, p.target)]
    mask = rescale(p.mask.astype(float), k, anti_aliasing=False, order=0) > 0.5
    side = small[0].shape[0]
    pad = (res - side + 1) // 2 + res // 4  # the figure well inside a frame of >= res
    src, tgt = (np.pad(a, ((pad, pad), (pad, pad), (0, 0)), mode="edge") for a in small)
    mask = np.pad(mask, pad)
    pose = p.target_pose.copy()
    pose[:, :2] = (pose[:, :2] + 0.5) * k - 0.5 + pad
    return src, tgt, mask, pose


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--factors", default="2,3,4")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=None, help="a JSON file for the per-case rows (figure ratio, PSNR per method)")
    ap.add_argument("--examples", default=None, help="a PNG grid of the first --n-examples cases of the last factor")
    ap.add_argument("--n-examples", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model("pose")
    methods = args.methods.split(",")
    off_scale, figure_scale = editing.figure_off_scale, editing._figure_scale
    cases, examples = [], []
    for k in (float(x) for x in args.factors.split(",")):
        scores = {m: {"psnr": [], "ssim": [], "scale": [], "s": []} for m in methods}
        for i, seed in enumerate(split_seeds(args.split, args.n)):
            src, tgt, mask, pose = scaled_pair(int(seed), k, model.resolution)
            case = {"factor": k, "seed": int(seed), "ratio": figure_ratio(pose, model.resolution)}
            shown = None
            if i < args.n_examples:
                shown = {"source": thumb(src), "target": thumb(tgt), "mask": thumb(mask.astype(float)) > 0.5}
            for m in methods:
                # "figure": every figure counts as off scale, so "auto" edits it at its scale
                at_figure = m.startswith("figure")
                editing.figure_off_scale = (lambda r: r is not None) if at_figure else off_scale
                editing._figure_scale = (
                    partway(figure_scale, float(m[8:-1])) if m.startswith("figure<=") else figure_scale
                )
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "native" warns about the figure's size
                    r = edit_with_info(
                        src,
                        mask,
                        pose=pose,
                        model=model,
                        seed=i,
                        device="cpu",
                        resolution="auto" if at_figure else m,
                    )
                scores[m]["s"].append(time.perf_counter() - t0)
                scores[m]["psnr"].append(psnr(r.image, tgt, mask))
                scores[m]["ssim"].append(ssim(r.image, tgt, mask))
                scores[m]["scale"].append(r.scale)
                case[m] = scores[m]["psnr"][-1]
                if shown is not None:
                    shown[m] = thumb(r.image)
            cases.append(case)
            if shown is not None:
                examples.append(shown)
        editing.figure_off_scale, editing._figure_scale = off_scale, figure_scale
        for m in methods:
            row = {"factor": k, "method": m, "n": args.n, "split": args.split, "image_px": src.shape[0]}
            for key in ("psnr", "ssim"):
                row[key] = round(float(np.mean(scores[m][key])), 4)
                d, se = paired_difference(scores[m][key], scores["native"][key]) if "native" in scores else (0, 0)
                row[f"{key}_vs_native"] = f"{d:+.3f} +- {se:.3f}"
            row["scale_median"] = round(float(np.median(scores[m]["scale"])), 3)
            row["s_median"] = round(float(np.median(scores[m]["s"])), 2)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(cases, f, indent=1)
    if args.examples:
        examples_png(examples[-args.n_examples :], methods, args.examples)


def partway(figure_scale, most: float):
    """``editing._figure_scale`` rescaling at most ``most`` times either way, part of the way
    whatever that leaves (never declined as too short, as "auto" may)."""

    def scale(ratio, *args):
        s, declined = figure_scale(ratio, *args)
        return min(max(declined or s, 1 / most), most), None

    return scale


def thumb(a, side: int = 256):
    """``a`` as uint8 (a mask as float in [0, 1]), shrunk to at most ``side`` px for the grid."""
    a = a.astype(np.float64) / (255 if a.dtype == np.uint8 else 1)
    if max(a.shape[:2]) > side:
        a = resize(a, (side, side) + a.shape[2:], anti_aliasing=True)
    return a if a.ndim == 2 else (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


if __name__ == "__main__":
    main()
