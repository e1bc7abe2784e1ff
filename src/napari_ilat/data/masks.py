"""Random edit masks with a target masked-area rate: brush strokes, boxes, limbs.

Masks are bool HxW arrays, True = region to regenerate.

How the rate is hit: each generator builds an *arrival field*, the "time" at which each
pixel joins a mask that grows monotonically (brush: arc length drawn so far along the
strokes; box: common growth factor of the boxes; limb: radius around the limb axes).
The mask is then the set of pixels with arrival <= t, with t the quantile of the field
that gives the area closest to ``rate``. So the rate is hit to within one growth step:

    |mask.mean() - rate| <= RATE_TOLERANCE (0.01, absolute)

for ``rate`` in [0.01, 0.8] and images of at least 64 x 64 pixels (tested). Outside that
range the generators still work, with a looser fit for tiny images.
"""

from __future__ import annotations

import numpy as np

from napari_ilat.engine.render import bbox_slices, pixel_grid

MASK_KINDS: tuple[str, ...] = ("brush", "box", "limb")
RATE_TOLERANCE = 0.01


def mask_from_arrival(arrival: np.ndarray, rate: float) -> np.ndarray:
    """Pixels whose arrival time is at most the threshold that best hits ``rate``."""
    flat = arrival.ravel()
    n = flat.size
    k = int(round(float(np.clip(rate, 0.0, 1.0)) * n))
    if k <= 0:
        return np.zeros(arrival.shape, bool)
    if k >= n:
        return np.ones(arrival.shape, bool)
    t = np.partition(flat, k - 1)[k - 1]
    le = arrival <= t
    lt = arrival < t
    n_le, n_lt = int(le.sum()), int(lt.sum())
    return lt if (abs(n_lt - k) < abs(n_le - k) and n_lt > 0) else le


def _segment_arrival(arrival, s0, p0, p1, r, grid):
    """Update ``arrival`` (in place) with a brush dab moving from p0 to p1 (row, col),
    radius r, that starts at arc length s0: a pixel joins when the moving disc first
    touches it."""
    h, w = arrival.shape
    (y0, x0), (y1, x1) = p0, p1
    sl = bbox_slices(min(x0, x1) - r, min(y0, y1) - r, max(x0, x1) + r, max(y0, y1) + r, (h, w))
    if sl is None:
        return
    yy, xx = grid[0][sl], grid[1][sl]
    dy, dx = y1 - y0, x1 - x0
    length = float(np.hypot(dx, dy))
    py, px = yy - y0, xx - x0
    if length > 0:
        uy, ux = dy / length, dx / length
        u = px * ux + py * uy
        perp = px * uy - py * ux
    else:
        u = np.zeros_like(px)
        perp = np.sqrt(px * px + py * py)
    reach = np.sqrt(np.maximum(r * r - perp * perp, 0.0))
    a = u - reach  # how far along the segment the disc centre must be to touch the pixel
    inside_start = px * px + py * py <= r * r
    hit = inside_start | ((np.abs(perp) <= r) & (a > 0) & (a <= length))
    t = np.where(inside_start, s0, s0 + a)
    region = arrival[sl]
    np.minimum(region, np.where(hit, t, np.inf), out=region)


def brush_mask(rng: np.random.Generator, shape: tuple[int, int], rate: float) -> np.ndarray:
    """Free-form brush strokes (LaMa / CoModGAN style random-walk polylines with width).

    Strokes are added until they could cover ``rate``; the last stroke is cut where the
    target area is reached.
    """
    h, w = shape
    size = float(min(h, w))
    grid = pixel_grid(h, w)
    arrival = np.full(shape, np.inf, dtype=np.float64)
    s = 0.0
    for _stroke in range(400):
        r = rng.uniform(0.02, 0.065) * size
        n_vertices = int(rng.integers(4, 13))
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(n_vertices):
            angle += rng.normal(0, 0.9)
            step = rng.uniform(0.06, 0.22) * size
            ny = float(np.clip(y + step * np.sin(angle), 0, h - 1))
            nx = float(np.clip(x + step * np.cos(angle), 0, w - 1))
            _segment_arrival(arrival, s, (y, x), (ny, nx), r, grid)
            s += float(np.hypot(ny - y, nx - x)) + 1e-3
            y, x = ny, nx
        if np.isfinite(arrival).mean() >= rate:
            break
    return mask_from_arrival(arrival, rate)


def box_mask(rng: np.random.Generator, shape: tuple[int, int], rate: float, n_boxes: int | None = None) -> np.ndarray:
    """Axis-aligned boxes (``n_boxes``, default 1-3 at random) growing together from random
    centres; a single box is always an exact rectangle."""
    h, w = shape
    yy, xx = pixel_grid(h, w)
    n = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])) if n_boxes is None else int(n_boxes)
    arrival = np.full(shape, np.inf, dtype=np.float64)
    for _ in range(n):
        # centres a quarter pixel off the grid, so rows (and columns) join one at a time
        cy = float(rng.integers(0, h)) + 0.25
        cx = float(rng.integers(0, w)) + 0.25
        aspect = float(np.exp(rng.uniform(np.log(0.4), np.log(2.5))))
        ay, ax = np.sqrt(aspect), 1.0 / np.sqrt(aspect)
        a = np.maximum(np.abs(yy - cy) / ay, np.abs(xx - cx) / ax)
        np.minimum(arrival, a, out=arrival)
    return mask_from_arrival(arrival, rate)


def limb_axes(rng: np.random.Generator, shape: tuple[int, int], n_limbs: int | None = None) -> list[np.ndarray]:
    """Polylines (row, col) of 1-3 random limbs (arm: shoulder-elbow-wrist, leg:
    hip-knee-ankle-toe) of a random figure placed in an image of ``shape``."""
    from napari_ilat.data import pose_scenes as ps

    h, w = shape
    res = min(h, w)
    height = rng.uniform(0.6, 1.1) * res
    fig = ps.sample_figure(rng, height)
    art = ps.sample_articulation(rng, fig, res, height, closeup=False)
    geo = ps.forward_kinematics(fig, art)
    kp = geo.keypoints
    chains = {
        "r_arm": (2, 3, 4),
        "l_arm": (5, 6, 7),
        "r_leg": (8, 9, 10),
        "l_leg": (11, 12, 13),
    }
    if n_limbs is None:
        n_limbs = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    names = rng.choice(list(chains), size=n_limbs, replace=False)
    out = []
    for name in names:
        pts = kp[list(chains[str(name)])]
        if "leg" in str(name):
            toe = geo.shapes[str(name)[0] + "_foot"][2]
            pts = np.vstack([pts, toe])
        # scale x into a non-square image
        pts = pts * np.array([w / res, h / res])
        out.append(pts[:, ::-1].copy())  # (x, y) -> (row, col)
    return out


def limb_mask(rng: np.random.Generator, shape: tuple[int, int], rate: float) -> np.ndarray:
    """Limb-shaped masks: all pixels within a common radius of 1-3 random limb axes,
    the radius chosen to hit ``rate``."""
    h, w = shape
    yy, xx = pixel_grid(h, w)
    dist2 = np.full(shape, np.inf, dtype=np.float64)
    for line in limb_axes(rng, shape):
        for p0, p1 in zip(line[:-1], line[1:]):
            (y0, x0), (y1, x1) = p0, p1
            dy, dx = y1 - y0, x1 - x0
            l2 = dy * dy + dx * dx
            py, px = yy - y0, xx - x0
            t = np.clip((py * dy + px * dx) / l2, 0, 1) if l2 > 0 else 0.0
            qy, qx = py - t * dy, px - t * dx
            np.minimum(dist2, qy * qy + qx * qx, out=dist2)
    return mask_from_arrival(dist2, rate)


_GENERATORS = {"brush": brush_mask, "box": box_mask, "limb": limb_mask}


def random_mask(
    rng: np.random.Generator, shape: tuple[int, int], kind: str | None = "brush", rate: float = 0.25
) -> np.ndarray:
    """A random bool mask of ``kind`` ('brush', 'box', 'limb'; None = random kind) covering
    ``rate`` of the image to within RATE_TOLERANCE."""
    if kind is None:
        kind = MASK_KINDS[int(rng.integers(len(MASK_KINDS)))]
    if kind not in _GENERATORS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
    return _GENERATORS[kind](rng, tuple(int(s) for s in shape), float(rate))
