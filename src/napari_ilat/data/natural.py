"""Natural-image patches from scikit-image's bundled colour photographs, with masks and
XDoG sketches, for the sketch-guided / free-form inpainting model.

A patch is a random square crop of one of the split's colour photographs
(``backgrounds.COLOR_PHOTOS``: test = chelsea (= cat) + coffee, validation = rocket,
train = astronaut, hubble_deep_field, immunohistochemistry, retina, colorwheel), with
scale jitter (0.8x to 4x photo pixels per output pixel, log-uniform, clamped to the
photo) and a random left-right flip. Everything is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_ilat.data.backgrounds import COLOR_PHOTOS, crop_photo
from napari_ilat.data.masks import MASK_KINDS, random_mask
from napari_ilat.data.splits import SPLIT_SEED_RANGES, STREAM_NATURAL_PATCH, rng_for
from napari_ilat.engine.sketch import xdog

DEFAULT_RATE_RANGE = (0.05, 0.5)


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
    names = COLOR_PHOTOS[_photo_split(seed)]
    name = names[int(rng.integers(len(names)))]
    return crop_photo(name, rng, (resolution, resolution), scale_range=(0.8, 4.0)), name


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
