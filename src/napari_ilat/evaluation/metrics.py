"""Image-quality metrics, reported the standard way (DESIGN.md section 6).

PSNR = 10 log10(1 / MSE) on [0, 1] images (the iLAT reference code writes 1 - 10 log10 MSE,
one dB too generous: not copied), SSIM from skimage.metrics (data_range=1, colour via
channel_axis), MAE. Each over the whole image and inside a mask. FID needs Inception weights
that cannot be had offline, so it is not reported.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity
from skimage.transform import resize


def to_unit(image) -> np.ndarray:
    """uint8/uint16/bool/float image -> float64 in [0, 1]."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    return image.astype(np.float64)


PSNR_CAP = 50.0  # dB: for means over cases, where a flat hole reproduced exactly is infinite


def psnr(a, b, mask=None, cap: float | None = None) -> float:
    """10 log10(1 / MSE) on [0, 1] images (inside ``mask`` when given); ``cap``: at most this."""
    a, b = to_unit(a), to_unit(b)
    d = (a - b) ** 2
    mse = d[mask].mean() if mask is not None else d.mean()
    value = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return value if cap is None else min(cap, value)


def mae(a, b, mask=None) -> float:
    d = np.abs(to_unit(a) - to_unit(b))
    return float(d[mask].mean() if mask is not None else d.mean())


def hue_differences(reference, image, min_saturation: float = 0.15, min_value: float = 0.15):
    """Per pixel: (hue difference in degrees, circular 0-180, of ``image`` from ``reference``,
    RGB; whether the reference pixel is coloured, i.e. HSV saturation and value both >= the
    minimums: hue means nothing for greys and near-blacks; the reference in HSV)."""
    from skimage.color import rgb2hsv

    ha, hb = rgb2hsv(to_unit(reference)), rgb2hsv(to_unit(image))
    d = np.abs(ha[..., 0] - hb[..., 0]) * 360.0
    return np.minimum(d, 360.0 - d), (ha[..., 1] >= min_saturation) & (ha[..., 2] >= min_value), ha


def hue_error(reference, image, min_saturation: float = 0.15, min_value: float = 0.15) -> float:
    """Mean of :func:`hue_differences` over the reference's coloured pixels; nan if there are none."""
    d, keep, _ = hue_differences(reference, image, min_saturation, min_value)
    return float(d[keep].mean()) if keep.any() else float("nan")


def ssim(a, b, mask=None) -> float:
    """Mean SSIM; with a mask, the mean of the SSIM map over the masked pixels."""
    a, b = to_unit(a), to_unit(b)
    channel_axis = -1 if a.ndim == 3 else None
    _, smap = structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis, full=True)
    if smap.ndim == 3:
        smap = smap.mean(-1)
    return float(smap[mask].mean() if mask is not None else smap.mean())


def standard_error(values) -> float:
    """The standard error of the mean of ``values``: 0 for one value; nan, without numpy's
    warning, when one is not finite (an edit equal to its target has an infinite PSNR, and the
    mean is infinite too)."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return 0.0
    return float(v.std(ddof=1) / np.sqrt(len(v))) if np.isfinite(v).all() else float("nan")


def paired_difference(a, b) -> tuple[float, float]:
    """The mean of ``a - b`` over cases measured both ways (same cases, same seeds) and its
    standard error (0 for a single case): how the sweeps report one setting against another."""
    d = np.asarray(a, float) - np.asarray(b, float)
    return float(d.mean()), standard_error(d)


def all_metrics(result, target, mask) -> dict:
    """PSNR / SSIM / MAE over the whole image and inside ``mask``."""
    mask = np.asarray(mask, bool)
    return {
        "psnr": psnr(result, target),
        "psnr_mask": psnr(result, target, mask),
        "ssim": ssim(result, target),
        "ssim_mask": ssim(result, target, mask),
        "mae": mae(result, target),
        "mae_mask": mae(result, target, mask),
    }


def thumbnail_code(image, factor: int, n_values: int) -> np.ndarray:
    """A naive image code with the bit budget of a VQ first stage, as a yardstick for its PSNR.

    A first stage with downsampling ``factor`` and ``n_values`` codebook entries stores one
    of ``n_values`` symbols per ``factor x factor`` patch. This spends the same budget the
    obvious way: an anti-aliased thumbnail (one pixel per patch) whose colours are quantized
    to ``L^3 <= n_values`` values (``L`` uniform levels per channel; 512 -> 8 levels, 3 bits
    each), upsampled back with bicubic interpolation. A learned first stage should beat it;
    one that does not has not learned to spend its bits yet.

    ``image``: HxWx3 (uint8 or float in [0, 1]) with H, W divisible by ``factor``.
    Returns float64 HxWx3 in [0, 1].
    """
    x = to_unit(image)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {x.shape}")
    h, w = x.shape[0] // factor, x.shape[1] // factor
    if factor < 1 or h * factor != x.shape[0] or w * factor != x.shape[1]:
        raise ValueError(f"image of {x.shape[0]}x{x.shape[1]} is not divisible by factor {factor}")
    levels = int(round(n_values ** (1 / 3)))
    if levels**3 > n_values:  # round() may overshoot (1000 -> 10 is fine, 999 -> 10 is not)
        levels -= 1
    if levels < 2:
        raise ValueError(f"n_values={n_values} leaves fewer than 2 levels per channel")
    small = np.clip(resize(x, (h, w), order=3, anti_aliasing=True), 0.0, 1.0)
    # mid-rise uniform quantizer: level k stands for the middle of [k/L, (k+1)/L)
    small = (np.minimum(np.floor(small * levels), levels - 1) + 0.5) / levels
    return np.clip(resize(small, x.shape[:2], order=3), 0.0, 1.0)
