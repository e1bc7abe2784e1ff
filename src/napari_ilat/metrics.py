"""Image-quality metrics, reported the standard way (DESIGN.md section 6).

PSNR = 10 log10(1 / MSE) on [0, 1] images (the iLAT reference code writes 1 - 10 log10 MSE,
one dB too generous: not copied), SSIM from skimage.metrics (data_range=1, colour via
channel_axis), MAE. Each over the whole image and inside a mask. FID needs Inception weights
that cannot be had offline, so it is not reported.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def to_unit(image) -> np.ndarray:
    """uint8/uint16/bool/float image -> float64 in [0, 1]."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    return image.astype(np.float64)


def psnr(a, b, mask=None) -> float:
    a, b = to_unit(a), to_unit(b)
    d = (a - b) ** 2
    mse = d[mask].mean() if mask is not None else d.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def mae(a, b, mask=None) -> float:
    d = np.abs(to_unit(a) - to_unit(b))
    return float(d[mask].mean() if mask is not None else d.mean())


def ssim(a, b, mask=None) -> float:
    """Mean SSIM; with a mask, the mean of the SSIM map over the masked pixels."""
    a, b = to_unit(a), to_unit(b)
    channel_axis = -1 if a.ndim == 3 else None
    _, smap = structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis, full=True)
    if smap.ndim == 3:
        smap = smap.mean(-1)
    return float(smap[mask].mean() if mask is not None else smap.mean())


def all_metrics(result, target, mask) -> dict:
    """PSNR / SSIM / MAE over the whole image and inside ``mask``."""
    mask = np.asarray(mask, bool)
    return {
        "psnr": psnr(result, target), "psnr_mask": psnr(result, target, mask),
        "ssim": ssim(result, target), "ssim_mask": ssim(result, target, mask),
        "mae": mae(result, target), "mae_mask": mae(result, target, mask),
    }
