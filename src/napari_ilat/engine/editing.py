"""``edit()``: numpy in, numpy out local editing with an iLAT model.

The pipeline, and the one rule it keeps: the old content inside the mask may reach the
*masked* tokens (it is regenerated anyway) but never anything that survives into the output.

1. validate and convert the image to float RGB in [0, 1] (range taken from unmasked pixels);
2. pick a window around the mask (native resolution when it fits the model, else resized);
3. encode with the two-stream encoder (``ilat``) or the plain one (``ilat*``, ``taming``),
   quantize, M_q = maxpool_f(mask);
4. sample the masked tokens (cached sampler, ``samples`` candidates in one batch);
5. decode z_q*M_q + z_hat*(1-M_q), paste back, and composite with a feather band that lies
   *outside* the mask: inside it generated pixels, in the band a blend of generated and
   original unmasked pixels, everywhere else the input bytes unchanged.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_ilat.engine.conditions import normalize_keypoints
from napari_ilat.engine.inputs import check_image, check_pose, normalize_mask, normalize_sketch
from napari_ilat.engine.model import ILATModel, load_model
from napari_ilat.engine.modes import MODE_NAMES, get_mode
from napari_ilat.engine.sampler import EditCancelled, SamplingOptions, sample_tokens

#: The mode names edit() accepts (the definitions: napari_ilat.engine.modes.MODES).
MODES = MODE_NAMES
#: Seeds are drawn from [0, SEED_LIMIT): they fit the widget's seed box and any int32.
SEED_LIMIT = 2**31

__all__ = [
    "edit",
    "edit_with_info",
    "EditResult",
    "EditCancelled",
    "MODES",
    "draw_seed",
    "cached_model",
    "resolve_device",
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
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return dev


@lru_cache(maxsize=4)
def _load_cached(name: str) -> ILATModel:
    return load_model(name)


def cached_model(model) -> ILATModel:
    """``model`` as an :class:`ILATModel`: one as is, a bundled name or a path loaded once
    (the last four are kept)."""
    return model if isinstance(model, ILATModel) else _load_cached(str(model))


def _default_model(pose, sketch) -> str:
    return "pose" if pose is not None else "natural"


# --------------------------------------------------------------------------- intensities


@dataclass
class _Intensity:
    """How the input's values map to [0, 1] and back."""

    dtype: np.dtype
    lo: float
    hi: float

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray) -> _Intensity:
        if image.dtype == bool:
            return cls(image.dtype, 0.0, 1.0)
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            return cls(image.dtype, float(min(info.min, 0)), float(info.max))
        known = image[~mask]  # never the masked pixels: their values must not matter
        if not np.isfinite(known).all():
            raise ValueError("image contains NaN or inf outside the mask")
        lo, hi = float(known.min()), float(known.max())
        if lo >= 0 and hi <= 1:
            return cls(image.dtype, 0.0, 1.0)
        return cls(image.dtype, lo, hi if hi > lo else lo + 1)

    def to_unit(self, image: np.ndarray) -> np.ndarray:
        return (image.astype(np.float64) - self.lo) / (self.hi - self.lo)

    def from_unit(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0, 1) * (self.hi - self.lo) + self.lo
        if np.issubdtype(self.dtype, np.integer) or self.dtype == bool:
            x = np.rint(x)
        return x.astype(self.dtype)


def _to_rgb(unit: np.ndarray) -> np.ndarray:
    if unit.ndim == 2:
        return np.repeat(unit[..., None], 3, axis=2)
    if unit.shape[2] == 1:
        return np.repeat(unit, 3, axis=2)
    return unit[..., :3]


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
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    r_lo, r_hi, c_lo, c_hi = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(resolution, r_hi - r_lo + 2 * context, c_hi - c_lo + 2 * context)
    h, w = min(side, mask.shape[0]), min(side, mask.shape[1])

    def place(lo, hi, size, extent):
        start = (lo + hi) // 2 - size // 2
        return int(min(max(start, 0), extent - size))

    return place(r_lo, r_hi, h, mask.shape[0]), place(c_lo, c_hi, w, mask.shape[1]), h, w


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
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    device="auto",
    feather: float = 2.0,
    progress=None,
    cancel=None,
    cache: bool = True,
) -> EditResult:
    """:func:`edit`, returning an :class:`EditResult`: the array plus the seed (and model,
    mode, device, seconds) actually used. Same arguments as :func:`edit`."""
    t_start = time.perf_counter()
    image = check_image(image)
    mask = normalize_mask(mask, image.shape)
    mode_def = get_mode(mode)
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if feather < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {feather}")
    pose = None if pose is None else check_pose(pose)
    sketch = None if sketch is None else normalize_sketch(sketch, image.shape)
    options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)

    if model is None:
        model = _default_model(pose, sketch)
    model = cached_model(model)
    if pose is not None and model.cond != "pose":
        raise ValueError(
            f"model {model.config.name!r} is not pose-conditioned ({model.cond}); drop pose or use a pose model"
        )
    if sketch is not None and model.cond != "sketch":
        raise ValueError(
            f"model {model.config.name!r} is not sketch-conditioned ({model.cond}); drop sketch or use a sketch model"
        )

    dev = resolve_device(device)
    param = next(model.parameters())
    if param.device != dev:
        model = model.to(dev)
    dtype = param.dtype
    res = model.resolution

    intensity = _Intensity.of(image, mask)
    unit = intensity.to_unit(image)
    rgb = _to_rgb(unit)
    rgb = np.where(mask[..., None], np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0), rgb)

    # ---- window, resized to the model's resolution
    context = max(res // 8, int(np.ceil(feather)) + 1)
    r0, c0, h, w = edit_window(mask, res, context)
    win = (slice(r0, r0 + h), slice(c0, c0 + w))

    def to_tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev, dtype)

    x = to_tensor(rgb[win].transpose(2, 0, 1))[None]
    m = torch.from_numpy(mask[win]).to(dev)[None, None]
    x, m = _resize_masked(x, m, (res, res))
    x = x * 2 - 1

    cond = None
    if pose is not None:
        cond = to_tensor(normalize_keypoints(pose, (r0, c0, h, w)))[None]
    elif sketch is not None:
        from napari_ilat.engine.sketch import compose_sketch

        full = compose_sketch(unit if unit.ndim == 2 else rgb, mask, sketch)
        s = to_tensor(full[win])[None, None]
        cond = _resize(s, (res, res)).clamp(0, 1)

    generator = torch.Generator(device=dev)
    seed = draw_seed() if seed is None else int(seed)
    generator.manual_seed(seed)

    vq = model.vqgan
    with torch.inference_mode():
        z_hat = vq.encode(x, m if mode_def.two_stream else None)
        _, tokens, _ = vq.quantize_latents(z_hat)
        m_q = vq.token_mask(m)
        known = ~m_q[0].flatten()
        tokens = torch.where(known, tokens[0].flatten(), 0)  # masked ids are never read
        out_tokens = sample_tokens(
            model.transformer,
            tokens,
            known,
            cond,
            mode=mode_def.order,
            samples=samples,
            options=options,
            generator=generator,
            progress=progress,
            cancel=cancel,
            cache=cache,
        )
        grid = m_q.shape[-2:]
        gen = vq.decode_tokens(
            out_tokens.view(samples, *grid),
            z_hat.expand(samples, -1, -1, -1),
            m_q.expand(samples, -1, -1),
        )
        gen = _resize(((gen + 1) / 2).clamp(0, 1), (h, w))
    gen = gen.permute(0, 2, 3, 1).double().cpu().numpy()  # (samples, h, w, 3)

    # ---- composite: generated inside the mask, blend in the band, input bytes elsewhere
    alpha = feather_alpha(mask, feather)
    a = alpha[win][None, ..., None]
    blended = a * gen + (1 - a) * rgb[win][None]
    values = intensity.from_unit(_from_rgb(blended, unit[win]))
    touched = alpha[win] > 0
    out = np.repeat(image[None], samples, axis=0)
    out_win = out[(slice(None),) + win]
    if image.ndim == 3 and image.shape[2] == 4:
        out_win[:, touched, :3] = values[:, touched]  # alpha is returned as given
    else:
        out_win[:, touched] = values[:, touched]
    return EditResult(
        image=out if samples > 1 else out[0],
        seed=seed,
        mode=mode,
        samples=int(samples),
        model=str(getattr(model.config, "name", "model")),
        device=str(dev),
        seconds=time.perf_counter() - t_start,
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
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    device="auto",
    feather: float = 2.0,
    progress=None,
    cancel=None,
    cache: bool = True,
) -> np.ndarray:
    """Regenerate the masked region of ``image``; everything else is returned as given.

    Parameters
    ----------
    image : (H, W), (H, W, 1|3|4) array, uint8/uint16/bool/float. Floats in [0, 1] are used
        as is; other float ranges are mapped from the unmasked pixels' min..max.
    mask : (H, W) array (or (H, W, C) from a colour file); non-zero in any colour
        channel = region to regenerate.
    pose : optional (18, 2|3) keypoints (x = column, y = row[, visible]) in image pixels,
        COCO/OpenPose order; invisible keypoints are -1. Needs a pose model.
    sketch : optional (H, W) stroke map, 1 = stroke, used inside the mask; outside it the
        condition is XDoG of the unmasked image. Needs a sketch model. bool, floats in
        [0, 1] as is; uint8 / uint16 divided by 255 / 65535; other values up to 255 divided
        by 255 (the rule: napari_ilat.engine.inputs).
    model : an :class:`ILATModel`, a bundled model name or a path to a saved model.
        Default: "pose" when a pose is given, else "natural".
    mode : "ilat" (two-stream encoder + local AR), "ilat*" (plain encoder, ablation) or
        "taming" (plain encoder, raster AR with context from above/left only).
    samples : number of candidates; > 1 adds a leading candidate axis to the output.
    seed : same seed and inputs give the same output; None draws a fresh one (draw_seed;
        edit_with_info reports it).
    temperature, top_k, top_p, greedy : sampling options (see SamplingOptions).
    device : "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N".
    feather : width in pixels of the blend band outside the mask (0 = hard edge).
    progress : callable(done, total) after each generated token.
    cancel : threading.Event or callable returning True to stop (raises EditCancelled).
    cache : False recomputes the whole sequence for every token, like the reference code
        (same result; only for benchmarks).

    Returns
    -------
    Array of the input's dtype and shape, or (samples, *shape) when samples > 1.
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
        device=device,
        feather=feather,
        progress=progress,
        cancel=cancel,
        cache=cache,
    ).image
