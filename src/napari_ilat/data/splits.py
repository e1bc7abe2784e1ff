"""Train / validation / test splits as disjoint seed ranges.

Every sample is a pure function of its integer seed (``numpy.random.default_rng``; no
global random state). A split is a fixed half-open range of seeds; the ranges never
overlap, so a held-out benchmark seed can never be drawn for training:

==========  ===========================  ============
split       seeds                        size
==========  ===========================  ============
test        [0, 100_000)                 100 000
validation  [100_000, 200_000)           100 000
train       [1_000_000, 2**31 - 1)       ~2.1 billion
==========  ===========================  ============

Small seeds (demos, docs, "seed 0") are therefore test samples, never training ones.
Different generators (pose scenes, natural patches, masks) derive independent streams
from the same seed via ``numpy.random.default_rng([seed, stream])``.
"""

from __future__ import annotations

import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Half-open seed range [start, stop) of each split.
SPLIT_SEED_RANGES: dict[str, range] = {
    "test": range(0, 100_000),
    "validation": range(100_000, 200_000),
    "train": range(1_000_000, 2**31 - 1),
}

#: Stream ids: independent random streams derived from one seed.
STREAM_POSE_SCENE = 1
STREAM_NATURAL_PATCH = 2
STREAM_MASK = 3

_ALIASES = {"val": "validation", "valid": "validation", "eval": "validation"}


def check_split(split: str) -> str:
    """Canonical split name ('train', 'validation' or 'test'); accepts 'val'."""
    s = _ALIASES.get(str(split).lower(), str(split).lower())
    if s not in SPLIT_SEED_RANGES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return s


def split_seeds(split: str, n: int | None = None, offset: int = 0) -> np.ndarray:
    """The first ``n`` seeds of ``split`` (after skipping ``offset``), int64 array.

    ``n=None`` is allowed only for the finite held-out splits (all of them).
    """
    r = SPLIT_SEED_RANGES[check_split(split)]
    if n is None:
        n = len(r) - offset
    if offset < 0 or n < 0 or offset + n > len(r):
        raise ValueError(f"split {split!r} has {len(r)} seeds; asked for [{offset}, {offset + n})")
    return np.arange(r.start + offset, r.start + offset + n, dtype=np.int64)


def split_of_seed(seed: int) -> str:
    """Which split a seed belongs to; ValueError for seeds in no split."""
    for name, r in SPLIT_SEED_RANGES.items():
        if seed in r:
            return name
    raise ValueError(f"seed {seed} belongs to no split")


def rng_for(seed: int, stream: int) -> np.random.Generator:
    """The random generator of ``stream`` for sample ``seed`` (pure function of both)."""
    return np.random.default_rng([int(seed), int(stream)])
