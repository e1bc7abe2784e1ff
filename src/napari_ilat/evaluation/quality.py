"""``napari-ilat bench quality``: the paper's Table 1 on our held-out data.

Two test sets, both from seeds the training never sees (``napari_ilat.data.split_seeds``):
- pose: synthetic edit pairs; input = source image + edit mask + the *target* pose,
  ground truth = the target image (exact: it is rendered);
- natural: photo patches from held-out photographs with free-form brush masks; input = the
  patch with the mask (unguided) or with the true XDoG sketch inside the mask (guided).
Methods: ``ilat`` (two-stream encoder + local AR), ``ilat*`` (the ablation without two-stream
convolutions: a model whose first stage was trained ``--plain``, run with the plain encoder;
without such a model, the plain encoder at inference on the iLAT weights, and the table
says so), ``taming`` (raster AR, context above/left), and the classical
skimage.restoration.inpaint_biharmonic (plus OpenCV's Telea when cv2 is importable).
Metrics (napari_ilat.evaluation.metrics): PSNR / SSIM / MAE over the whole image and inside the mask.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from napari_ilat.engine.editing import cached_model, edit
from napari_ilat.engine.modes import modes_for
from napari_ilat.evaluation.metrics import all_metrics

LEARNED = modes_for("ilat")  # every mode of an iLAT model (imagebart: evaluation/imagebart.py)
METRICS = ("psnr", "ssim", "mae", "psnr_mask", "ssim_mask", "mae_mask")


def classical_methods() -> dict:
    from skimage.restoration import inpaint_biharmonic

    methods = {"biharmonic": lambda img, mask: _float_inpaint(inpaint_biharmonic, img, mask)}
    try:  # optional: OpenCV is not a dependency
        import cv2

        methods["telea"] = lambda img, mask: cv2.inpaint(img, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    except ImportError:
        pass
    return methods


def _float_inpaint(fn, img, mask):
    out = fn(img.astype(np.float64) / 255.0, mask, channel_axis=-1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def pose_cases(n: int, resolution: int, split: str = "test"):
    from napari_ilat.data import make_edit_pair, split_seeds

    for seed in split_seeds(split, n):
        p = make_edit_pair(int(seed), resolution)
        yield int(seed), p.source, p.target, p.mask, {"pose": p.target_pose}


def natural_cases(n: int, resolution: int, guided: bool, split: str = "test"):
    from napari_ilat.data import make_natural_sample, split_seeds

    for seed in split_seeds(split, n):
        s = make_natural_sample(int(seed), resolution, mask_kinds=("brush",), rate_range=(0.1, 0.4))
        cond = {"sketch": s.edges} if guided else {}
        yield int(seed), s.image, s.image, s.mask, cond


BOX_SIDES = (48, 64)  # box test set: one square hole, side uniform in this range (px)


def box_cases(n: int, resolution: int, split: str = "test"):
    """Natural test patches with one square box mask of 48-64 px (at 128 px: 14-25% of the
    patch) at a random place, unguided: the classic 'remove this object' hole."""
    from napari_ilat.data import make_natural_sample, split_seeds

    for seed in split_seeds(split, n):
        s = make_natural_sample(int(seed), resolution, mask_kinds=("brush",))
        rng = np.random.default_rng([int(seed), BOX_STREAM])
        side = min(resolution, int(rng.integers(BOX_SIDES[0], BOX_SIDES[1] + 1)) * resolution // 128)
        r, c = (int(v) for v in rng.integers(0, resolution - side + 1, size=2))
        mask = np.zeros((resolution, resolution), bool)
        mask[r : r + side, c : c + side] = True
        yield int(seed), s.image, s.image, mask, {}


BOX_STREAM = 11  # random stream of the box test set's boxes (independent of the patch's)


def evaluate(
    cases,
    model,
    methods=LEARNED,
    classical=True,
    keep_examples=0,
    models: dict | None = None,
    progress=None,
    editor=None,
    blends=("seamless",),
) -> dict:
    """Mean metrics per method over ``cases``; also median seconds per edit.

    ``cases`` yields ``(seed, source, target, mask, cond)``: the methods edit ``source`` and
    are scored against ``target`` (the ground truth; for inpainting it is the source).
    ``models`` maps a method to the model it runs with (default: ``model``), e.g. ``ilat*`` to
    the separately trained plain-encoder model. ``editor``: the function that runs a learned
    method (default :func:`napari_ilat.edit`; same arguments), e.g. an oracle in tests.
    ``blends``: the compositing of the learned methods (``edit(blend=)``); the first is the
    method's own row, every other adds a row "METHOD (BLEND)"."""
    models = models or {}
    editor = edit if editor is None else editor
    extra = classical_methods() if classical else {}
    # row name -> (mode, blend) for the learned methods
    learned = {m if i == 0 else f"{m} ({b})": (m, b) for m in methods for i, b in enumerate(blends)}
    scores = {m: {k: [] for k in METRICS} for m in (*learned, *extra)}
    seconds = {m: [] for m in scores}
    examples = []
    for i, (seed, source, target, mask, cond) in enumerate(cases):
        row = {"seed": seed, "source": source, "target": target, "mask": mask}
        for m in scores:
            t = time.perf_counter()
            if m in extra:
                out = extra[m](source, mask)
            else:
                mode, blend = learned[m]
                out = editor(source, mask, model=models.get(mode, model), mode=mode, seed=seed, blend=blend, **cond)
            seconds[m].append(time.perf_counter() - t)
            for k, v in all_metrics(out, target, mask).items():
                scores[m][k].append(v)
            row[m] = out
        if i < keep_examples:
            examples.append(row)
        if progress is not None:
            progress(i + 1)
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


def _model(m):
    return None if m is None else cached_model(m)


# test set key (it names the example file) -> table title
TEST_SETS = {
    "pose": "Pose-guided editing, synthetic pose pairs",
    "natural": "Free-form inpainting, natural patches (no guidance)",
    "box": "Box inpainting, natural patches, one 48-64 px square hole (no guidance)",
    "sketch": "Sketch-guided inpainting, natural patches (true XDoG inside the mask)",
}


def quality(
    pose_model,
    natural_model,
    n_pose=200,
    n_natural=200,
    examples=None,
    plain_pose_model=None,
    plain_natural_model=None,
    sets=tuple(TEST_SETS),
    blends=("seamless",),
) -> str:
    """Run the test sets named in ``sets`` (keys of TEST_SETS); returns the markdown (and
    writes example grids if asked).

    ``plain_*_model``: the iLAT* ablation's model (first stage trained without two-stream
    convolutions); without it ``ilat*`` runs the plain encoder on the iLAT model's weights.
    ``blends``: see :func:`evaluate` (e.g. ("seamless", "alpha") adds the plain paste's rows)."""
    parts = []
    for key, model, plain, n, make in (
        ("pose", pose_model, plain_pose_model, n_pose, lambda m: pose_cases(n_pose, m.resolution)),
        (
            "natural",
            natural_model,
            plain_natural_model,
            n_natural,
            lambda m: natural_cases(n_natural, m.resolution, guided=False),
        ),
        ("box", natural_model, plain_natural_model, n_natural, lambda m: box_cases(n_natural, m.resolution)),
        (
            "sketch",
            natural_model,
            plain_natural_model,
            n_natural,
            lambda m: natural_cases(n_natural, m.resolution, guided=True),
        ),
    ):
        if key not in sets:
            continue
        label = TEST_SETS[key]
        model, plain = _model(model), _model(plain)
        if model is None:
            continue
        if key == "sketch" and model.cond != "sketch":
            continue
        if plain is not None and (plain.resolution, plain.cond) != (model.resolution, model.cond):
            raise ValueError(
                f"the iLAT* model {plain.config.name!r} ({plain.resolution} px, cond "
                f"{plain.cond}) does not match {model.config.name!r} ({model.resolution} px, "
                f"cond {model.cond}): train it on the same data with --plain"
            )
        t0 = time.perf_counter()

        what = label.split(",")[0]

        def progress(i, what=what, n=n, t0=t0):
            if i % 10 == 0 or i == n:
                print(f"{what}: {i}/{n} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

        result = evaluate(
            make(model),
            model,
            keep_examples=4 if examples else 0,
            models={"ilat*": plain} if plain is not None else None,
            progress=progress,
            blends=blends,
        )
        star = (
            f"`{plain.config.name}` (first stage trained without two-stream convolutions)"
            if plain is not None
            else "the same weights with the plain encoder"
        )
        parts.append(table_markdown(f"{label} — model `{model.config.name}`; ilat* = {star}", result))
        if examples:
            path = f"{examples}_{key}.png"
            examples_png(result["examples"], list(result["mean"]), path)
            parts.append(
                f"![examples]({path.split('docs/')[-1]})\n\nColumns: input (mask "
                f"tinted magenta), ground truth, {', '.join(result['mean'])}."
            )
    return "\n\n".join(parts)
