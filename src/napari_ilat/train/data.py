"""Training data for both stages: synthetic pose scenes, natural patches, or a folder of
the user's own images. Every item is a pure function of its index (seeded generators, no
hidden state), so batches are the same with any number of DataLoader workers and a resumed
run sees exactly the batches the uninterrupted run would have seen.

Stage 1 items: ``{"image": 3xRxR float in [-1, 1]}``.
Stage 2 items: ``{"image", "mask" (1xRxR bool), "causal" (bool), "pose" (18x3, normalised)
or "sketch" (1xRxR in [0, 1])}`` — ``image`` is the edit *target*, the tokens to learn.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_ilat.data import (
    MASK_KINDS,
    compose_sketch,
    make_edit_pair,
    make_natural_sample,
    make_scene,
    natural_patch,
    random_mask,
    split_seeds,
    xdog,
)
from napari_ilat.data.datasets import image_to_tensor
from napari_ilat.engine.conditions import normalize_keypoints
from napari_ilat.engine.sketch import thin_strokes

SOURCES = ("pose", "natural")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# random stream ids for our own per-item choices (distinct from the data package's)
_STREAM_STAGE2 = 41
_STREAM_FOLDER = 42


def _seed(split: str, index: int) -> int:
    return int(split_seeds(split, 1, offset=int(index))[0])


# --------------------------------------------------------------------------- user images


def _rgb8(im) -> np.ndarray:
    """uint8 RGB pixels of a PIL image. 16-bit and float images (microscopy, scientific
    cameras; PIL modes I;16, I, F) are scaled from their own min..max, as ``edit()`` reads
    such an image: PIL's own conversion clips them at 255, which made them white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.round((np.nan_to_num(a, nan=lo) - lo) * (255.0 / max(hi - lo, 1e-12)))
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _pages(path: Path) -> int:
    """How many images a file holds: a multi-page TIFF (a z-stack, a time series) one a page."""
    from PIL import Image

    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1)) if path.suffix.lower() in (".tif", ".tiff") else 1


class ImageFolder:
    """The user's own images (PNG/JPEG/TIFF, any size, grey/RGB/RGBA, 8/16-bit or float;
    every page of a multi-page TIFF), split 90/10 by a hash of the file name so the
    validation images are stable when files are added (a stack's pages stay together).
    Files that cannot be opened are left out with a warning."""

    def __init__(self, root, split: str = "train"):
        import warnings
        import zlib

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
        is_val = [zlib.crc32(p.name.encode()) % 10 == 0 for p in files]
        #: whether validation images are kept out of training (False: no file name hashed into
        #: the validation tenth, so validation falls back on the last image, a training one)
        self.held_out = any(is_val) and not all(is_val)
        if split == "train":
            chosen = [p for p, v in zip(files, is_val) if not v]
        else:
            chosen = [p for p, v in zip(files, is_val) if v] or files[-1:]
        self.files, self.items, bad = [], [], []
        for path in chosen or files:
            try:
                n = _pages(path)
            except (OSError, ValueError) as e:  # not an image, or one PIL cannot read
                bad.append(f"{path.name} ({type(e).__name__}: {e})")
                continue
            self.files.append(path)
            self.items += [(path, page) for page in range(n)]  # (file, page)
        if bad:
            listed = "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else "")
            warnings.warn(f"{len(bad)} files under {root} cannot be read and are left out: {listed}", stacklevel=2)
        if not self.items:
            raise ValueError(f"no readable images found under {root} ({split} split)")
        self._cache: dict[int, np.ndarray] = {}

    def image(self, i: int) -> np.ndarray:
        from PIL import Image

        i = i % len(self.items)
        if i not in self._cache:
            path, page = self.items[i]
            try:
                with Image.open(path) as im:
                    im.seek(page)
                    self._cache[i] = _rgb8(im)
            except (OSError, ValueError) as e:  # truncated or corrupt past its header
                raise ValueError(f"cannot read {path} (page {page}): {e}; remove or replace it") from e
            if len(self._cache) > 256:  # bounded memory for big folders
                self._cache.pop(next(iter(self._cache)))
        return self._cache[i]

    def crop(self, index: int, resolution: int) -> np.ndarray:
        """A random square crop (scale jitter 1x-2x, flip) of image ``index % n``."""
        from PIL import Image

        img = self.image(index)
        rng = np.random.default_rng([index, _STREAM_FOLDER])
        h, w = img.shape[:2]
        side = min(h, w, int(resolution * rng.uniform(1.0, 2.0)))
        r0 = int(rng.integers(0, h - side + 1))
        c0 = int(rng.integers(0, w - side + 1))
        patch = img[r0 : r0 + side, c0 : c0 + side]
        if side != resolution:
            patch = np.asarray(Image.fromarray(patch).resize((resolution, resolution), Image.BICUBIC))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch)


def _source(source: str, split: str):
    if source in SOURCES:
        return source
    return ImageFolder(source, split)


# --------------------------------------------------------------------------- stage 1


class Stage1Images(Dataset):
    """Single images for the autoencoder: pose scenes, natural patches or folder crops."""

    def __init__(self, source: str, split: str, resolution: int, length: int):
        self.source = _source(source, split)
        self.split, self.resolution, self.length = split, resolution, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        if self.source == "pose":
            img = make_scene(_seed(self.split, i), self.resolution).image
        elif self.source == "natural":
            img = natural_patch(_seed(self.split, i), self.resolution)[0]
        else:
            img = self.source.crop(i, self.resolution)
        return {"image": image_to_tensor(img)}


# --------------------------------------------------------------------------- stage 2


class Stage2Pairs(Dataset):
    """Edit targets with a mask and the condition the transformer is trained with.

    Masks (DESIGN section 3): for pose, the pair's edit mask (60%) or a random brush / box /
    limb mask; natural and folder images use random masks of all three kinds. ``causal``
    marks the ~``causal_frac`` plain raster (Taming-style) sequences: no known tokens.
    """

    def __init__(
        self,
        source: str,
        split: str,
        resolution: int,
        length: int,
        cond: str,
        causal_frac: float = 0.15,
        rate_range=(0.05, 0.5),
        thin_frac: float = 0.0,
    ):
        self.source = _source(source, split)
        self.split, self.resolution, self.length = split, resolution, length
        self.cond, self.causal_frac, self.rate_range = cond, causal_frac, rate_range
        self.thin_frac = thin_frac
        if cond == "pose" and self.source != "pose":
            raise ValueError("a pose-conditioned transformer needs --data pose")
        if not 0.0 <= thin_frac <= 1.0:
            raise ValueError(f"--thin-strokes must lie in [0, 1], got {thin_frac}")
        if thin_frac > 0 and cond != "sketch":
            raise ValueError("--thin-strokes is for sketch-conditioned transformers (--cond sketch)")

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        R = self.resolution
        seed = _seed(self.split, i) if isinstance(self.source, str) else int(i)
        rng = np.random.default_rng([seed, _STREAM_STAGE2])
        item = {}
        if self.source == "pose":
            p = make_edit_pair(seed, R)
            image = p.target
            if rng.random() < 0.6:
                mask = p.mask
            else:
                mask = random_mask(rng, (R, R), None, rng.uniform(*self.rate_range))
            item["pose"] = torch.from_numpy(normalize_keypoints(p.target_pose, (0, 0, R, R)).astype(np.float32))
            sketch_mask = mask
        elif self.source == "natural":
            s = make_natural_sample(seed, R, MASK_KINDS, self.rate_range)
            image, mask = s.image, s.mask
            sketch_mask = mask
        else:
            image = self.source.crop(i, R)
            mask = random_mask(rng, (R, R), None, rng.uniform(*self.rate_range))
            sketch_mask = mask
        # drawn before the thin-stroke draw, so --thin-strokes leaves every other draw as it was
        item["causal"] = torch.tensor(bool(rng.random() < self.causal_frac))
        if self.cond == "sketch":
            # the edit-time condition: XDoG of the known pixels outside the mask, the target's
            # own XDoG (standing in for the user's strokes) inside it; for ~thin_frac of the
            # items that XDoG's ink thinned to lines of 1-3 px with pieces of up to 0-16 px
            # dropped, as a user draws (the dense map alone taught the model that thin strokes
            # mean little ink: docs/benchmarks.md, "Thin strokes")
            strokes = xdog(image)
            if self.thin_frac > 0 and rng.random() < self.thin_frac:
                strokes = thin_strokes(strokes, sketch_mask, int(rng.integers(0, 17)), int(rng.integers(1, 4)))
            sk = compose_sketch(image, sketch_mask, strokes)
            item["sketch"] = torch.from_numpy(sk)[None]
        item["image"] = image_to_tensor(image)
        item["mask"] = torch.from_numpy(np.ascontiguousarray(mask))[None]
        return item


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def encode_items(encode, dataset, indices, batch: int = 16, report=None) -> dict:
    """``encode`` (a collated batch -> dict of tensors, e.g. a first stage's tokens) over
    ``dataset[indices]`` in batches, concatenated on the CPU: a token pool or a validation
    set. ``report(done, total)`` after each batch."""
    parts = []
    for i in range(0, len(indices), batch):
        b = collate([dataset[j] for j in indices[i : i + batch]])
        parts.append({k: v.cpu() for k, v in encode(b).items()})
        if report is not None:
            report(min(i + batch, len(indices)), len(indices))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def loader(dataset, index_batches, workers: int):
    """Iterate batches in the given order; a DataLoader with a batch sampler when
    ``workers`` > 0 (items are pure functions of their index, so the order is unaffected)."""
    if workers <= 0:
        for b in index_batches:
            yield collate([dataset[i] for i in b])
        return
    from torch.utils.data import DataLoader

    # Fill the data package's caches (photographs and their pyramids) in this process first,
    # so the forked workers inherit them instead of each building its own: on a 16-core GPU
    # machine that start-up cost more than the first minute of training.
    dataset[0]

    yield from DataLoader(
        dataset,
        batch_sampler=index_batches,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
        prefetch_factor=2,
        worker_init_fn=_leave_sigterm_to_the_trainer,
    )


def _leave_sigterm_to_the_trainer(worker_id: int) -> None:
    """A SIGTERM sent to the whole process group (``timeout``, a batch scheduler ending a
    job) is the training process's to handle: it finishes its step, checkpoints and exports
    (``common.stop_on_signal``). A worker killed by it (torch's workers die of a SIGTERM that
    does not come from their parent) makes the training process fail with "DataLoader worker
    killed" before it can. Workers still end with it: the DataLoader's shutdown, or their
    watchdog when it dies."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --------------------------------------------------------------------------- a pool filled as it goes


def _first_draws(index_batches, size: int):
    """(batch, first, complete): ``first`` when the batch holds an index of ``[0, size)``
    not drawn before (it must be made), ``complete`` once every index has been drawn; a pure
    function of the stream, so two walks of the same stream agree."""
    drawn = np.zeros(size, bool)
    left = size
    for b in index_batches:
        new = np.unique(np.asarray(b)[~drawn[b]])
        drawn[new] = True
        left -= len(new)
        yield b, len(new) > 0, left == 0


class _Store:
    """Encoded items by index, on the encoder's device (long tensors kept as int32, given
    back as long; exact, since codes and flags are small)."""

    def __init__(self, size: int):
        self.size, self.tensors, self.dtypes = size, {}, {}

    def put(self, idx, batch: dict):
        for k, v in batch.items():
            if k not in self.tensors:
                dtype = torch.int32 if v.dtype == torch.long else v.dtype
                self.tensors[k] = torch.empty((self.size, *v.shape[1:]), dtype=dtype, device=v.device)
                self.dtypes[k] = v.dtype
            t = self.tensors[k]
            t[torch.as_tensor(idx, dtype=torch.long, device=t.device)] = v.to(t.dtype)

    def get(self, idx) -> dict:
        out = {}
        for k, t in self.tensors.items():
            out[k] = t[torch.as_tensor(idx, dtype=torch.long, device=t.device)].to(self.dtypes[k])
        return out


def pool_filled_by_workers(dataset, make_batches, size: int, workers: int, encode):
    """Encoded batches over a pool of the first ``size`` items of ``dataset``, made by
    ``workers`` DataLoader processes the first time a batch draws an item (``encode``, e.g.
    the frozen first stage on the GPU, runs then) and served from memory afterwards.

    ``make_batches()`` gives the index-batch stream over ``[0, size)``; it is walked twice,
    by the workers (who stop, and exit, once every item was made) and here. Items are pure
    functions of their index, so the batches are those of the pool encoded up front (the
    CPU path) without waiting for it: the first pass trains while the pool fills, later
    passes run at the pace of the model instead of the data (a GPU whose scene workers
    cannot keep up with it: docs/training.md). A batch mixing made and new items is made
    whole."""

    def to_make():
        for b, first, complete in _first_draws(make_batches(), size):
            if first:
                yield b
            if complete:
                return

    made = (encode(b) for b in loader(dataset, to_make(), workers))
    store = _Store(size)
    for b, first, _ in _first_draws(make_batches(), size):
        if first:
            batch = next(made)
            store.put(b, batch)
            yield batch
        else:
            yield store.get(b)
