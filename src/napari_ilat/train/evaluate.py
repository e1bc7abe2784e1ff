"""Held-out numbers for a model (``napari-ilat train eval``), all on the test split:

* first-stage reconstruction PSNR (10 log10(1/MSE) on [0,1] images; full quantized
  reconstructions, plain encoder), with the naive same-rate code's PSNR as a yardstick
  (:func:`napari_ilat.evaluation.metrics.thumbnail_code`);
* stage-2 perplexity exp(mean CE) over masked tokens, with and without the condition;
* pose models: the pose-following check. For held-out edit pairs, edit the *source* image
  inside the pair's mask with the true target pose and with a wrong pose, and count how often
  the true pose gives the higher PSNR inside the mask against the ground-truth target. Two
  wrong poses are reported: the source pose (the limbs should move but are told not to) and
  the target pose of another test pair. Ties (both edits give the same PSNR: in practice the
  same pixels, the model ignored the difference) are counted apart, as ``ties_*``;
* speed: median wall time of an edit of a 128x128 image with 30% masked.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from napari_ilat import edit  # the public API (lazy attribute of the package)
from napari_ilat.data import make_edit_pair, random_mask, split_seeds
from napari_ilat.engine.model import load_model
from napari_ilat.engine.vqgan import VQModel
from napari_ilat.evaluation.metrics import psnr, standard_error
from napari_ilat.train.stage1 import evaluate_reconstruction
from napari_ilat.train.stage2 import Stage2Pairs, perplexity, tokenize_items


def pose_following(
    model,
    n: int,
    split: str = "test",
    seed: int = 0,
    wrong=("source", "other"),
    progress=None,
    mode: str = "ilat",
    device="cpu",
    blend: str = "seamless",
    per_case: bool = False,
    **sampling,
) -> dict:
    """``sampling``: more edit() options for every edit (guidance, temperature, top_k, ...).
    ``per_case``: also each pair's in-mask PSNRs (``cases``: true / source / other lists), for
    paired comparisons of settings on the same pairs."""
    bad = set(wrong) - {"source", "other"}
    if bad or not wrong:
        raise ValueError(f"wrong poses must be 'source' and/or 'other', got {tuple(wrong)}")
    R = model.resolution
    seeds = split_seeds(split, n)
    pairs = [make_edit_pair(int(s), R) for s in seeds]
    wins_src = wins_other = ties_src = ties_other = 0
    p_true, p_src, p_other = [], [], []
    for i, p in enumerate(pairs):
        other = pairs[(i + 1) % n].target_pose
        kw = dict(model=model, seed=seed + i, device=device, mode=mode, blend=blend, **sampling)
        a = psnr(edit(p.source, p.mask, pose=p.target_pose, **kw), p.target, p.mask)
        p_true.append(a)
        if "source" in wrong:
            b = psnr(edit(p.source, p.mask, pose=p.source_pose, **kw), p.target, p.mask)
            wins_src += a > b
            ties_src += a == b
            p_src.append(b)
        if "other" in wrong:
            c = psnr(edit(p.source, p.mask, pose=other, **kw), p.target, p.mask)
            wins_other += a > c
            ties_other += a == c
            p_other.append(c)
        if progress:
            progress(i + 1, n)
    # each rate and mean with its standard error (binomial; of the mean): a rate near 90% over
    # 200 pairs is uncertain by about 2 points, so "met by half a point" there settles nothing
    out = {"n": n, "psnr_mask_true_pose": float(np.mean(p_true)), "psnr_mask_true_pose_se": standard_error(p_true)}
    if p_src:
        out.update(
            true_beats_source_pose=wins_src / n,
            true_beats_source_pose_se=_rate_se(wins_src, n),
            ties_source_pose=ties_src / n,
            psnr_mask_source_pose=float(np.mean(p_src)),
        )
    if p_other:
        out.update(
            true_beats_other_pose=wins_other / n,
            true_beats_other_pose_se=_rate_se(wins_other, n),
            ties_other_pose=ties_other / n,
            psnr_mask_other_pose=float(np.mean(p_other)),
        )
    if per_case:
        out["cases"] = {"true": p_true, "source": p_src, "other": p_other}
    return out


def _rate_se(hits: int, n: int) -> float:
    """The binomial standard error of the rate hits / n."""
    p = hits / n
    return float(np.sqrt(p * (1 - p) / n))


def edit_speed(model, n: int = 11, rate: float = 0.3, mode: str = "ilat", blend: str = "seamless") -> dict:
    rng = np.random.default_rng(0)
    image = (rng.random((128, 128, 3)) * 255).astype(np.uint8)
    mask = random_mask(rng, (128, 128), "box", rate)
    pose = make_edit_pair(0, 128).target_pose if model.cond == "pose" else None
    edit(image, mask, pose=pose, model=model, seed=0, device="cpu", mode=mode, blend=blend)  # warm-up
    times = []
    for i in range(n):
        t = time.perf_counter()
        edit(image, mask, pose=pose, model=model, seed=i, device="cpu", mode=mode, blend=blend)
        times.append(time.perf_counter() - t)
    return {
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "n": n,
        "masked_fraction": float(mask.mean()),
        "threads": torch.get_num_threads(),
    }


def evaluate(
    model_name,
    *,
    data=None,
    split="test",
    n_recon=100,
    n_ppl=200,
    n_pose=200,
    n_speed=11,
    device="cpu",
    seed=0,
    wrong=("source", "other"),
    plain=False,
    blend="seamless",
) -> dict:
    """``blend``: the compositing of the edits (pose following, speed), as ``edit(blend=)``.

    ``plain``: the model is an iLAT* ablation (first stage trained without two-stream
    convolutions), so its tokens come from the plain encoder and it edits in mode ``ilat*``.

    ``model_name`` may also be a first-stage run directory (``napari-ilat train vqgan
    --out DIR``): then only the reconstruction is measured, on the run's own data."""
    if Path(str(model_name)).is_dir():
        return _evaluate_first_stage_run(Path(str(model_name)), data, split, n_recon, device)
    model = load_model(model_name).to(device)
    if getattr(model, "kind", None) == "imagebart":
        raise ValueError(f"{model_name} is an ImageBART model: measure it with `napari-ilat bench imagebart`")
    mode = "ilat*" if plain else "ilat"
    data = data or ("pose" if model.cond == "pose" else "natural")
    R = model.resolution
    out = {"model": str(model_name), "data": data, "split": split, "mode": mode, "blend": blend}
    with torch.no_grad():
        if n_recon:
            out["reconstruction"] = evaluate_reconstruction(model.vqgan, data, R, n_recon, split=split, device=device)
        if n_ppl:
            ds = Stage2Pairs(data, split, R, n_ppl, model.cond, causal_frac=0.0)
            toks = tokenize_items(model.vqgan, ds, list(range(n_ppl)), plain, device)
            key = model.cond if model.cond in ("pose", "sketch") else None
            out["perplexity"] = {"masked_tokens": perplexity(model.transformer, toks, key, device)}
            if key:
                out["perplexity"]["masked_tokens_uncond"] = perplexity(model.transformer, toks, None, device)
    if n_pose and model.cond == "pose":
        out["pose_following"] = pose_following(model, n_pose, split, seed, wrong, mode=mode, device=device, blend=blend)
    if n_speed:
        out["speed_128px_30pct"] = edit_speed(model, n_speed, mode=mode, blend=blend)
    return out


def _evaluate_first_stage_run(run_dir: Path, data, split, n_recon, device) -> dict:
    from napari_ilat.train.common import read_run
    from napari_ilat.train.first_stage import load_first_stage_weights

    if n_recon < 1:
        raise ValueError("a first-stage run has only its reconstruction to measure: --n-recon must be >= 1")
    cfg, sd = load_first_stage_weights(run_dir)  # checks that this is a run directory
    run = read_run(run_dir)
    if run["stage"] != "vqgan":
        raise ValueError(
            f"{run_dir} is a {run['stage']!r} run; export it first "
            "(napari-ilat train export) and evaluate the exported NAME.json"
        )
    vq = VQModel(cfg)
    vq.load_state_dict(sd)
    data = data or run["train"]["data"]
    out = {"model": str(run_dir), "stage": "vqgan", "step": run["step"], "data": data, "split": split}
    with torch.no_grad():
        out["reconstruction"] = evaluate_reconstruction(
            vq.to(device), data, cfg.resolution, n_recon, split=split, device=device
        )
    return out
