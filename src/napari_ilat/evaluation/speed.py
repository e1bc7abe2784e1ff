"""Speed benchmark (``napari-ilat bench speed``): how edit time grows with the masked area.

Measures, in one process and on one device, medians over repeated runs of
``edit()`` end to end and the sampler alone, in ``ilat`` (cached), ``ilat`` no-cache (the
whole sequence recomputed for every token, as the official code does) and ``taming`` mode,
at several masked rates, masks being token-aligned boxes at seeded random positions.
Random weights are fine for speed: the work per token does not depend on the values.
These are benchmarks, never unit tests: the machines are shared and noisy.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
import torch

from napari_ilat.engine.convert import ilat_ffhq_config
from napari_ilat.engine.editing import edit, resolve_device
from napari_ilat.engine.model import ILATModel, ModelConfig
from napari_ilat.engine.sampler import SamplingOptions, sample_tokens
from napari_ilat.engine.transformer import TransformerConfig
from napari_ilat.engine.vqgan import VQGANConfig

PRESETS = {
    "tiny": lambda: ILATModel.tiny(resolution=32),
    # the size we plan to ship: 128 px, f = 8, 16x16 tokens
    "default": lambda: ILATModel(ModelConfig()),
    # the paper's: taming f16 first stage at 256 px, 12 x 768 transformer, 256 image tokens
    "paper": lambda: ILATModel(
        ModelConfig(
            VQGANConfig.taming_f16(),
            TransformerConfig(vocab_size=1024, grid=16, n_layer=12, n_head=12, n_embd=768),
            name="paper-size",
        )
    ),
    # iLAT's published FFHQ shapes (what `napari-ilat convert ilat` produces), random weights
    "ilat-ffhq": lambda: ILATModel(ilat_ffhq_config()),
}


def token_box_mask(res: int, factor: int, rate: float, rng) -> tuple[np.ndarray, float]:
    """A pixel mask covering a box of whole tokens, ~``rate`` of the grid, at a random place.
    Returns the mask and the exact masked-token rate."""
    grid = res // factor
    n = max(1, round(rate * grid * grid))
    h = max(1, min(grid, round(np.sqrt(n))))
    w = max(1, min(grid, round(n / h)))
    r, c = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
    mask = np.zeros((res, res), bool)
    mask[r * factor : (r + h) * factor, c * factor : (c + w) * factor] = True
    return mask, h * w / grid**2


def _median_times(fns: dict, repeats: int, sync) -> dict:
    """Median seconds of each fn(i), i = 1..repeats, after one warm-up call each. The fns
    run round-robin so that a slow spell on a shared machine hits all of them alike."""
    times = {name: [] for name in fns}
    for i in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn(i)
            sync()
            if i:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


DEFAULT_RATES = "0.05,0.066,0.1,0.2,0.32,0.45,0.6"  # the paper's 6.6% and 32% among them

VARIANTS = {  # timed variant -> (edit() keywords, sample_tokens() keywords)
    "ilat": ({}, {}),
    "ilat_nocache": ({"cache": False}, {"cache": False}),
    "taming": ({"mode": "taming"}, {"mode": "taming"}),
}


def _setup(preset: str, device, threads):
    """(device, the preset's model in eval mode on it, a sync function, resolution, factor)."""
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    model = PRESETS[preset]().to(dev).eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return dev, model, sync, model.resolution, model.config.vqgan.factor


def speed(preset="default", rates=(0.066, 0.3), repeats=5, device="cpu", threads=None) -> dict:
    dev, model, sync, res, f = _setup(preset, device, threads)
    t = model.transformer
    n_tokens = t.config.n_tokens
    image = (np.random.default_rng(0).random((res, res, 3)) * 255).astype(np.uint8)
    tokens = torch.randint(0, t.config.vocab_size, (n_tokens,), generator=torch.Generator().manual_seed(0)).to(dev)
    greedy = SamplingOptions(greedy=True)
    # a model with no unconditional mode (converted iLAT) samples under an empty stroke map,
    # as edit() gives it when no sketch is drawn
    cond = torch.zeros(1, 1, res, res, device=dev) if getattr(t, "requires_condition", False) else None
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    rows = []
    for rate in rates:
        masks = [token_box_mask(res, f, rate, np.random.default_rng(i)) for i in range(repeats + 1)]
        known = [torch.from_numpy(~m.reshape(res // f, f, res // f, f).any((1, 3)).flatten()).to(dev) for m, _ in masks]
        row = {"rate": masks[0][1], "masked_tokens": round(masks[0][1] * n_tokens)}
        row["edit"] = _median_times(
            {
                name: lambda i, kw=kw, masks=masks: edit(image, masks[i][0], model=model, seed=i, device=dev, **kw)
                for name, (kw, _) in VARIANTS.items()
            },
            repeats,
            sync,
        )
        row["sample"] = _median_times(
            {
                name: lambda i, kw=kw, known=known: sample_tokens(t, tokens, known[i], cond, options=greedy, **kw)
                for name, (_, kw) in VARIANTS.items()
            },
            repeats,
            sync,
        )
        rows.append(row)
    return {
        "preset": preset,
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "params_transformer": sum(p.numel() for p in t.parameters()),
        "params_vqgan": sum(p.numel() for p in model.vqgan.parameters()),
        "repeats": repeats,
        "load": (load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")),
        "rows": rows,
    }


def speed_markdown(r: dict) -> str:
    lines = [
        f"Preset `{r['preset']}` ({r['params_vqgan'] / 1e6:.1f} M first-stage, "
        f"{r['params_transformer'] / 1e6:.1f} M transformer parameters, random weights), "
        f"device {r['device']} ({r['cpu']}, {r['threads']} threads), torch {r['torch']}, "
        f"median of {r['repeats']} runs after one warm-up, modes interleaved; 1-min load "
        f"average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after.",
    ]
    for what, title in (
        ("edit", "Whole edit (`edit()`: encode, sample, decode, composite)"),
        ("sample", "Sampling only (`sample_tokens`, greedy, batch 1)"),
    ):
        lines += [
            "",
            f"{title}:",
            "",
            "| masked (tokens) | iLAT cached (s) | iLAT no-cache (s) | Taming (s) "
            "| Taming / iLAT | no-cache / cached | iLAT tokens/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            m = row[what]
            lines.append(
                f"| {row['rate']:.1%} ({row['masked_tokens']}) | {m['ilat']:.3f} | "
                f"{m['ilat_nocache']:.3f} | {m['taming']:.3f} | {m['taming'] / m['ilat']:.1f}x | "
                f"{m['ilat_nocache'] / m['ilat']:.1f}x | {row['masked_tokens'] / m['ilat']:.0f} |"
            )
    return "\n".join(lines)


LABELS = {
    "ilat": "iLAT (cached)",
    "ilat_nocache": "iLAT no-cache (reference code's way)",
    "taming": "Taming (raster AR)",
}


def speed_plot(r: dict, path) -> None:
    """Time against masked rate, one panel for the whole edit and one for sampling."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ValueError("--plot needs matplotlib: pip install 'napari-ilat[bench]'") from e
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    rates = [100 * row["rate"] for row in r["rows"]]
    for ax, what, title in zip(axes, ("edit", "sample"), ("whole edit", "sampling only")):
        for mode, style in zip(VARIANTS, ("o-", "s--", "^-")):
            ax.plot(rates, [row[what][mode] for row in r["rows"]], style, label=LABELS[mode])
        ax.set(
            xlabel="masked tokens (%)",
            ylabel="seconds (median)",
            ylim=(0, None),
            title=f"{title}, preset '{r['preset']}', {r['device']}",
        )
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def big_image(size: int = 8000, mask_side: int = 64, repeats: int = 3, model="natural", threads=None) -> dict:
    """Edit time and peak memory for a small mask on a big RGB uint8 image (the work and
    memory should be bounded by the model's window, not the image). Peak memory is the
    growth of the process's peak resident set over what it held with the image made and the
    model loaded (Linux ``ru_maxrss``), so it includes the output array (one image's bytes)."""
    import resource

    from napari_ilat.engine.editing import edit

    if threads:
        torch.set_num_threads(threads)
    img = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    r = c = size // 2
    mask[r : r + mask_side, c : c + mask_side] = True
    win = (slice(max(0, r - 128), r + mask_side + 128), slice(max(0, c - 128), c + mask_side + 128))
    edit(img[win], mask[win], model=model, seed=0, device="cpu")  # model load, warm-up

    def peak_gib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB

    base, times = peak_gib(), []
    for i in range(repeats):
        t = time.perf_counter()
        edit(img, mask, model=model, seed=i, device="cpu")
        times.append(time.perf_counter() - t)
    return {
        "image": f"{size}x{size}x3 uint8",
        "mask": f"{mask_side}x{mask_side}",
        "median_s": statistics.median(times),
        "peak_above_gib": peak_gib() - base,
        "image_gib": img.nbytes / 2**30,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "load": os.getloadavg()[0],
    }


def regenerate_speed(preset="default", rate=0.066, repeats=5, device="cpu", threads=None) -> dict:
    """Whole edit at one masked rate, iLAT vs Taming mode, the way the widget's Generate is
    pressed: ``cold`` is the first edit of an image + mask (the first-stage cache emptied
    before every call), ``warm`` a repeated one (new seed, same image and mask: the encoding
    and the decode reference come from the cache). One mask, seeds 1..repeats, the four
    variants interleaved; medians."""
    from napari_ilat.engine.reuse import FIRST_STAGE_CACHE

    dev, model, sync, res, f = _setup(preset, device, threads)
    image = (np.random.default_rng(0).random((res, res, 3)) * 255).astype(np.uint8)
    mask, exact = token_box_mask(res, f, rate, np.random.default_rng(0))

    def run(mode, warm):
        def fn(i):
            if not warm:
                FIRST_STAGE_CACHE.clear()
            edit(image, mask, model=model, mode=mode, seed=i, device=dev)

        return fn

    for mode in ("ilat", "taming"):  # fill the cache for the warm runs
        edit(image, mask, model=model, mode=mode, seed=0, device=dev)
    fns = {f"{mode}_{kind}": run(mode, kind == "warm") for mode in ("ilat", "taming") for kind in ("cold", "warm")}
    # warm variants first in each round, so that a cold run's clear() never empties their entry
    order = ["ilat_warm", "taming_warm", "ilat_cold", "taming_cold"]
    times = _median_times({k: fns[k] for k in order}, repeats, sync)
    for mode in ("ilat", "taming"):  # the cold runs emptied the cache: re-time warm alone
        edit(image, mask, model=model, mode=mode, seed=0, device=dev)
    times.update(_median_times({k: fns[k] for k in ("ilat_warm", "taming_warm")}, repeats, sync))
    return {
        "preset": preset,
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rate": exact,
        "masked_tokens": int(round(exact * model.config.transformer.n_tokens)),
        "repeats": repeats,
        "times": times,
    }


def regenerate_markdown(r: dict) -> str:
    t = r["times"]
    return "\n".join(
        [
            f"Preset `{r['preset']}`, {r['rate']:.1%} masked ({r['masked_tokens']} tokens), device {r['device']}, "
            f"{r['threads']} threads, torch {r['torch']}, median of {r['repeats']}:",
            "",
            "| edit | iLAT (s) | Taming (s) | Taming / iLAT |",
            "|---|---|---|---|",
            f"| first edit of the image + mask (cold) | {t['ilat_cold']:.3f} | {t['taming_cold']:.3f} | "
            f"{t['taming_cold'] / t['ilat_cold']:.1f}x |",
            f"| repeated Generate: new seed (warm) | {t['ilat_warm']:.3f} | {t['taming_warm']:.3f} | "
            f"{t['taming_warm'] / t['ilat_warm']:.1f}x |",
        ]
    )


def native_speed(size: int = 1024, mask_side: int = 512, model="natural", threads=None, seed=0, device="cpu") -> dict:
    """One edit of a ``mask_side`` square mask in the middle of a ``size`` square RGB image at
    native resolution (sliding windows), and the same with resolution="resize", on ``device``
    (an edit returns host arrays, so its time includes the device's work)."""
    from napari_ilat.engine.editing import cached_model, edit_with_info

    if threads:
        torch.set_num_threads(threads)
    m = cached_model(model)
    img = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    mask = np.zeros((size, size), bool)
    r = (size - mask_side) // 2
    mask[r : r + mask_side, r : r + mask_side] = True
    edit(img[:160, :160], mask[r - 40 : r + 120, r - 40 : r + 120], model=m, seed=0, device=device)  # warm-up
    out = {"image": f"{size}x{size}x3 uint8", "mask": f"{mask_side}x{mask_side}", "model": str(model)}
    out["device"] = str(device)
    for resolution in ("native", "resize"):
        counted = []
        t = time.perf_counter()
        edit_with_info(
            img,
            mask,
            model=m,
            seed=seed,
            device=device,
            resolution=resolution,
            progress=lambda d, n, c=counted: c.append(n),
        )
        out[resolution] = {"seconds": time.perf_counter() - t, "tokens": counted[-1] if counted else 0}
    out["threads"] = torch.get_num_threads()
    out["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return out
