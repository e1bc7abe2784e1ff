"""Sketch conditions: XDoG edge maps, rasterised user strokes, and their composition.

Edge-map convention (used everywhere in napari-ilat): a one-channel float32 HxW array in
[0, 1] where **1 = stroke/edge** and 0 = empty, i.e. light strokes on black, like the
strokes a user draws. ``xdog`` therefore returns ``edges = 1 - E`` with E the XDoG value
of DESIGN.md section 3:

    grey in 0..255 (ITU-R 601 luma: 0.299 R + 0.587 G + 0.114 B)
    D = G_sigma(grey) - 0.97 * G_{k sigma}(grey),      sigma = 1.5, k = 2.5
    E = clip(1 + tanh(200 * (D - 0.1)), 0, 1)
    edges = 1 - E

Gaussians are ``scipy.ndimage.gaussian_filter`` with its defaults (mode='reflect',
truncate=4.0), in float64. E is ~1 on flat bright areas and drops on the dark side of
edges; note that nearly black flat areas (grey < 0.1 / 0.03 = 3.3) also come out as
"ink" (edges = 1), as the formula says.

Valid masks: ``xdog(image, valid=m)`` ignores pixels where ``m`` is False: both
Gaussians become normalised convolutions G(grey * m) / G(m), with the invalid pixels
zeroed by ``np.where`` first (so NaN/inf there cannot propagate), and the output is 0 (no
edge) wherever ``m`` is False. Changing invalid pixels changes nothing in the output, bit
for bit. Edit time uses this to build the sketch outside the mask without leaking the old
content under it (``compose_sketch``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from napari_ilat.engine.render import bbox_slices, pixel_grid, segment_offset

XDOG_SIGMA = 1.5
XDOG_K = 2.5
XDOG_TAU = 0.97
XDOG_EPSILON = 0.1
XDOG_PHI = 200.0
LUMA = (0.299, 0.587, 0.114)


def to_grey255(image: np.ndarray) -> np.ndarray:
    """float64 grey image in 0..255 from uint8/uint16 (scaled to 0..255) or float (assumed
    in [0, 1]) images, HxW or HxWxC (RGB(A): ITU-R 601 luma; alpha ignored)."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        g = a.astype(np.float64)
    elif a.dtype == np.uint16:
        g = a.astype(np.float64) * (255.0 / 65535.0)
    else:  # float (or bool): [0, 1]
        g = a.astype(np.float64) * 255.0
    if g.ndim == 3:
        if g.shape[2] >= 3:
            g = LUMA[0] * g[..., 0] + LUMA[1] * g[..., 1] + LUMA[2] * g[..., 2]
        else:
            g = g[..., 0]
    elif g.ndim != 2:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {a.shape}")
    return g


def xdog(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    sigma: float = XDOG_SIGMA,
    k: float = XDOG_K,
    tau: float = XDOG_TAU,
    epsilon: float = XDOG_EPSILON,
    phi: float = XDOG_PHI,
) -> np.ndarray:
    """XDoG edge map (1 = edge), float32 HxW in [0, 1]; see the module docstring.

    ``valid``: optional bool HxW; pixels where it is False do not influence the result
    anywhere and get 0. ``valid`` all True gives exactly the same as ``valid=None``.
    """
    grey = to_grey255(image)
    if valid is None or bool(np.all(valid)):
        g1 = ndimage.gaussian_filter(grey, sigma)
        g2 = ndimage.gaussian_filter(grey, sigma * k)
        valid_b = None
    else:
        valid_b = np.asarray(valid, bool)
        if valid_b.shape != grey.shape:
            raise ValueError(f"valid mask shape {valid_b.shape} != image shape {grey.shape}")
        zeroed = np.where(valid_b, grey, 0.0)
        vf = valid_b.astype(np.float64)
        g1 = _normalised(zeroed, vf, sigma)
        g2 = _normalised(zeroed, vf, sigma * k)
    d = g1 - tau * g2
    e = np.clip(1.0 + np.tanh(phi * (d - epsilon)), 0.0, 1.0)
    edges = 1.0 - e
    if valid_b is not None:
        edges = np.where(valid_b, edges, 0.0)
    return edges.astype(np.float32)


def _normalised(zeroed: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    num = ndimage.gaussian_filter(zeroed, sigma)
    den = ndimage.gaussian_filter(weights, sigma)
    ok = den > 1e-12
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0)


def rasterize_strokes(
    strokes: Sequence[np.ndarray],
    shape: tuple[int, int],
    width: float | Sequence[float] = 2.0,
) -> np.ndarray:
    """Rasterise polylines into an anti-aliased edge map (1 = stroke), float32 HxW.

    ``strokes``: sequence of (N, 2) arrays of (row, col) vertices in pixel coordinates
    (pixel centres on integers; N = 1 draws a dot). ``width``: stroke width in pixels,
    one for all strokes or one per stroke. A pixel at distance d from a stroke's centre
    line gets clip(width / 2 + 0.5 - d, 0, 1); overlapping strokes take the maximum.
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), np.float32)
    widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(strokes),))
    grid = pixel_grid(h, w)
    for pts, wd in zip(strokes, widths):
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            continue
        half = float(wd) / 2.0
        if len(pts) == 1:
            pts = np.vstack([pts, pts])
        for p0, p1 in zip(pts[:-1], pts[1:]):
            sl = bbox_slices(
                min(p0[1], p1[1]) - half,
                min(p0[0], p1[0]) - half,
                max(p0[1], p1[1]) + half,
                max(p0[0], p1[0]) + half,
                (h, w),
                pad=1.0,
            )
            if sl is None:
                continue
            yy, xx = grid[0][sl], grid[1][sl]
            qx, qy = segment_offset(xx, yy, (p0[1], p0[0]), (p1[1], p1[0]))
            cov = np.clip(half + 0.5 - np.sqrt(qx * qx + qy * qy), 0.0, 1.0)
            np.maximum(out[sl], cov, out=out[sl])
    return out


def compose_sketch(image: np.ndarray, mask: np.ndarray, strokes_map: np.ndarray) -> np.ndarray:
    """The edit-time sketch condition, float32 HxW in [0, 1]: ``xdog(image, valid=~mask)``
    outside the mask, ``strokes_map`` (e.g. from ``rasterize_strokes``) inside it.

    Pixels of ``image`` inside ``mask`` do not influence the result.
    """
    mask = np.asarray(mask, bool)
    strokes_map = np.asarray(strokes_map, dtype=np.float32)
    if strokes_map.shape != mask.shape:
        raise ValueError(f"strokes_map shape {strokes_map.shape} != mask shape {mask.shape}")
    outside = xdog(image, valid=~mask)
    return np.where(mask, np.clip(strokes_map, 0.0, 1.0), outside).astype(np.float32)


def thin_strokes(edges: np.ndarray, mask: np.ndarray, drop_up_to: int = 4, width: int = 2) -> np.ndarray:
    """The ink of ``edges`` inside ``mask`` drawn as a user draws it, float32 HxW in {0, 1}.

    XDoG maps are dense (a third of a brush mask's pixels are ink, dark regions count as
    ink); a user draws a few thin lines. Stand-in: the ink's 1 px skeleton, its pieces of at
    most ``drop_up_to`` px (8-connected) dropped, widened to ``width`` px by a square. Used
    to train on user-like strokes (``train transformer --thin-strokes``) and to measure them
    (scripts/thin_strokes.py).
    """
    from skimage.measure import label
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, bool)
    skeleton = skeletonize((np.asarray(edges) > 0.5) & mask)
    if drop_up_to > 0:
        pieces = label(skeleton, connectivity=2)
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0  # the background, never a piece
        skeleton = sizes[pieces] > drop_up_to
    if width > 1:
        skeleton = ndimage.binary_dilation(skeleton, np.ones((width, width), bool))
    return skeleton.astype(np.float32)
