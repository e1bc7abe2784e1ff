"""Seamless compositing: the generated content, shifted smoothly to meet the image at the
mask's edge.

The decoder's output never matches the photograph exactly where the mask ends: its colours
drift (the first stage reconstructs at ~20 dB), so a plain paste shows the mask's outline
and a colour cast over the whole region. Gradient-domain compositing (Perez et al., "Poisson
Image Editing", 2003; used after learned inpainting by Iizuka et al., 2017) keeps what the
model drew, its detail, and replaces its low frequencies at the seam by the image's: the
output inside the mask is

    generated + smooth(image - generated)

where ``smooth`` is the biharmonic fill (skimage.restoration.inpaint_biharmonic) of the
difference, known on the pixels around the mask. Linearity makes this the same as the
biharmonic fill of the image plus the generated content's own deviation from its biharmonic
fill: classical inpainting carries the colours in from the edge, the model adds what the
edge cannot tell (an arm at its new keypoints, texture, the sketched strokes).

Large masks: the solve grows faster than the masked area (a 256 x 256 hole takes ~1.3 s),
so above ``EXACT_PIXELS`` the difference is filled on a coarser grid and then solved exactly
on a band along the edge with the coarse fill as its inner boundary (the fill is smooth far
from the edge, where the coarse grid is enough).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["seamless", "BLENDS", "EXACT_PIXELS"]

BLENDS = ("seamless", "alpha")
EXACT_PIXELS = 128 * 128  # masked pixels solved exactly; more: coarse fill + exact edge band


def _fill(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    return inpaint_biharmonic(values, mask, channel_axis=-1)


def smooth_fill(values: np.ndarray, mask: np.ndarray, exact_pixels: int = EXACT_PIXELS) -> np.ndarray:
    """(H, W, C) float ``values`` known outside ``mask`` -> the biharmonic fill inside it (the
    known values unchanged); coarse-to-fine above ``exact_pixels`` masked pixels."""
    n = int(mask.sum())
    if n == 0 or mask.all():
        return values.copy() if n == 0 else np.zeros_like(values)
    if n <= exact_pixels:
        return _fill(values, mask)
    k = int(np.ceil(np.sqrt(n / exact_pixels)))
    h, w = mask.shape
    ph, pw = -h % k, -w % k
    known = np.pad(~mask, ((0, ph), (0, pw)))
    vals = np.pad(np.where(mask[..., None], 0.0, values), ((0, ph), (0, pw), (0, 0)))
    # block means over the known pixels of each k x k block; a block without any is unknown
    cnt = known.reshape(known.shape[0] // k, k, -1, k).sum((1, 3))
    sums = vals.reshape(vals.shape[0] // k, k, vals.shape[1] // k, k, -1).sum((1, 3))
    coarse_mask = cnt == 0
    coarse = _fill(sums / np.maximum(cnt, 1)[..., None], coarse_mask) if coarse_mask.any() else sums / cnt[..., None]
    up = ndimage.zoom(coarse, (k, k, 1), order=1, mode="nearest", grid_mode=True)[:h, :w]
    # exact on the band within 3 blocks of the edge; deeper in, the coarse fill is the boundary
    band = mask & (ndimage.distance_transform_edt(mask) <= 3 * k)
    return _fill(np.where(mask[..., None], up, values), band)


def seamless(
    generated: np.ndarray, image: np.ndarray, mask: np.ndarray, exact_pixels: int = EXACT_PIXELS
) -> np.ndarray:
    """(H, W, C) ``generated`` and ``image`` in [0, 1], ``mask`` (H, W) bool (the pixels to
    replace; the others are where the two are compared) -> the generated content corrected
    to meet the image at the mask's edge (module doc), clipped to [0, 1]. Outside the mask the
    result is the image."""
    if not mask.any() or mask.all():
        return generated.copy() if mask.all() else image.copy()
    diff = np.where(mask[..., None], 0.0, image - generated)
    return np.clip(generated + smooth_fill(diff, mask, exact_pixels), 0.0, 1.0)
