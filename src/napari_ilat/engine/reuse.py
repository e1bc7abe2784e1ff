"""Reusing the first stage's work across repeated edits of the same image and mask.

Pressing Generate again on the same image and mask (more candidates, a new seed, a moved
keypoint, new sketch strokes) changes only what the transformer samples: the encoding of
the unmasked image (z_hat, its tokens, M_q) and the decode reference of the region decoder
(:mod:`napari_ilat.engine.region_decode`) depend on the model, the window's pixels, the
mask and the value range alone. :class:`FirstStageCache` keeps them, keyed by exactly that:

    (the first stage (identity and a counter of in-place changes to its weights),
     device, dtype, encoder kind (two-stream or plain), the window (row, column, height,
     width) and the size it is resized to, the value range, the window's mask bytes, a
     BLAKE2 hash of the window's image bytes with its dtype and shape)

so any change of pixels, mask, window or weights is a miss, and a hit returns the very
tensors a recomputation makes (the tests check both, and that a key without the mask
fails them). Bounded: at most ``max_entries`` entries and ``max_bytes`` of tensors, least
recently used evicted first. Outputs never depend on whether an entry was cached.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["FirstStageCache", "FIRST_STAGE_CACHE", "first_stage_key", "weights_version"]


def weights_version(module: torch.nn.Module) -> int:
    """A counter that changes when any parameter or buffer is modified in place (training
    steps, load_state_dict): torch's per-tensor version counters, summed."""
    return sum(t._version for t in module.parameters()) + sum(t._version for t in module.buffers())


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


def first_stage_key(vq, device, dtype, two_stream: bool, window, size, value_range, image_win, mask_win) -> tuple:
    """The cache key of one window's first-stage work (see the module doc)."""
    return (
        id(vq),
        weights_version(vq),
        str(device),
        str(dtype),
        bool(two_stream),
        tuple(int(v) for v in window),
        tuple(int(v) for v in size),
        tuple(float(v) for v in value_range),
        _digest(np.asarray(mask_win, dtype=bool)),
        _digest(np.asarray(image_win)),
    )


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


class FirstStageCache:
    """A small, thread-safe LRU of first-stage results (see the module doc). An entry is a
    dict (``z_hat``, ``tokens``, ``token_mask``, and decode references added later by
    :meth:`add`)."""

    def __init__(self, max_entries: int = 8, max_bytes: int = 256 * 2**20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict = OrderedDict()  # key -> (weakref to the model, dict)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key, vq) -> dict | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None or item[0]() is not vq:  # an id() reused by a new model: a miss
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key, vq, entry: dict) -> dict:
        with self._lock:
            self._entries[key] = (weakref.ref(vq), entry)
            self._entries.move_to_end(key)
            self._evict()
        return entry

    def add(self, key, name, value) -> None:
        """Add ``value`` under ``name`` to an entry (a decode reference), then re-check the
        bounds."""
        with self._lock:
            item = self._entries.get(key)
            if item is not None:
                item[1][name] = value
                self._evict()

    def _evict(self):
        while self._entries and (len(self._entries) > self.max_entries or self.nbytes > self.max_bytes):
            self._entries.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(e) for _, e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


#: The cache edit() uses (8 windows, 256 MiB at most). ``FIRST_STAGE_CACHE.clear()`` empties it.
FIRST_STAGE_CACHE = FirstStageCache()
