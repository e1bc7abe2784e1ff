"""torch Datasets over the offline generators, deterministic under any number of workers.

Item ``i`` of split ``s`` is generated from seed ``split_seeds(s)[offset + i]`` and nothing
else (no global random state, no per-worker state), so a DataLoader with
``num_workers=0`` or ``num_workers=8`` yields identical batches. Random augmentation
across epochs comes from the sampler/offset, not from hidden state.

Tensors: images float32 CHW in [-1, 1]; masks float32 1xHxW in {0, 1} (1 = regenerate);
poses float32 (18, 3) of (x, y, visible) in pixels (invisible = (-1, -1, 0));
sketches float32 1xHxW in [0, 1] (1 = edge).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_ilat.data.masks import MASK_KINDS
from napari_ilat.data.natural import DEFAULT_RATE_RANGE, make_natural_sample
from napari_ilat.data.pose_scenes import SceneConfig, make_edit_pair
from napari_ilat.data.splits import SPLIT_SEED_RANGES, check_split

#: Default number of items per split (any length up to the split's seed range works).
DEFAULT_LENGTHS = {"train": 100_000, "validation": 1_000, "test": 1_000}


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 3xHxW in [-1, 1]."""
    # a copy (torch.tensor): arrays read from PIL are read-only, which torch.from_numpy warns about
    t = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)
    return t / 127.5 - 1.0


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float 3xHxW in [-1, 1] -> uint8 HxWx3 (inverse of image_to_tensor, rounding)."""
    a = ((t.detach().cpu().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask)).float()[None]


class _SeededDataset(Dataset):
    def __init__(self, split: str, length: int | None, offset: int):
        self.split = check_split(split)
        r = SPLIT_SEED_RANGES[self.split]
        self.length = int(DEFAULT_LENGTHS[self.split] if length is None else length)
        self.offset = int(offset)
        if self.offset < 0 or self.length < 0 or self.offset + self.length > len(r):
            raise ValueError(f"split {self.split!r} has {len(r)} seeds; asked for {self.offset}+{self.length}")
        self._start = r.start + self.offset

    def __len__(self) -> int:
        return self.length

    def seed(self, index: int) -> int:
        """The seed of item ``index``."""
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self._start + int(index)


class PoseEditDataset(_SeededDataset):
    """Synthetic pose-edit pairs (see :func:`pose_scenes.make_edit_pair`).

    Items are dicts: ``source``, ``target`` (3xHxW, [-1, 1]), ``source_pose``,
    ``target_pose`` ((18, 3) pixels), ``mask`` (1xHxW), ``seed`` (int64 scalar tensor).
    """

    def __init__(
        self,
        split: str = "train",
        resolution: int = 128,
        length: int | None = None,
        offset: int = 0,
        config: SceneConfig | None = None,
    ):
        super().__init__(split, length, offset)
        self.resolution = int(resolution)
        self.config = config if config is not None else SceneConfig(resolution=self.resolution)
        if self.config.resolution != self.resolution:
            raise ValueError("config.resolution must equal resolution")

    def __getitem__(self, index: int) -> dict:
        seed = self.seed(index)
        p = make_edit_pair(seed, self.resolution, self.config)
        return {
            "source": image_to_tensor(p.source),
            "target": image_to_tensor(p.target),
            "source_pose": torch.from_numpy(p.source_pose),
            "target_pose": torch.from_numpy(p.target_pose),
            "mask": _mask_tensor(p.mask),
            "seed": torch.tensor(seed, dtype=torch.int64),
        }


class NaturalPatchDataset(_SeededDataset):
    """Natural-image patches with masks and XDoG sketches (see
    :func:`natural.make_natural_sample`).

    Items are dicts: ``image`` (3xHxW, [-1, 1]), ``mask`` (1xHxW), ``sketch`` (1xHxW: XDoG
    of the image outside the mask computed without the masked pixels, the image's own XDoG
    inside), ``edges`` (1xHxW: XDoG of the whole image), ``seed``.
    """

    def __init__(
        self,
        split: str = "train",
        resolution: int = 128,
        mask_kinds: tuple[str, ...] = MASK_KINDS,
        rate_range: tuple[float, float] = DEFAULT_RATE_RANGE,
        length: int | None = None,
        offset: int = 0,
    ):
        super().__init__(split, length, offset)
        self.resolution = int(resolution)
        bad = set(mask_kinds) - set(MASK_KINDS)
        if bad or not mask_kinds:
            raise ValueError(f"mask_kinds must be a non-empty subset of {MASK_KINDS}")
        self.mask_kinds = tuple(mask_kinds)
        self.rate_range = (float(rate_range[0]), float(rate_range[1]))

    def __getitem__(self, index: int) -> dict:
        seed = self.seed(index)
        s = make_natural_sample(seed, self.resolution, self.mask_kinds, self.rate_range)
        return {
            "image": image_to_tensor(s.image),
            "mask": _mask_tensor(s.mask),
            "sketch": torch.from_numpy(s.sketch)[None],
            "edges": torch.from_numpy(s.edges)[None],
            "seed": torch.tensor(seed, dtype=torch.int64),
        }
