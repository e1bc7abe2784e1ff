"""Per-pixel numpy rendering primitives: signed distances, anti-aliased coverage, shading.

Conventions: pixel ``(row, col)`` has its centre at ``(x=col, y=row)``; a shape with signed
distance ``d`` (pixels, negative inside) covers a pixel by ``clip(0.5 - d, 0, 1)``.
Every primitive is evaluated on the pixels of a bounding box that depends only on the
shape's own geometry, so identical shapes render to identical bytes wherever they are
drawn from.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=16)
def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 arrays (Y, X) of pixel-centre coordinates, shape (h, w)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def bbox_slices(xmin: float, ymin: float, xmax: float, ymax: float, shape: tuple[int, int], pad: float = 1.0):
    """Slices (rows, cols) of the pixels within ``pad`` of a float box, clipped to ``shape``;
    None if the box misses the image."""
    h, w = shape
    r0 = max(int(np.floor(ymin - pad)), 0)
    r1 = min(int(np.ceil(ymax + pad)) + 1, h)
    c0 = max(int(np.floor(xmin - pad)), 0)
    c1 = min(int(np.ceil(xmax + pad)) + 1, w)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def segment_offset(x: np.ndarray, y: np.ndarray, a, b):
    """Offset (qx, qy) from the nearest point of segment a-b to each pixel (x, y)."""
    ax, ay = float(a[0]), float(a[1])
    dx, dy = float(b[0]) - ax, float(b[1]) - ay
    px, py = x - ax, y - ay
    l2 = dx * dx + dy * dy
    if l2 > 0:
        t = np.clip((px * dx + py * dy) * (1.0 / l2), 0.0, 1.0)
        return px - t * dx, py - t * dy
    return px, py


def coverage(d: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a pixel at signed distance ``d``: clip(0.5 - d, 0, 1)."""
    return np.clip(0.5 - d, 0.0, 1.0)


def polygon_sdf(x: np.ndarray, y: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact signed distance to a simple polygon ``pts`` (N,2 as x,y), negative inside.

    Also returns the offset (qx, qy) from the nearest boundary point to each pixel.
    """
    n = len(pts)
    best = None
    qx_best = qy_best = None
    inside = np.zeros(x.shape, dtype=bool)
    for i in range(n):
        a = pts[i - 1]
        b = pts[i]
        qx, qy = segment_offset(x, y, a, b)
        d2 = qx * qx + qy * qy
        if best is None:
            best, qx_best, qy_best = d2, qx, qy
        else:
            closer = d2 < best
            best = np.where(closer, d2, best)
            qx_best = np.where(closer, qx, qx_best)
            qy_best = np.where(closer, qy, qy_best)
        # crossing number (ray towards +x)
        ay, by = float(a[1]), float(b[1])
        if ay == by:
            continue
        straddle = (y >= min(ay, by)) & (y < max(ay, by))
        xc = float(a[0]) + (y - ay) * ((float(b[0]) - float(a[0])) / (by - ay))
        inside ^= straddle & (x < xc)
    d = np.sqrt(best)
    return np.where(inside, -d, d), qx_best, qy_best


def lambert(nx: np.ndarray, ny: np.ndarray, nz: np.ndarray, light: np.ndarray, ambient: float, diffuse: float):
    """ambient + diffuse * max(n . light, 0) for unit-ish normals (arrays) and a light (3,)."""
    return ambient + diffuse * np.maximum(nx * float(light[0]) + ny * float(light[1]) + nz * float(light[2]), 0.0)
