"""Natural-image patches from scikit-image's bundled colour photographs, with masks and
XDoG sketches, for the sketch-guided / free-form inpainting model.

A patch is a random square crop of one of the split's colour photographs
(``backgrounds.COLOR_PHOTOS``: test = chelsea (= cat) + coffee; train = astronaut,
hubble_deep_field, immunohistochemistry, retina, colorwheel, motorcycle), with scale jitter
(0.8x to 4x photo pixels per output pixel, log-uniform, clamped to the photo) and a random
left-right flip. Everything is a pure function of the seed.

Validation covers the training photographs' colours, not one photograph's: it draws from
rocket and from a held-out strip (the right ``HOLDOUT`` of the width) of every training
photograph, which training crops never enter. Training patches get their hue rotated by a
random angle half of the time (a rotation in the YIQ chroma plane: luma and saturation stay,
so the statistics stay natural; channel shuffles taught an earlier model grey), because the
training photographs lack blue and green. Test patches are unchanged by both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_ilat.data.backgrounds import COLOR_PHOTOS, crop_photo
from napari_ilat.data.masks import MASK_KINDS, random_mask
from napari_ilat.data.splits import SPLIT_SEED_RANGES, STREAM_NATURAL_PATCH, rng_for
from napari_ilat.engine.sketch import xdog

DEFAULT_RATE_RANGE = (0.05, 0.5)
HOLDOUT = 0.2  # right fraction of each training photograph's width kept for validation
HUE_ROTATION_P = 0.5  # training patches whose hue is rotated

# RGB <-> YIQ (NTSC): Y is luma, (I, Q) the chroma plane whose angle is the hue
YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_RGB = np.linalg.inv(YIQ).astype(np.float32)


def rotate_hue(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` (uint8 HxWx3) with its hue rotated by ``degrees``: a rotation of the YIQ
    chroma plane, so luma and chroma magnitude are kept (up to clipping to 0-255)."""
    a = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], np.float32)
    m = _RGB @ rot @ YIQ
    out = image.astype(np.float32) @ m.T
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _photo_split(seed: int) -> str:
    for name, r in SPLIT_SEED_RANGES.items():
        if seed in r:
            return name
    return "train"


@dataclass
class NaturalSample:
    """A natural patch with its edit mask and sketch condition.

    image: uint8 HxWx3; mask: bool HxW (True = regenerate); edges: float32 HxW XDoG of the
    whole image (1 = edge); sketch: float32 HxW, the edit-time style condition:
    XDoG(image, valid=~mask) outside the mask and the image's own XDoG inside it (standing
    in for the user's strokes).
    """

    image: np.ndarray
    mask: np.ndarray
    sketch: np.ndarray
    edges: np.ndarray
    photo: str
    mask_kind: str
    rate: float
    seed: int


def natural_patch(seed: int, resolution: int = 128) -> tuple[np.ndarray, str]:
    """(uint8 patch, photo name) for ``seed``; photographs come from the seed's split."""
    rng = rng_for(int(seed), STREAM_NATURAL_PATCH)
    return _patch(rng, int(seed), resolution)


def _patch(rng, seed, resolution):
    split = _photo_split(seed)
    shape = (resolution, resolution)
    if split == "test":  # unchanged since the first benchmarks: no extra random draws
        names = COLOR_PHOTOS["test"]
        name = names[int(rng.integers(len(names)))]
        return crop_photo(name, rng, shape, scale_range=(0.8, 4.0)), name
    if split == "validation":
        names = COLOR_PHOTOS["validation"] + COLOR_PHOTOS["train"]
        name = names[int(rng.integers(len(names)))]
        columns = (0.0, 1.0) if name in COLOR_PHOTOS["validation"] else (1 - HOLDOUT, 1.0)
        return crop_photo(name, rng, shape, scale_range=(0.8, 4.0), columns=columns), name
    names = COLOR_PHOTOS["train"]
    name = names[int(rng.integers(len(names)))]
    image = crop_photo(name, rng, shape, scale_range=(0.8, 4.0), columns=(0.0, 1 - HOLDOUT))
    if rng.random() < HUE_ROTATION_P:
        image = rotate_hue(image, rng.uniform(-180.0, 180.0))
    return image, name


def make_natural_sample(
    seed: int,
    resolution: int = 128,
    mask_kinds: tuple[str, ...] = MASK_KINDS,
    rate_range: tuple[float, float] = DEFAULT_RATE_RANGE,
) -> NaturalSample:
    """Patch, mask (kind drawn from ``mask_kinds``, rate uniform in ``rate_range``) and
    sketches for ``seed``."""
    seed = int(seed)
    rng = rng_for(seed, STREAM_NATURAL_PATCH)
    image, name = _patch(rng, seed, resolution)
    kind = mask_kinds[int(rng.integers(len(mask_kinds)))]
    rate = float(rng.uniform(*rate_range))
    mask = random_mask(rng, image.shape[:2], kind, rate)
    edges = xdog(image)
    sketch = np.where(mask, edges, xdog(image, valid=~mask)).astype(np.float32)
    return NaturalSample(
        image=image, mask=mask, sketch=sketch, edges=edges, photo=name, mask_kind=kind, rate=rate, seed=seed
    )
