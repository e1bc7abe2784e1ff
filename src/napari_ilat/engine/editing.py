"""``edit()``: numpy in, numpy out local editing with an iLAT model.

The pipeline, and the one rule it keeps: the old content inside the mask may reach the
*masked* tokens (it is regenerated anyway) but never anything that survives into the output.

1. validate and convert the image to float RGB in [0, 1] (the value range: uint8 0..255,
   bool 0..1, floats in [0, 1] as is, every other dtype the unmasked pixels' min..max, or
   ``value_range`` when given; the output stays in that range);
2. pick a window around the mask at the model's pixel scale: one model window (16 x 16
   tokens for the bundled models) when the mask fits, else a larger token grid around the
   mask, generated with sliding windows (``resolution="native"``); for a pose edit whose
   figure is far from the pose model's training figures in size, the same at the figure's
   scale, the window resized (``resolution="auto"``, the default: otherwise "native"); or one
   window resized to the model's resolution (``resolution="resize"``: faster, coarser);
3. encode with the two-stream encoder (``ilat``) or the plain one (``ilat*``, ``taming``),
   quantize, M_q = maxpool_f(mask) -- or reuse all of it from the last edits of the same
   image, mask and window (:mod:`napari_ilat.engine.reuse`);
4. sample the masked tokens (cached sampler; :mod:`napari_ilat.engine.sliding` for grids
   larger than one window), one candidate at a time: candidate k is the single edit with
   seed ``seed + k`` (at most :data:`MAX_SAMPLES` candidates a call);
5. decode z_q*M_q + z_hat*(1-M_q) -- only the region the mask and its feather band cover
   when that is at most half the window (:mod:`napari_ilat.engine.region_decode`,
   ``decode="auto"``), else all of it (``decode="full"``) --, paste back, and composite
   with a feather band that lies *outside* the mask: inside it generated pixels, in the
   band a blend of generated and original unmasked pixels, everywhere else the input bytes
   unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import secrets
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_ilat.engine.blend import BLENDS, seamless
from napari_ilat.engine.conditions import normalize_keypoints
from napari_ilat.engine.defaults import DEFAULT_GUIDANCE, DEFAULT_TOP_K
from napari_ilat.engine.imagebart import default_imagebart_model, is_imagebart, sample_imagebart_grid
from napari_ilat.engine.inputs import bounding_box, check_image, check_pose, normalize_mask, normalize_sketch
from napari_ilat.engine.model import ILATModel, load_model
from napari_ilat.engine.modes import MODE_NAMES, get_mode
from napari_ilat.engine.palette import allowed_codes, check_palette, colours_of, has_colours
from napari_ilat.engine.pose_mask import (
    FIGURE_ENLARGE_MAX_TOKENS,
    FIGURE_ENLARGE_MIN_SIZE,
    figure_off_scale,
    figure_ratio,
    figure_scale_limit_warning,
    figure_scale_warning,
)
from napari_ilat.engine.region_decode import Box, decode_region, record_reference, region_plan
from napari_ilat.engine.reuse import FIRST_STAGE_CACHE, first_stage_key
from napari_ilat.engine.sampler import EditCancelled, SamplingOptions
from napari_ilat.engine.sliding import sample_grid

#: The mode names edit() accepts (the definitions: napari_ilat.engine.modes.MODES).
MODES = MODE_NAMES
#: Seeds are drawn from [0, SEED_LIMIT): they fit the widget's seed box and any int32.
SEED_LIMIT = 2**31
#: Seeds given to edit() are integers in [0, SEED_MAX) (an int64); candidate k uses seed + k.
SEED_MAX = 2**63
#: Warned when nothing of the image is left unmasked (measured on a 512x512 photograph: the
#: bundled natural model returns a near-black field, the pose model a flat pale one).
FULL_MASK_WARNING = (
    "the mask covers the whole image: an edit regenerates the masked region from the unmasked "
    "pixels around it, and with none left the result is unrelated to this image; leave part of the "
    "image unmasked"
)

#: At most this many candidates per call: they are generated one at a time (memory: one
#: candidate's work plus the output, ``samples`` copies of the image).
MAX_SAMPLES = 64
#: edit(resolution=...): "native" generates a mask larger than one model window at the
#: model's own pixel scale with sliding windows (time grows with the masked area);
#: "resize" fits the mask's surroundings into one window (faster, coarser). Masks that fit
#: one window are edited the same way by both. "auto" (the default) is "native", except for
#: pose edits whose figure is far from the pose model's training figures in size
#: (pose_mask.figure_off_scale): those are edited at the figure's scale, the image (around the
#: mask) scaled so that the figure's bones are as long as the training figures', with sliding
#: windows at that scale, and the result scaled back. A pose model draws limbs at the size it
#: was trained on, whatever the image's (docs/benchmarks.md, "Figures larger or smaller than the
#: training figures").
RESOLUTIONS = ("auto", "native", "resize")
#: edit(decode=...): "auto" decodes only the region the mask and its feather band cover
#: when it is at most REGION_MAX_FRACTION of the window (statistics from the unmasked
#: image's decode; a few grey levels from the full decode, docs/benchmarks.md), else the
#: whole window; "full" always decodes the whole window.
DECODES = ("auto", "full")
REGION_MAX_FRACTION = 0.5
#: Tokens of latent around the decoded region's own tokens that the region decoder reads.
REGION_MARGIN = 3

__all__ = [
    "edit",
    "edit_with_info",
    "EditResult",
    "EditCancelled",
    "MODES",
    "MAX_SAMPLES",
    "SEED_MAX",
    "draw_seed",
    "cached_model",
    "edit_model",
    "prepare_palette",
    "resolve_device",
    "RESOLUTIONS",
    "DECODES",
    "native_window",
    "scaled_window",
    "scale_note",
]


def draw_seed() -> int:
    """A fresh random seed in [0, 2**31): the one place napari-ilat draws seeds."""
    return secrets.randbelow(SEED_LIMIT)


def resolve_device(device="auto") -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} asked for, but this machine has no MPS (Apple GPU); use 'cpu'")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    return dev


@lru_cache(maxsize=4)
def _load_cached(name: str) -> ILATModel:
    return load_model(name)


def cached_model(model) -> ILATModel:
    """``model`` as a model object (:class:`ILATModel`, or an ImageBART model): one as is, a
    bundled name or a path loaded once (the last four are kept)."""
    return model if isinstance(model, torch.nn.Module) else _load_cached(str(model))


def _check_model_kind(model, mode) -> None:
    """An ImageBART model runs mode ``imagebart`` only, and that mode needs one."""
    kind = "imagebart" if is_imagebart(model) else "ilat"
    if kind == mode.model_kind:
        return
    name = getattr(model.config, "name", "model")
    if mode.model_kind == "imagebart":
        raise ValueError(
            f"mode 'imagebart' needs an ImageBART model, and {name!r} is an iLAT model: train one with "
            "`napari-ilat train imagebart` and load its NAME.json"
        )
    raise ValueError(f"model {name!r} is an ImageBART model: it runs mode 'imagebart' only, not {mode.name!r}")


def _default_model(pose, sketch) -> str:
    return "pose" if pose is not None else "natural"


def edit_model(model=None, mode: str = "ilat", pose=None, sketch=None):
    """The model an edit with these arguments runs, loaded once (:func:`cached_model`):
    ``model`` itself, or for None the default of ``mode`` (ImageBART's for mode
    ``imagebart``; else ``pose`` with a pose, ``natural`` without)."""
    if model is None:
        if get_mode(mode).model_kind == "imagebart":
            model = default_imagebart_model()
        else:
            model = _default_model(pose, sketch)
    return cached_model(model)


def prepare_palette(
    model=None, mode: str = "ilat", pose=None, sketch=None, palette: str = "auto", progress=None, cancel=None
) -> bool:
    """Compute now the colour table an edit with these arguments would compute before its
    first token: with ``palette="on"`` and a model that carries none (a converted or an older
    model; about a minute of a CPU at the bundled size, longer for bigger codebooks).
    ``progress(done, n_codes)`` and ``cancel`` as for :func:`edit`, so a front end can show
    that wait as its own and stop it. True when a table was computed (kept for the session,
    apart from the model's own: :func:`~napari_ilat.engine.palette.colours_of`; the edit
    does not compute it again)."""
    if check_palette(palette) != "on":
        return False
    vq = edit_model(model, mode, pose, sketch).vqgan
    if has_colours(vq):
        return False
    colours_of(vq, progress=progress, cancel=cancel)
    return True


# --------------------------------------------------------------------------- intensities


@dataclass
class _Intensity:
    """How the input's values map to [0, 1] and back (the rule: :func:`edit`'s ``image``)."""

    dtype: np.dtype
    lo: float
    hi: float

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray, value_range=None) -> _Intensity:
        if value_range is None and image.dtype in (np.uint8, np.bool_):
            # fixed ranges: no pass over the image (an 8000 x 8000 photo costs nothing here)
            return cls(image.dtype, 0, 255 if image.dtype == np.uint8 else 1)
        colour = image[..., :3] if image.ndim == 3 and image.shape[2] == 4 else image
        known = colour[~mask]  # never the masked pixels: their values must not matter
        integer = np.issubdtype(image.dtype, np.integer)
        if not integer and image.dtype != bool and not np.isfinite(known).all():
            bad = ~np.isfinite(colour) & ~mask[..., None] if colour.ndim == 3 else ~np.isfinite(colour) & ~mask
            bad = bad.any(-1) if bad.ndim == 3 else bad
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"image contains NaN or inf outside the mask ({int(bad.sum())} pixels, the first at row {r}, "
                f"column {c}): the edit must match the pixels it keeps, so give them values "
                "(e.g. np.nan_to_num) or include them in the mask"
            )
        if value_range is not None:
            lo, hi = _check_value_range(value_range, image.dtype)
            if known.size and (known.min() < lo or known.max() > hi):
                raise ValueError(
                    f"image values outside the mask span {known.min()}..{known.max()}, outside "
                    f"value_range=({lo:g}, {hi:g})"
                )
            return cls(image.dtype, lo, hi)
        if image.dtype == bool:
            return cls(image.dtype, 0, 1)
        if image.dtype == np.uint8:
            return cls(image.dtype, 0, 255)
        if not known.size:
            if integer:
                raise ValueError(
                    f"the mask covers the whole image, so the value range of this {image.dtype} image cannot "
                    "be read from its unmasked pixels; pass value_range=(low, high)"
                )
            return cls(image.dtype, 0.0, 1.0)
        if integer:
            lo, hi = int(known.min()), int(known.max())
            if lo == hi:
                lo, hi = (lo, lo + 1) if lo < np.iinfo(image.dtype).max else (lo - 1, lo)
            return cls(image.dtype, lo, hi)
        lo, hi = float(known.min()), float(known.max())
        if lo >= 0 and hi <= 1:
            return cls(image.dtype, 0.0, 1.0)
        if not math.isfinite(hi - lo):
            raise ValueError(f"image values span {lo:g}..{hi:g}, too wide to compute with; rescale the image")
        return cls(image.dtype, lo, hi if hi > lo else lo + max(1.0, abs(lo) * 1e-6))

    def to_unit(self, image: np.ndarray) -> np.ndarray:
        return (image.astype(np.float64) - self.lo) / (float(self.hi) - float(self.lo))

    def from_unit(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0, 1) * (float(self.hi) - float(self.lo)) + float(self.lo)
        if self.dtype == bool:
            return x >= 0.5
        if not np.issubdtype(self.dtype, np.integer):
            return np.clip(x, self.lo, self.hi).astype(self.dtype)
        # exact for int64 / uint64 too: no float -> int cast outside the dtype's range
        info = np.iinfo(self.dtype)
        x = np.rint(x)
        top, bottom = x >= float(info.max), x <= float(info.min)
        out = np.where(top | bottom, 0, x).astype(self.dtype)
        out[top], out[bottom] = info.max, info.min
        lo = np.asarray(math.ceil(self.lo), dtype=self.dtype)
        hi = np.asarray(math.floor(self.hi), dtype=self.dtype)
        return np.minimum(np.maximum(out, lo), hi)


def _check_value_range(value_range, dtype) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be (low, high) numbers or None, got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if lo < info.min or hi > info.max:
            raise ValueError(f"value_range {value_range!r} is outside what {dtype} holds ({info.min}..{info.max})")
        return lo, hi
    return lo, hi


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def check_seed(seed, count: int = 1, uses: str = "samples] (candidate k uses seed + k") -> int | None:
    """``seed`` as a Python int, checked: an integer such that ``seed + count - 1`` is still an
    int64 (``count`` edits use seed, seed + 1, ...); None stays None (drawn later)."""
    if seed is None:
        return None
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer (or None to draw one), got {seed!r}")
    if seed < 0 or seed + count - 1 >= SEED_MAX:
        raise ValueError(f"seed must be in [0, 2**63 - {uses}, an int64), got {seed!r}")
    return int(seed)


def check_options(
    samples=1, seed=None, temperature=1.0, top_k=None, top_p=None, greedy=False, feather=2.0, guidance=1.0
) -> dict:
    """The sampling options, checked (``ValueError`` naming the argument) and as plain Python
    numbers."""
    if not _is_int(samples) or not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(
            f"samples must be an integer from 1 to {MAX_SAMPLES} (candidates per call), got {samples!r}; "
            "for more, call again with seed + samples"
        )
    samples = int(samples)
    seed = check_seed(seed, samples)
    if not _is_real(temperature) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (not _is_real(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")
    if not isinstance(greedy, (bool, np.bool_)):
        raise ValueError(f"greedy must be True or False, got {greedy!r}")
    if not _is_real(feather) or not math.isfinite(feather) or feather < 0:
        raise ValueError(f"feather must be a finite number of pixels >= 0, got {feather!r}")
    if not _is_real(guidance) or not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0 (1 = off), got {guidance!r}")
    return dict(
        samples=samples,
        seed=seed,
        temperature=float(temperature),
        top_k=None if top_k is None else int(top_k),
        top_p=None if top_p is None else float(top_p),
        greedy=bool(greedy),
        feather=float(feather),
        guidance=float(guidance),
    )


def _stat(folder: Path) -> dict[str, int]:
    """A cgroup's memory.stat as {key: value}."""
    words = Path(folder, "memory.stat").read_text().split()
    return {k: int(v) for k, v in zip(words[::2], words[1::2])}


def _cgroup_free(proc: str, cgroup: str) -> int | None:
    """Memory left under this process's cgroup limit (limit - usage + reclaimable page cache),
    the tightest over its cgroup and the ones above it; None where there is no limit.

    cgroup v2: the ``0::PATH`` line of /proc/self/cgroup, ``memory.max`` at each level; v1: the
    ``memory`` controller's path and its ``hierarchical_memory_limit``. A container sees its
    own cgroup at the mount's root, whatever the path says (then the root is read); a batch
    job (SLURM, systemd) has its limit down the path."""
    try:
        lines = Path(proc, "self", "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    paths = {}
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    free = []
    if "v2" in paths or Path(cgroup, "memory.max").exists():
        here = Path(cgroup, paths.get("v2", "/").lstrip("/"))
        here = here if here.is_dir() else Path(cgroup)
        for level in [here, *here.parents]:
            try:
                limit = Path(level, "memory.max").read_text().strip()
                if limit != "max":
                    used = int(Path(level, "memory.current").read_text())
                    free.append(int(limit) - used + _stat(level).get("inactive_file", 0))
            except (OSError, ValueError):
                pass
            if level == Path(cgroup):
                break
    root_v1 = Path(cgroup, "memory")
    if root_v1.is_dir():
        here = Path(root_v1, paths.get("v1", "/").lstrip("/"))
        here = here if here.is_dir() else root_v1
        try:
            stat = _stat(here)
            limit = stat.get("hierarchical_memory_limit") or int(Path(here, "memory.limit_in_bytes").read_text())
            if limit < 2**60:  # v1 writes "no limit" as a huge number
                used = int(Path(here, "memory.usage_in_bytes").read_text())
                free.append(limit - used + stat.get("total_inactive_file", 0))
        except (OSError, ValueError):
            pass
    return max(min(free), 0) if free else None


def free_memory(proc: str = "/proc", cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory this process can get now without swapping: the system's
    ``MemAvailable``, or less where its cgroup's memory limit (a container, a batch job)
    leaves less; None where neither can be read (not Linux: then nothing is checked)."""
    free = []
    try:
        for line in Path(proc, "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limited = _cgroup_free(proc, cgroup)
    if limited is not None:
        free.append(limited)
    return min(free) if free else None


def check_output_fits(image: np.ndarray, samples: int) -> None:
    """Refuse, before any work, an edit whose result cannot be held: each candidate is a full
    copy of the image, and 16 candidates of a big image can need more memory than is free,
    which on Linux gets the process killed (napari with it, and whatever was not saved)."""
    size = f"{image.shape[0]}x{image.shape[1]}"
    if samples > 1:
        check_fits(
            samples * image.nbytes,
            f"{samples} candidates of this {size} image (each a full copy of it)",
            "ask for fewer candidates",
        )
    check_fits(image.nbytes, f"the result, a copy of this {size} image,", "free memory, or edit a crop")


def check_fits(need: int, what: str, advice: str) -> None:
    """``ValueError`` "WHAT would need N GiB, more than the M GiB of memory free; ADVICE" when
    ``need`` bytes exceed 80% of :func:`free_memory` (not checked where it cannot be read)."""
    free = free_memory()
    if free is not None and need > 0.8 * free:
        raise ValueError(
            f"{what} would need {need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB of memory free; {advice}"
        )


def check_guidance(guidance: float, mode_def, conditioned: bool) -> float:
    """``guidance`` if the edit's engine can use it: ImageBART has no unconditional branch to
    guide against, so it accepts only 1 (off) with a condition. (A converted iLAT model has
    none either: the sampler refuses that, ``sampler.is_guided``.)"""
    if guidance != 1.0 and conditioned and mode_def.model_kind == "imagebart":
        raise ValueError(
            "guidance is not available for mode imagebart (no unconditional branch to guide against): use guidance 1"
        )
    return guidance


def _to_rgb(unit: np.ndarray) -> np.ndarray:
    if unit.ndim == 2:
        return np.repeat(unit[..., None], 3, axis=2)
    if unit.shape[2] == 1:
        return np.repeat(unit, 3, axis=2)
    return unit[..., :3]


#: an RGB window whose known pixels' channels differ by at most this (0-1 scale: 2 of 255
#: levels, a grey photograph's JPEG noise) has no colour, and is edited as a grey image is
GREY_TOLERANCE = 2 / 255


def _has_no_colour(unit: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the window ``unit`` (values in [0, 1]) is grey where it is known: a greyscale
    image, or an RGB(A) one whose channels agree outside ``mask``. Its fill is then drawn by
    grey level (the palette) and comes out grey, not in the tint of a model trained on
    colour photographs."""
    if unit.ndim == 2 or unit.shape[2] == 1:
        return True
    known = unit[~mask][:, :3]
    return bool(known.size) and float((known.max(1) - known.min(1)).max()) <= GREY_TOLERANCE + 1e-9


def _from_rgb(rgb: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Generated RGB (..., H, W, 3) -> the colour channels of ``like`` (alpha is not ours)."""
    if like.ndim == 2:
        return rgb.mean(-1)
    if like.shape[2] == 1:
        return rgb.mean(-1, keepdims=True)
    return rgb


# --------------------------------------------------------------------------- window


def edit_window(mask: np.ndarray, resolution: int, context: int) -> tuple[int, int, int, int]:
    """(row0, col0, height, width) of the region the model sees.

    At least ``resolution`` a side when the image allows (then the model works at native
    resolution), and large enough to hold the mask's bounding box plus ``context`` pixels
    each side (then it is resized to the model's resolution).
    """
    r_lo, r_hi, c_lo, c_hi = bounding_box(mask)
    side = max(resolution, r_hi - r_lo + 2 * context, c_hi - c_lo + 2 * context)
    h, w = min(side, mask.shape[0]), min(side, mask.shape[1])

    def place(lo, hi, size, extent):
        start = (lo + hi) // 2 - size // 2
        return int(min(max(start, 0), extent - size))

    return place(r_lo, r_hi, h, mask.shape[0]), place(c_lo, c_hi, w, mask.shape[1]), h, w


def native_window(mask: np.ndarray, resolution: int, factor: int, context: int) -> tuple[int, int, int, int] | None:
    """(row0, col0, height, width) of a window at the model's own pixel scale: whole tokens
    (multiples of ``factor``), at least ``resolution`` a side, holding the mask's bounding
    box plus ``context`` pixels each side where the image allows. None when the image is
    smaller than ``resolution`` in a dimension or no whole-token window holds the mask
    (then the window is resized: :func:`edit_window`). A mask that fits one model window
    gets exactly :func:`edit_window`'s window."""
    found = scaled_window(mask, resolution, factor, context, 1.0)
    return None if found is None else found[0]


def scaled_window(
    mask: np.ndarray, resolution: int, factor: int, context: int, scale: float
) -> tuple[tuple[int, int, int, int], tuple[int, int]] | None:
    """:func:`native_window` for the image shrunk ``scale`` times (image pixels per model pixel;
    1 = the model's own scale): ``((row0, col0, height, width), (rows, cols))``, the window in
    image pixels and the size it is resized to, in model pixels (whole tokens, at least
    ``resolution``, holding the mask's bounding box plus ``context`` model pixels each side where
    the image allows). None when the shrunk image is smaller than ``resolution`` in a dimension or
    no whole-token window holds the mask."""
    r0, r1, c0, c1 = bounding_box(mask)
    box, size = [], []
    for lo, hi, extent in ((r0, r1, mask.shape[0]), (c0, c1, mask.shape[1])):
        # the bounding box and the image at model scale (exact integers at scale 1)
        # (ext_m: an image shrunk to exactly one window is one window, whatever the rounding)
        lo_m, hi_m, ext_m = int(np.floor(lo / scale)), int(np.ceil(hi / scale)), int(np.floor(extent / scale + 1e-9))
        top = ext_m // factor * factor
        if top < resolution:
            return None
        n = min(max(resolution, -(-(hi_m - lo_m + 2 * context) // factor) * factor), top)
        if n < hi_m - lo_m:
            return None
        start = (lo_m + hi_m) // 2 - n // 2
        start = min(max(start, hi_m - n, 0), lo_m, ext_m - n)
        # back to image pixels: [start, start + n) * scale holds [lo, hi) and lies in the image
        p0, p1 = int(round(start * scale)), min(int(round((start + n) * scale)), extent)
        box.append((p0, p1 - p0))
        size.append(int(n))
    (r0, h), (c0, w) = box
    return (r0, c0, h, w), (size[0], size[1])


def _figure_scale(
    ratio: float, mask: np.ndarray, side: int, resolution: int, factor: int
) -> tuple[float, float | None]:
    """(scale, declined): the scale (image pixels per model pixel) "auto" edits a figure ``ratio``
    times the training figures' size at: ``ratio``, a large figure's at most the image's shorter
    ``side`` shrunk to one model window, a small one's at most enlarged until the mask's bounding
    box holds FIGURE_ENLARGE_MAX_TOKENS tokens (neither past 1, the model's own scale), and not
    enlarged at all (1) when that would leave it below FIGURE_ENLARGE_MIN_SIZE of the training
    size: part of the way, that short, measured worse than not at all. ``declined`` is then the
    scale the budget allowed (for the warning), else None."""
    if ratio > 1:
        return max(1.0, min(ratio, side / resolution)), None
    r0, r1, c0, c1 = bounding_box(mask)
    box = (r1 - r0) * (c1 - c0)
    scale = min(1.0, max(ratio, float(np.sqrt(box / FIGURE_ENLARGE_MAX_TOKENS)) / factor))
    if scale < 1 and ratio / scale < FIGURE_ENLARGE_MIN_SIZE:
        return 1.0, scale
    return scale, None


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _resize_masked(img: torch.Tensor, mask: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image (B,C,H,W) and mask (B,1,H,W) bool so that unmasked output pixels are
    computed from unmasked input pixels only: output pixels touched by any masked input are
    masked, and the others come from the zero-filled image (same values, no dependence on
    what was under the mask)."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img, mask
    m = _resize(mask.to(img.dtype), size) > 0
    known = _resize(torch.where(mask, 0.0, img), size)
    return torch.where(m, _resize(img, size), known), m


def feather_alpha(mask: np.ndarray, width: float) -> np.ndarray:
    """1 inside the mask, falling linearly to 0 over ``width`` pixels outside it, 0 beyond."""
    if width <= 0:
        return mask.astype(np.float64)
    dist = ndimage.distance_transform_edt(~mask)
    return np.clip(1.0 - dist / (width + 1.0), 0.0, 1.0)


# --------------------------------------------------------------------------- edit


@dataclass(frozen=True)
class EditResult:
    """What :func:`edit_with_info` returns: the edited array and how it was made."""

    image: np.ndarray  # the input's dtype and shape, (samples, *shape) when samples > 1
    seed: int  # the seed used (drawn when none was given): pass it again to reproduce
    mode: str
    samples: int
    model: str  # the model's name
    device: str
    seconds: float
    guidance: float = 1.0  # the guidance scale used (1 = off)
    palette: bool = False  # whether the context palette restricted the codes (edit(palette=))
    scale: float = 1.0  # image pixels per model pixel in the edited window (1: the model's own scale)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each candidate: candidate k is the single edit with ``seed + k``."""
        return tuple(self.seed + k for k in range(self.samples))


def scale_note(scale: float) -> str:
    """How the edited window was scaled (:attr:`EditResult.scale`), for a status line: "" at the
    model's own scale."""
    if abs(scale - 1) < 0.01:
        return ""
    return f"edited at 1/{scale:.1f} of the image's size" if scale > 1 else f"edited at {1 / scale:.1f}x its size"


def edit_with_info(
    image,
    mask,
    pose=None,
    sketch=None,
    *,
    model=None,
    mode: str = "ilat",
    samples: int = 1,
    seed: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = DEFAULT_TOP_K,
    top_p: float | None = None,
    greedy: bool = False,
    guidance: float = DEFAULT_GUIDANCE,
    device="auto",
    feather: float = 2.0,
    value_range=None,
    progress=None,
    cancel=None,
    cache: bool = True,
    resolution: str = "auto",
    decode: str = "auto",
    blend: str = "seamless",
    palette: str = "auto",
) -> EditResult:
    """:func:`edit`, returning an :class:`EditResult`: the array plus the seed (and model,
    mode, device, seconds) actually used. Same arguments as :func:`edit`."""
    t_start = time.perf_counter()
    image = check_image(image)
    mask = normalize_mask(mask, image.shape)
    if mask.all():
        warnings.warn(FULL_MASK_WARNING, UserWarning, stacklevel=2)
    mode_def = get_mode(mode)
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {decode!r}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    check_palette(palette)
    opts = check_options(samples, seed, temperature, top_k, top_p, greedy, feather, guidance)
    samples, feather = opts["samples"], opts["feather"]
    check_output_fits(image, samples)
    pose = None if pose is None else check_pose(pose, image.shape)
    sketch = None if sketch is None else normalize_sketch(sketch, image.shape)
    intensity = _Intensity.of(image, mask, value_range)

    model = edit_model(model, mode, pose, sketch)
    _check_model_kind(model, mode_def)
    # the context palette: by default only for fills without guidance (with a sketch it
    # costs the strokes their colours) and only from a table the model carries
    use_palette = palette == "on" or (
        palette == "auto" and pose is None and sketch is None and model.vqgan.code_colours is not None
    )
    if pose is not None and model.cond != "pose":
        raise ValueError(
            f"model {model.config.name!r} is not pose-conditioned ({model.cond}); drop pose or use a pose model"
        )
    # a pose figure far from the training figures' size: "auto" edits it at the figure's scale;
    # "native" warns past FIGURE_SCALE_WARN, a size the model never saw (resized, the window sets
    # the scale)
    ratio = figure_ratio(pose, model.resolution) if pose is not None and resolution != "resize" else None
    figure_scale = 1.0
    if resolution == "auto" and figure_off_scale(ratio):
        side, factor = min(image.shape[:2]), model.config.vqgan.factor
        figure_scale, declined = _figure_scale(ratio, mask, side, model.resolution, factor)
        limited = figure_scale_limit_warning(ratio, figure_scale, model.resolution, image.shape, declined)
        if limited is not None:
            warnings.warn(limited, UserWarning, stacklevel=2)
    unseen = figure_scale_warning(pose, model.resolution) if pose is not None and resolution == "native" else None
    if unseen is not None:
        warnings.warn(unseen, UserWarning, stacklevel=2)
    if sketch is not None and model.cond != "sketch":
        raise ValueError(
            f"model {model.config.name!r} is not sketch-conditioned ({model.cond}); drop sketch or use a sketch model"
        )
    if sketch is None and getattr(getattr(model, "transformer", None), "requires_condition", False):
        # a model with no unconditional mode (e.g. the converted iLAT FFHQ model): no strokes
        # means an empty stroke map, the condition outside the mask still comes from the image
        sketch = np.zeros(image.shape[:2], np.float32)

    options = SamplingOptions(
        temperature=opts["temperature"],
        top_k=opts["top_k"],
        top_p=opts["top_p"],
        greedy=opts["greedy"],
        guidance=check_guidance(opts["guidance"], mode_def, pose is not None or sketch is not None),
    )

    dev = resolve_device(device)
    param = next(model.parameters())
    if param.device != dev:
        model = model.to(dev)
    dtype = param.dtype
    res = model.resolution

    # ---- window: at the model's pixel scale (native), at the figure's, or resized to its
    # resolution; only the window is converted
    f = model.config.vqgan.factor
    # context in model pixels; the feather band must lie inside the window in image pixels
    context = max(res // 8, int(np.ceil((np.ceil(feather) + 1) / min(figure_scale, 1.0))))
    found = scaled_window(mask, res, f, context, figure_scale) if resolution != "resize" else None
    if found is not None:
        box, size = found
    else:
        box = edit_window(mask, res, context)
        size = (res, res)
    r0, c0, h, w = box
    if (h, w) == (res, res):
        size = (h, w)  # a window at the model's own scale
    native = size == (h, w)
    win = (slice(r0, r0 + h), slice(c0, c0 + w))
    mask_w = mask[win]
    unit = intensity.to_unit(image[win])
    rgb = _to_rgb(unit)
    rgb = np.where(mask_w[..., None], np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0), rgb)
    grey = _has_no_colour(unit, mask_w)
    grey_rgb = grey and unit.ndim == 3 and unit.shape[2] >= 3

    def to_tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev, dtype)

    x = to_tensor(rgb.transpose(2, 0, 1))[None]
    m = torch.from_numpy(np.ascontiguousarray(mask_w)).to(dev)[None, None]
    x, m = _resize_masked(x, m, size)
    x = x * 2 - 1

    sketch_full = None
    if sketch is not None:
        from napari_ilat.engine.sketch import compose_sketch

        full = intensity.to_unit(image)
        sketch_full = compose_sketch(full if full.ndim == 2 else _to_rgb(full), mask, sketch)

    def cond_at(tr0, tc0):
        """The condition of the model window whose top-left token is (tr0, tc0) of the grid."""
        # (products before the division: exact integers at the model's own scale and resized)
        wr, wc = r0 + tr0 * f * h / size[0], c0 + tc0 * f * w / size[1]
        wh, ww = res * h / size[0], res * w / size[1]
        if pose is not None:
            return to_tensor(normalize_keypoints(pose, (wr, wc, wh, ww)))[None]
        if sketch_full is not None:
            wr, wc, wh, ww = (int(round(v)) for v in (wr, wc, wh, ww))
            sk = to_tensor(sketch_full[wr : wr + wh, wc : wc + ww])[None, None]
            return _resize(sk, (res, res)).clamp(0, 1)
        return None

    seed = draw_seed() if opts["seed"] is None else opts["seed"]

    # ---- composite: generated inside the mask, blend in the band, input bytes elsewhere
    alpha = feather_alpha(mask_w, feather)  # the band lies inside the window (context > feather)
    touched = alpha > 0
    # seamless blending compares generated and input on a ring of pixels around the mask
    decoded = touched | ndimage.binary_dilation(mask_w, iterations=3) if blend == "seamless" else touched
    roi = Box(*bounding_box(decoded))  # window pixels
    roi_win = (slice(roi.r0, roi.r1), slice(roi.c0, roi.c1))
    a = alpha[roi_win][..., None]
    touched = touched[roi_win]
    rgb_roi, unit_roi = rgb[roi_win], unit[roi_win]
    out = np.repeat(image[None], samples, axis=0)
    vq = model.vqgan
    use_region = native and decode == "auto" and roi.area <= REGION_MAX_FRACTION * h * w
    # the token sampler of the model's engine (one calling convention for both)
    grid_sampler, net = (sample_imagebart_grid, model.bart) if is_imagebart(model) else (sample_grid, model.transformer)
    with torch.inference_mode():
        # the first stage's work on this window, or the same tensors from the last edits
        key = first_stage_key(
            vq,
            dev,
            dtype,
            mode_def.two_stream,
            box,
            size,
            (intensity.lo, intensity.hi),
            image_win=image[win],
            mask_win=mask_w,
        )
        entry = FIRST_STAGE_CACHE.get(key, vq)
        if entry is None:
            z_hat = vq.encode(x, m if mode_def.two_stream else None, known_only=True)
            _, tokens, _ = vq.quantize_latents(z_hat)
            entry = FIRST_STAGE_CACHE.put(key, vq, {"z_hat": z_hat, "tokens": tokens, "token_mask": vq.token_mask(m)})
        z_hat, tokens, m_q = entry["z_hat"], entry["tokens"], entry["token_mask"]
        if use_palette:  # the codes the known pixels around the mask allow (model scale), kept with the entry
            if "palette" in entry:
                allowed = entry["palette"]
            else:
                known_rgb = ((x[0] + 1) / 2).permute(1, 2, 0).float().cpu().numpy()
                allowed = allowed_codes(colours_of(vq, cancel=cancel), known_rgb, m[0, 0].cpu().numpy(), grey=grey)
                FIRST_STAGE_CACHE.add(key, "palette", allowed)
            use_palette = allowed is not None  # None: no known pixel in the band
            if use_palette:
                options = dataclasses.replace(options, allowed=torch.from_numpy(allowed).to(dev))
        known = ~m_q[0]
        tokens = torch.where(known, tokens[0], 0)  # masked ids are never read
        grid = tuple(m_q.shape[-2:])
        ref = None
        if use_region:
            ref_name = ("decode_reference", roi, REGION_MARGIN)
            ref = entry.get(ref_name)
            if ref is None:
                ref = record_reference(vq, z_hat, region_plan(vq.config, grid, roi, REGION_MARGIN))
                FIRST_STAGE_CACHE.add(key, ref_name, ref)
        # the transformer's prompt for this window, kept with the entry for repeated Generate
        prompts = entry.get("prompts")
        if prompts is None:
            prompts = {}
            FIRST_STAGE_CACHE.add(key, "prompts", prompts)
        for k in range(samples):  # candidate k = the single edit with seed + k
            generator = torch.Generator(device=dev)
            generator.manual_seed(seed + k)
            step = None
            if progress is not None:

                def step(done, total, k=k):
                    progress(k * total + done, samples * total)

            out_tokens = grid_sampler(
                net,
                tokens,
                known,
                cond_at,
                window=net.config.grid,
                mode=mode_def.order,
                options=options,
                generator=generator,
                progress=step,
                cancel=cancel,
                cache=cache,
                **({} if is_imagebart(model) else {"prompts": prompts}),
            )
            if ref is not None:
                z = torch.where(m_q[:, None], vq.embed_tokens(out_tokens[None]), z_hat)
                gen = ((decode_region(vq, z, ref) + 1) / 2).clamp(0, 1)
            else:
                gen = vq.decode_tokens(out_tokens[None], z_hat, m_q)
                gen = _resize(((gen + 1) / 2).clamp(0, 1), (h, w))[..., roi.r0 : roi.r1, roi.c0 : roi.c1]
            gen = gen[0].permute(1, 2, 0).double().cpu().numpy()  # (roi h, roi w, 3)
            if grey_rgb:  # an RGB image without colour: a grey fill, not the model's tint
                gen = np.repeat(gen.mean(-1, keepdims=True), 3, axis=-1)
            if blend == "seamless":  # shifted smoothly to meet the input at the mask's edge
                gen = seamless(gen, rgb_roi, mask_w[roi_win])
            blended = a * gen + (1 - a) * rgb_roi
            values = intensity.from_unit(_from_rgb(blended, unit_roi))
            out_win = out[k][win][roi_win]
            if image.ndim == 3 and image.shape[2] == 4:
                out_win[touched, :3] = values[touched]  # alpha is returned as given
            else:
                out_win[touched] = values[touched]
    return EditResult(
        image=out if samples > 1 else out[0],
        seed=seed,
        mode=mode,
        samples=int(samples),
        model=str(getattr(model.config, "name", "model")),
        device=str(dev),
        seconds=time.perf_counter() - t_start,
        guidance=options.guidance,
        palette=use_palette,
        scale=(h / size[0] + w / size[1]) / 2,
    )


def edit(
    image,
    mask,
    pose=None,
    sketch=None,
    *,
    model=None,
    mode: str = "ilat",
    samples: int = 1,
    seed: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = DEFAULT_TOP_K,
    top_p: float | None = None,
    greedy: bool = False,
    guidance: float = DEFAULT_GUIDANCE,
    device="auto",
    feather: float = 2.0,
    value_range=None,
    progress=None,
    cancel=None,
    cache: bool = True,
    resolution: str = "auto",
    decode: str = "auto",
    blend: str = "seamless",
    palette: str = "auto",
) -> np.ndarray:
    """Regenerate the masked region of ``image``; everything else is returned as given.

    Parameters
    ----------
    image : (H, W), (H, W, 1|3|4) array of real numbers or bool (any integer or float
        dtype). Its value range, which the output stays in: ``value_range`` when given;
        else uint8 0..255, bool 0..1, floats in [0, 1] as is, and every other dtype (floats
        beyond [0, 1], uint16, int8..int64, uint32, uint64) the min..max of the unmasked
        pixels' colour channels (so 12-bit data in uint16 stays 12-bit). Alpha is returned
        as given.
    mask : (H, W) array (or (H, W, C) from a colour file); non-zero in any colour
        channel = region to regenerate; a varying alpha channel counts too (the rule:
        napari_ilat.engine.inputs).
    pose : optional (18, 2|3) keypoints (x = column, y = row[, visible]) in image pixels,
        COCO/OpenPose order; invisible keypoints are -1 (17 rows: COCO-17, 25 rows: OpenPose
        BODY_25, converted: napari_ilat.engine.skeleton.to_coco18). Needs a pose model. A keypoint more
        than the image's size outside it is an error; a pose in the top-left third only
        warns (made for a smaller image?).
    sketch : optional (H, W) stroke map, 1 = stroke, used inside the mask; outside it the
        condition is XDoG of the unmasked image. Needs a sketch model. bool, floats in
        [0, 1] as is; uint8 / uint16 divided by 255 / 65535; other values up to 255 divided
        by 255 (the rule: napari_ilat.engine.inputs).
    model : an :class:`ILATModel`, a bundled model name or a path to a saved model.
        Default: "pose" when a pose is given, else "natural"; for mode "imagebart" the
        first bundled ImageBART model.
    mode : "ilat" (two-stream encoder + local AR), "ilat*" (plain encoder, ablation),
        "taming" (plain encoder, raster AR with context from above/left only) or
        "imagebart" (plain encoder + coarse-to-fine reverse diffusion; needs an ImageBART
        model, napari_ilat.engine.imagebart).
    samples : number of candidates, 1..MAX_SAMPLES (64), generated one at a time; > 1 adds
        a leading candidate axis to the output. Candidate k is the single edit with seed
        ``seed + k``.
    seed : an integer in [0, 2**63 - samples]; same seed and inputs give the same output;
        None draws a fresh one (draw_seed; edit_with_info reports it).
    temperature, top_k, top_p, greedy : sampling options (see SamplingOptions). top_k keeps
        the K most likely codes at each step (default DEFAULT_TOP_K = 20); None samples from
        the whole distribution.
    guidance : classifier-free guidance on the pose or sketch, a number >= 0: each step
        samples from log p_uncond + guidance * (log p_cond - log p_uncond), the model run
        with and without the condition (twice the sampling work). 1 (default,
        DEFAULT_GUIDANCE) = off, the model as trained; larger follows the condition more
        closely (with the bundled models not more accurately: docs/benchmarks.md,
        "Sampling: guidance"); 0 ignores it. iLAT and Taming modes; with ImageBART or a
        converted model (no unconditional branch) only 1. No effect without a pose or sketch.
    device : "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N".
    feather : width in pixels of the blend band outside the mask (0 = hard edge), finite.
    value_range : optional (low, high): the image's value range (e.g. (0, 4095) for 12-bit
        data), instead of the rule above. Unmasked values must lie in it.
    progress : callable(done, total) after each generated token.
    cancel : threading.Event or callable returning True to stop (raises EditCancelled).
    cache : False recomputes the whole sequence for every token, like the reference code
        (same result; only for benchmarks).
    resolution : "native": a mask larger than the model's window (128 px for the bundled
        models) is generated at the model's pixel scale with sliding windows, time growing
        with the masked area; "resize": the mask's surroundings are resized into one window
        and the result scaled back (faster, coarser). Masks that fit one window: the same
        either way. "auto" (default): "native", except a pose edit whose figure's median bone
        is more than FIGURE_SCALE_BAND (1.75) times longer or shorter than the pose model's
        training figures' (17.5 px at 128 px): that is edited as "native" on the image scaled
        to make the figure's bones as long as theirs (a small figure's at most until the mask's
        box holds FIGURE_ENLARGE_MAX_TOKENS tokens, and not at all when that would leave it
        below FIGURE_ENLARGE_MIN_SIZE, 0.3, of their size), and the result scaled back (a pose model
        draws limbs at the size it was trained on; "native" warns past 2.5x, a size the model
        never saw). ``edit_with_info(...).scale`` says the scale used.
    decode : "auto" (default): decode only the region of the mask and its feather band when
        it covers at most half the window (a few grey levels from a full decode: the
        decoder's normalisation statistics come from the unmasked image's decode); "full":
        decode the whole window.
    blend : "seamless" (default): the generated content is shifted smoothly (a fill of its
        difference from the input around the mask: biharmonic at the edge, harmonic deep
        inside) to meet the input at the mask's edge, keeping its detail
        (napari_ilat.engine.blend); "alpha": pasted as
        decoded, with the feather band cross-fading.
    palette : "auto" (default), "on" or "off": the context palette (napari_ilat.engine.palette)
        draws only codes whose decoded colour lies within 20 levels (0-255 RGB distance) of at
        least a share PALETTE_SUPPORT (engine.defaults, 30%) of the known pixels at most 16 px
        (model scale) around the mask (a grey image: of any one, by grey level), or the 40
        nearest. "auto":
        on for edits without a pose or sketch, with a model that carries a colour table (the
        bundled ones do; `napari-ilat train export` writes it); "on": also with guidance, and
        a model without a table gets one computed first (about a minute of a CPU at the
        bundled size). Measured: docs/benchmarks.md, "Sampling: the context palette".

    Returns
    -------
    Array of the input's dtype and shape, or (samples, *shape) when samples > 1. Bad input
    raises ValueError naming the argument.
    """
    return edit_with_info(
        image,
        mask,
        pose,
        sketch,
        model=model,
        mode=mode,
        samples=samples,
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        guidance=guidance,
        device=device,
        feather=feather,
        value_range=value_range,
        progress=progress,
        cancel=cancel,
        cache=cache,
        resolution=resolution,
        decode=decode,
        blend=blend,
        palette=palette,
    ).image
