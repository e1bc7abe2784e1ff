"""Backgrounds and crops from photographs bundled with scikit-image, plus procedural textures.

Only the ``skimage.data`` images that ship inside the scikit-image wheel are used (the
others are fetched from the internet on first use, which we never do). Each photograph is
loaded once per process and kept, with a small anti-aliased pyramid for fast crops.

Photographs are split so that held-out benchmarks never see training photographs
(``cat`` and ``chelsea`` are the same picture, so they sit in the same split):

============  =================================================================
split         photographs
============  =================================================================
train         astronaut, hubble_deep_field, immunohistochemistry, retina,
              colorwheel; grey: grass, gravel, brick, camera
validation    rocket; grey: moon
test          chelsea (= cat), coffee; grey: coins
============  =================================================================
"""

from __future__ import annotations

import functools

import numpy as np

from napari_ilat.data.splits import check_split

#: Colour photographs per split (natural patches draw from these only).
COLOR_PHOTOS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "motorcycle"),
    "validation": ("rocket",),
    "test": ("chelsea", "coffee"),
}
#: Grey photographs per split (used, tinted, as pose-scene backgrounds).
GREY_PHOTOS: dict[str, tuple[str, ...]] = {
    "train": ("grass", "gravel", "brick", "camera"),
    "validation": ("moon",),
    "test": ("coins",),
}
#: Every skimage.data image we may load; all ship with the package (no download).
BUNDLED_PHOTOS: frozenset[str] = frozenset(
    n for d in (COLOR_PHOTOS, GREY_PHOTOS) for names in d.values() for n in names
) | {"cat"}

PROCEDURAL_KINDS: tuple[str, ...] = ("studio", "noise", "gradient", "stripes", "checker")


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """The named bundled skimage.data image as uint8 HxWx3 (grey ones repeated to RGB).

    Read-only and cached: each photograph is loaded from disk once per process.
    """
    if name not in BUNDLED_PHOTOS:
        raise ValueError(f"{name!r} is not one of the bundled offline photos {sorted(BUNDLED_PHOTOS)}")
    import skimage.data

    # "motorcycle": the left view of skimage's stereo pair (the right one would leak: same scene)
    img = np.asarray(skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    img.flags.writeable = False
    return img


@functools.cache
def photo_pyramid(name: str) -> tuple[np.ndarray, ...]:
    """float32 pyramid of a photo: level L is the photo box-averaged by 2**L."""
    levels = [load_photo(name).astype(np.float32)]
    while min(levels[-1].shape[:2]) >= 64:
        a = levels[-1]
        h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        a = a[:h, :w]
        levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
    for lv in levels:
        lv.flags.writeable = False
    return tuple(levels)


def _bilinear(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample float HxWxC ``img`` at the grid rows x cols (pixel-centre coordinates)."""
    h, w = img.shape[:2]
    rows = np.clip(rows, 0, h - 1)
    cols = np.clip(cols, 0, w - 1)
    r0 = np.minimum(np.floor(rows).astype(np.intp), h - 2 if h > 1 else 0)
    c0 = np.minimum(np.floor(cols).astype(np.intp), w - 2 if w > 1 else 0)
    fr = (rows - r0).astype(np.float32)[:, None, None]
    fc = (cols - c0).astype(np.float32)[None, :, None]
    r1 = np.minimum(r0 + 1, h - 1)
    c1 = np.minimum(c0 + 1, w - 1)
    top = img[r0][:, c0] * (1 - fc) + img[r0][:, c1] * fc
    bot = img[r1][:, c0] * (1 - fc) + img[r1][:, c1] * fc
    return top * (1 - fr) + bot * fr


def crop_photo(
    name: str,
    rng: np.random.Generator,
    shape: tuple[int, int],
    scale_range: tuple[float, float] = (0.8, 4.0),
    hflip: bool = True,
    columns: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """A random square-pixel crop of photo ``name`` resized to ``shape``, uint8 HxWx3.

    The crop covers ``s`` photo pixels per output pixel with ``s`` log-uniform in
    ``scale_range`` (clamped so the crop fits in the photo); position uniform; flipped
    left-right with probability 1/2 when ``hflip``. Down-scaling uses a box pyramid plus
    bilinear interpolation, so crops are smooth (no aliasing from large reductions).
    ``columns``: the crop stays inside this fraction of the photo's width (a held-out strip).
    """
    out_h, out_w = shape
    photo = load_photo(name)
    ph, full_w = photo.shape[:2]
    c0, c1 = int(round(columns[0] * full_w)), int(round(columns[1] * full_w))
    pw = c1 - c0
    max_scale = min(ph / out_h, pw / out_w)
    lo, hi = scale_range
    hi = min(hi, max_scale)
    lo = min(lo, hi)
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else hi
    crop_h, crop_w = out_h * s, out_w * s
    y0 = rng.uniform(0, max(ph - crop_h, 0))
    x0 = c0 + rng.uniform(0, max(pw - crop_w, 0))
    flip = bool(hflip and rng.random() < 0.5)
    levels = photo_pyramid(name)
    level = int(np.clip(np.floor(np.log2(max(s, 1.0))), 0, len(levels) - 1))
    f = 2.0**level
    rows = (y0 + (np.arange(out_h) + 0.5) * s) / f - 0.5
    cols = (x0 + (np.arange(out_w) + 0.5) * s) / f - 0.5
    if flip:
        cols = cols[::-1]
    out = _bilinear(levels[level], rows, cols)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, channels: int) -> np.ndarray:
    """Value noise in [0,1]: a random ``cells`` x ``cells`` grid bilinearly upsampled."""
    h, w = shape
    grid = rng.random((cells + 1, cells + 1, channels)).astype(np.float32)
    rows = np.linspace(0, cells, h, dtype=np.float64)
    cols = np.linspace(0, cells, w, dtype=np.float64)
    return _bilinear(grid, rows, cols)


def procedural_texture(rng: np.random.Generator, shape: tuple[int, int], kind: str | None = None) -> np.ndarray:
    """A procedural background, uint8 HxWx3. ``kind`` in PROCEDURAL_KINDS or None (random).

    - studio: near-uniform light backdrop with a soft floor/wall gradient (DeepFashion-like);
    - noise: multi-octave coloured value noise;
    - gradient: linear gradient between two random colours;
    - stripes / checker: rotated anti-aliased stripes or checkerboard in two colours.
    """
    h, w = shape
    if kind is None:
        kind = PROCEDURAL_KINDS[int(rng.choice(len(PROCEDURAL_KINDS), p=[0.35, 0.2, 0.2, 0.13, 0.12]))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= max(h, 1)
    xx /= max(w, 1)
    c1 = rng.random(3).astype(np.float32)
    c2 = rng.random(3).astype(np.float32)
    if kind == "studio":
        base = (0.75 + 0.25 * rng.random()) * (1 - 0.25 * rng.random(3)).astype(np.float32)
        horizon = rng.uniform(0.55, 0.9)
        t = np.clip((yy - horizon) * 6, 0, 1)[..., None]
        floor = base * (0.8 + 0.15 * rng.random())
        img = base * (1 - t) + floor * t
        vign = 1 - 0.25 * rng.random() * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)[..., None]
        img = img * vign
    elif kind == "noise":
        img = np.zeros((h, w, 3), np.float32)
        amp = 1.0
        total = 0.0
        for cells in (2, 4, 8, 16):
            img += amp * _smooth_noise(rng, shape, cells, 3)
            total += amp
            amp *= 0.55
        img /= total
        img = (img - img.mean()) * rng.uniform(1.0, 2.5) + rng.random(3).astype(np.float32) * 0.6 + 0.2
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        t = (np.cos(ang) * xx + np.sin(ang) * yy)[..., None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = c1 * (1 - t) + c2 * t
    elif kind in ("stripes", "checker"):
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(0.06, 0.3) * h
        u = (np.cos(ang) * xx * w + np.sin(ang) * yy * h) / period
        v = (-np.sin(ang) * xx * w + np.cos(ang) * yy * h) / period
        # anti-aliased square wave: distance to the nearest stripe edge, in pixels
        su = np.clip((np.abs((u % 1.0) - 0.5) - 0.25) * period + 0.5, 0, 1)
        if kind == "checker":
            sv = np.clip((np.abs((v % 1.0) - 0.5) - 0.25) * period + 0.5, 0, 1)
            t = su * (1 - sv) + sv * (1 - su)
        else:
            t = su
        t = t[..., None]
        img = c1 * (1 - t) + c2 * t
    else:
        raise ValueError(f"unknown procedural texture kind {kind!r}")
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def random_background(rng: np.random.Generator, shape: tuple[int, int], split: str = "train") -> np.ndarray:
    """A background for a pose scene, uint8 HxWx3: a photo crop of ``split``'s photographs
    (colour, or grey tinted by a random colour) with probability 1/2, else a procedural
    texture."""
    split = check_split(split)
    u = rng.random()
    if u < 0.35:
        names = COLOR_PHOTOS[split]
        return crop_photo(names[int(rng.integers(len(names)))], rng, shape)
    if u < 0.5:
        names = GREY_PHOTOS[split]
        img = crop_photo(names[int(rng.integers(len(names)))], rng, shape).astype(np.float32)
        tint = 0.55 + 0.45 * rng.random(3).astype(np.float32)
        return np.clip(img * tint + 0.5, 0, 255).astype(np.uint8)
    return procedural_texture(rng, shape)
