"""``napari-ilat bench quality``: the paper's Table 1 on our held-out data.

Two test sets, both from seeds the training never sees (``napari_ilat.data.split_seeds``):
- pose: synthetic edit pairs; input = source image + edit mask + the *target* pose,
  ground truth = the target image (exact: it is rendered);
- natural: photo patches from held-out photographs with free-form brush masks; input = the
  patch with the mask (unguided) or with the true XDoG sketch inside the mask (guided).
Methods: ``ilat`` (two-stream encoder + local AR), ``ilat*`` (plain encoder at inference on
the same weights), ``taming`` (raster AR, context above/left), and the classical
skimage.restoration.inpaint_biharmonic (plus OpenCV's Telea when cv2 is importable).
Metrics (napari_ilat.metrics): PSNR / SSIM / MAE over the whole image and inside the mask.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from .editing import edit
from .metrics import all_metrics

LEARNED = ("ilat", "ilat*", "taming")
METRICS = ("psnr", "ssim", "mae", "psnr_mask", "ssim_mask", "mae_mask")


def classical_methods() -> dict:
    from skimage.restoration import inpaint_biharmonic

    methods = {"biharmonic": lambda img, mask: _float_inpaint(inpaint_biharmonic, img, mask)}
    try:  # optional: OpenCV is not a dependency
        import cv2

        methods["telea"] = lambda img, mask: cv2.inpaint(
            img, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA
        )
    except ImportError:
        pass
    return methods


def _float_inpaint(fn, img, mask):
    out = fn(img.astype(np.float64) / 255.0, mask, channel_axis=-1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def pose_cases(n: int, resolution: int):
    from .data import make_edit_pair, split_seeds

    for seed in split_seeds("test", n):
        p = make_edit_pair(int(seed), resolution)
        yield int(seed), p.source, p.target, p.mask, {"pose": p.target_pose}


def natural_cases(n: int, resolution: int, guided: bool):
    from .data import make_natural_sample, split_seeds

    for seed in split_seeds("test", n):
        s = make_natural_sample(int(seed), resolution, mask_kinds=("brush",), rate_range=(0.1, 0.4))
        cond = {"sketch": s.edges} if guided else {}
        yield int(seed), s.image, s.image, s.mask, cond


def evaluate(cases, model, methods=LEARNED, classical=True, keep_examples=0) -> dict:
    """Mean metrics per method over ``cases``; also median seconds per edit."""
    extra = classical_methods() if classical else {}
    scores = {m: {k: [] for k in METRICS} for m in (*methods, *extra)}
    seconds = {m: [] for m in scores}
    examples = []
    for i, (seed, source, target, mask, cond) in enumerate(cases):
        row = {"seed": seed, "source": source, "target": target, "mask": mask}
        for m in scores:
            t = time.perf_counter()
            if m in extra:
                out = extra[m](source, mask)
            else:
                out = edit(source, mask, model=model, mode=m, seed=seed, **cond)
            seconds[m].append(time.perf_counter() - t)
            for k, v in all_metrics(out, target, mask).items():
                scores[m][k].append(v)
            row[m] = out
        if i < keep_examples:
            examples.append(row)
    return {
        "n": len(next(iter(seconds.values()))),
        "mean": {m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()},
        "seconds": {m: statistics.median(v) for m, v in seconds.items()},
        "examples": examples,
    }


def table_markdown(title: str, result: dict) -> str:
    lines = [
        f"**{title}** ({result['n']} held-out cases; higher PSNR/SSIM and lower MAE are better)",
        "",
        "| method | PSNR | SSIM | MAE | PSNR (mask) | SSIM (mask) | MAE (mask) | s / edit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, s in result["mean"].items():
        lines.append(
            f"| {m} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['mae']:.4f} | {s['psnr_mask']:.2f} "
            f"| {s['ssim_mask']:.4f} | {s['mae_mask']:.4f} | {result['seconds'][m]:.2f} |"
        )
    return "\n".join(lines)


def examples_png(rows: list[dict], methods, path) -> None:
    """One row per case: source with the mask tinted, target, then each method."""
    from skimage.io import imsave

    tiles = []
    for r in rows:
        tinted = r["source"].astype(np.float64)
        tinted[r["mask"]] = 0.5 * tinted[r["mask"]] + 0.5 * np.array([255, 0, 255])
        cells = [tinted.astype(np.uint8), r["target"], *(r[m] for m in methods)]
        pad = np.full((cells[0].shape[0], 4, 3), 255, np.uint8)
        tiles.append(np.concatenate([x for c in cells for x in (c, pad)][:-1], axis=1))
        tiles.append(np.full((4, tiles[-1].shape[1], 3), 255, np.uint8))
    imsave(path, np.concatenate(tiles[:-1], axis=0), check_contrast=False)


def quality(pose_model, natural_model, n_pose=200, n_natural=200, examples=None) -> str:
    """Run both test sets; returns the markdown (and writes example grids if asked)."""
    from .editing import _load_cached
    from .model import ILATModel

    parts = []
    for label, model, make in (
        ("Pose-guided editing, synthetic pose pairs", pose_model,
         lambda m: pose_cases(n_pose, m.resolution)),
        ("Free-form inpainting, natural patches (no guidance)", natural_model,
         lambda m: natural_cases(n_natural, m.resolution, guided=False)),
        ("Sketch-guided inpainting, natural patches (true XDoG inside the mask)", natural_model,
         lambda m: natural_cases(n_natural, m.resolution, guided=True)),
    ):
        if model is None:
            continue
        if not isinstance(model, ILATModel):
            model = _load_cached(str(model))
        if "Sketch" in label and model.cond != "sketch":
            continue
        result = evaluate(make(model), model, keep_examples=4 if examples else 0)
        parts.append(table_markdown(f"{label} — model `{model.config.name}`", result))
        if examples:
            name = {"Pose": "pose", "Free": "natural", "Sket": "sketch"}[label[:4]]
            path = f"{examples}_{name}.png"
            examples_png(result["examples"], list(result["mean"]), path)
            parts.append(f"![examples]({path.split('docs/')[-1]})")
    return "\n\n".join(parts)
