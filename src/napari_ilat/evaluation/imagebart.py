"""``napari-ilat bench imagebart``: ImageBART against iLAT, Taming and the classical
baselines on held-out natural patches (issue 15), and its sampling cost.

Test sets (seeds from the test split, photographs never used in training):

* ``upper_half``: the paper's upper-half completion. The top half of the patch is masked
  (the bottom half is given). Raster AR (``taming``) samples the top half before it reaches
  any known token, so it cannot see what it must match; ImageBART's encoders see the whole
  coarser map at every stage; iLAT sees every known token as its prefix.
* ``box`` and ``brush``: the free-form masks of the natural test set, one kind each
  (``data.make_natural_sample``, 10-40% masked).

Each set runs through :func:`napari_ilat.evaluation.quality.evaluate` (the same scoring,
PSNR / SSIM / MAE over the image and in the mask) with ``imagebart`` on the ImageBART model
and the other learned modes on the iLAT model, which is where the comparison hooks are.
Speed: seconds per sampled token map against the masked fraction and against T (sampling
cost does not depend on the weights, so random models of the trained size stand in).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from napari_ilat.engine.editing import cached_model
from napari_ilat.engine.imagebart import ImageBART, ImageBARTConfig, is_imagebart, sample_imagebart
from napari_ilat.evaluation.quality import evaluate, examples_png, table_markdown

TASKS = {
    "upper_half": "Upper-half completion (top half regenerated from the bottom half), natural patches",
    "box": "Box masks, natural patches (no guidance)",
    "brush": "Brush masks, natural patches (no guidance)",
}
#: the learned methods compared with ImageBART (run on the iLAT model)
BASELINES = ("ilat", "taming")


def upper_half_mask(resolution: int) -> np.ndarray:
    mask = np.zeros((resolution, resolution), bool)
    mask[: resolution // 2] = True
    return mask


def natural_cases(task: str, n: int, resolution: int, split: str = "test"):
    """``(seed, source, target, mask, cond)`` for ``task`` (a key of :data:`TASKS`); source =
    target (inpainting), no condition."""
    from napari_ilat.data import make_natural_sample, natural_patch, split_seeds

    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    for seed in split_seeds(split, n):
        if task == "upper_half":
            image = natural_patch(int(seed), resolution)[0]
            yield int(seed), image, image, upper_half_mask(resolution), {}
        else:
            s = make_natural_sample(int(seed), resolution, mask_kinds=(task,), rate_range=(0.1, 0.4))
            yield int(seed), s.image, s.image, s.mask, {}


def compare(
    imagebart_model,
    ilat_model=None,
    *,
    tasks=tuple(TASKS),
    n: int = 100,
    baselines=BASELINES,
    classical: bool = True,
    keep_examples: int = 0,
    progress=None,
    blends=("seamless",),
) -> dict:
    """{task: quality.evaluate result} with ``imagebart`` on ``imagebart_model`` and
    ``baselines`` (iLAT-model modes) on ``ilat_model`` (None: ImageBART and the classical
    methods only). Both models must work at the same resolution. ``blends``: the learned
    methods' compositing (:func:`napari_ilat.evaluation.quality.evaluate`)."""
    ib = cached_model(imagebart_model)
    if not is_imagebart(ib):
        raise ValueError(f"{getattr(ib.config, 'name', ib)!r} is not an ImageBART model")
    il = None if ilat_model is None else cached_model(ilat_model)
    if il is not None and il.resolution != ib.resolution:
        raise ValueError(f"the iLAT model works at {il.resolution} px, the ImageBART model at {ib.resolution} px")
    methods = ("imagebart", *(baselines if il is not None else ()))
    results = {}
    for task in tasks:
        cases = natural_cases(task, n, ib.resolution)
        results[task] = evaluate(
            cases,
            il if il is not None else ib,
            methods=methods,
            classical=classical,
            keep_examples=keep_examples,
            models={"imagebart": ib},
            blends=blends,
            progress=None if progress is None else (lambda i, task=task: progress(task, i)),
        )
    return results


def compare_markdown(results: dict, imagebart_name: str, ilat_name: str | None, examples: str | None = None) -> str:
    parts = []
    for task, result in results.items():
        models = f"imagebart = `{imagebart_name}`" + (f", ilat / taming = `{ilat_name}`" if ilat_name else "")
        parts.append(table_markdown(f"{TASKS[task]} — {models}", result))
        if examples and result["examples"]:
            path = f"{examples}_{task}.png"
            examples_png(result["examples"], list(result["mean"]), path)
            parts.append(
                f"![examples]({path.split('docs/')[-1]})\n\nColumns: input (mask tinted magenta), "
                f"ground truth, {', '.join(result['mean'])}."
            )
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- speed


def sampling_speed(
    like=None,
    *,
    stages=(2, 3, 4),
    fractions=(0.066, 0.3, 0.5),
    repeats: int = 3,
    device="cpu",
    seed: int = 0,
) -> list[dict]:
    """Median seconds of :func:`sample_imagebart` (cached and, for reference, uncached) for
    a token map with the top ``fraction`` of its rows masked, for each T in ``stages``.

    ``like``: an ImageBART model (or its config) whose sizes to time (default: the
    ImageBARTConfig defaults); the weights are random (cost does not depend on them)."""
    import torch

    if like is None:
        base = ImageBARTConfig()
    else:
        base = like if isinstance(like, ImageBARTConfig) else cached_model(like).bart.config
    rows = []
    for t in stages:
        cfg = ImageBARTConfig(**{**base.to_dict(), "n_stages": t, "betas": None})
        torch.manual_seed(seed)
        net = ImageBART(cfg).to(device).eval()
        n = cfg.n_tokens
        for frac in fractions:
            known = torch.ones(n, dtype=torch.bool, device=device)
            n_masked = max(1, round(frac * n))
            known[:n_masked] = False
            tokens = torch.zeros(n, dtype=torch.long, device=device)
            row = {"stages": t, "masked_fraction": n_masked / n, "masked_tokens": n_masked}
            for cache in (True, False):
                times = []
                for r in range(repeats):
                    g = torch.Generator(device=device).manual_seed(r)
                    t0 = time.perf_counter()
                    sample_imagebart(net, tokens, known, generator=g, cache=cache)
                    if device != "cpu":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                row["seconds" if cache else "seconds_uncached"] = statistics.median(times)
            rows.append(row)
            print(f"T={t} masked {n_masked}/{n}: {row['seconds']:.3f} s", file=sys.stderr, flush=True)
    return rows


def speed_markdown(rows: list[dict]) -> str:
    lines = [
        "| T | masked tokens | cached s | uncached s | cached speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stages']} | {r['masked_tokens']} ({100 * r['masked_fraction']:.1f}%) | {r['seconds']:.3f} "
            f"| {r['seconds_uncached']:.3f} | {r['seconds_uncached'] / r['seconds']:.1f}x |"
        )
    return "\n".join(lines)


__all__ = [
    "TASKS",
    "BASELINES",
    "upper_half_mask",
    "natural_cases",
    "compare",
    "compare_markdown",
    "sampling_speed",
    "speed_markdown",
]
