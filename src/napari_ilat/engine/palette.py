"""The context palette: a fill drawn only from codes whose colour its surroundings have.

Without a sketch or pose to follow, the bundled natural model's most likely codes are flat
fields in colours the photograph may not have (near-black, near-white, saturated magenta:
docs/benchmarks.md, "Natural edits without a sketch"). The palette is a sampling rule, no
training: every code has a colour (its decode, below), and at every sampled token only the
codes whose colour lies within ``tau`` of a share (``support``, 30%) of the known pixels in a
band around the mask may be drawn. Measured on held-out patches it helps fills without
guidance and hurts sketch-guided ones, which draw strokes in colours the band may lack; so
``edit(palette="auto")`` uses it only without a pose or sketch (docs/benchmarks.md,
"Sampling: the context palette").

A code's colour is the mean of the centre of a uniform ``size`` x ``size`` token map of it,
decoded: the decoder's convolutions mix neighbouring codes, so a code alone or in a small map
decodes to another colour than in a field of its own (a 4x4 map differs from the 16x16 one
by 12 of 255 levels on average). Decoding every code costs about a minute of two CPU cores
at the bundled models' size (61 s for 512 codes, measured), so the table is computed once,
when a model is exported (or by ``napari-ilat convert colours``), and stored in its JSON
(``code_colours``). For a model without one, ``palette="auto"`` stays off and
``palette="on"`` computes it first (:func:`colours_of`, kept for the session only).
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from scipy import ndimage

from napari_ilat.engine.defaults import PALETTE_SUPPORT
from napari_ilat.engine.sampler import EditCancelled, is_cancelled

COLOUR_MAP_SIZE = 16  # tokens a side of the uniform map a code's colour is read from
PALETTE_TAU = 20.0  # RGB distance, 0-255 levels, from a code's colour to the band's pixels
# PALETTE_SUPPORT (engine/defaults.py, which the CLI's help and the widget read): the share of
# the band's pixels a code's colour must lie within PALETTE_TAU of; any one pixel (0, before
# the twenty-sixth session) let a few dark pixels (a shadow line, wood grain) admit the dark
# codes, and the fill of a hole in a light photograph sometimes came out a dark blob.
# PALETTE_SUPPORT_GREY: a grey image's codes (compared by grey level, ``allowed_codes(grey=True)``) keep the rule of
# any one pixel: on grey validation cases the share cost brush strokes 0.23 dB and box holes
# 0.37 (docs/benchmarks.md)
PALETTE_SUPPORT_GREY = 0.0
PALETTE_BAND = 16  # pixels around the mask, at the model's scale, whose colours count
PALETTE_MIN_CODES = 40  # the nearest codes allowed whatever tau says (a band of one colour)
PALETTE_PIXELS = 2000  # band pixels compared (a fixed-seed subsample of larger bands)
PALETTES = ("auto", "on", "off")


def code_colours(vqgan, size: int = COLOUR_MAP_SIZE, batch: int = 16, progress=None, cancel=None) -> np.ndarray:
    """(n_embed, 3) uint8: each code's decoded colour (RGB, 0-255), read from the centre half
    of a uniform ``size`` x ``size`` map of it. ``progress(done, n_embed)`` after each batch
    of codes; ``cancel`` (as for sampling) is checked before each and raises
    :class:`~napari_ilat.engine.sampler.EditCancelled`."""
    param = next(vqgan.parameters())
    n = vqgan.config.n_embed
    lo, hi = size // 4, size - size // 4
    out = []
    with torch.inference_mode():
        for k0 in range(0, n, batch):
            if is_cancelled(cancel):
                raise EditCancelled()
            ids = torch.arange(k0, min(n, k0 + batch), device=param.device)[:, None, None].expand(-1, size, size)
            img = vqgan.decode_tokens(ids).float()
            f = img.shape[-1] // size
            out.append(img[:, :, lo * f : hi * f, lo * f : hi * f].mean((2, 3)).cpu())
            if progress is not None:
                progress(min(n, k0 + batch), n)
    rgb = (torch.cat(out).clamp(-1, 1) + 1) * 127.5
    return np.rint(rgb.numpy()).astype(np.uint8)


# Tables computed for first stages that carry none, kept apart from ``code_colours`` (what a
# model file carries and palette="auto" looks at): an edit with palette="on" must not change
# what a later "auto" edit of the same model does.
_COMPUTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def colours_of(vqgan, progress=None, cancel=None) -> np.ndarray:
    """The first stage's colour table: the one it carries (``code_colours``, from its model
    file), else one computed once (slow on a CPU, see the module docstring; ``progress`` and
    ``cancel`` as for :func:`code_colours`) and kept for the module's lifetime. A cancelled
    computation keeps nothing."""
    if vqgan.code_colours is not None:
        return vqgan.code_colours
    table = _COMPUTED.get(vqgan)
    if table is None:
        table = code_colours(vqgan, progress=progress, cancel=cancel)
        _COMPUTED[vqgan] = table
    return table


def has_colours(vqgan) -> bool:
    """Whether :func:`colours_of` answers at once (a carried or an already computed table)."""
    return vqgan.code_colours is not None or vqgan in _COMPUTED


def colours_to_json(table: np.ndarray) -> dict:
    """The JSON form: how the table was made and its bytes in hex (one line, 6 * n_embed chars)."""
    return {"map_size": COLOUR_MAP_SIZE, "rgb_hex": np.ascontiguousarray(table, np.uint8).tobytes().hex()}


def colours_from_json(entry, n_embed: int, where: str) -> np.ndarray:
    """The table of a model JSON's ``code_colours`` entry; ValueError naming ``where`` when
    it is not one of ``n_embed`` RGB colours."""
    try:
        data = bytes.fromhex(entry["rgb_hex"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: 'code_colours' is not a colour table ({e})") from e
    if len(data) != 3 * n_embed:
        raise ValueError(f"{where}: 'code_colours' holds {len(data) / 3:g} colours, the codebook has {n_embed} codes")
    return np.frombuffer(data, np.uint8).reshape(n_embed, 3).copy()


def table_meta(vqgan) -> dict:
    """The model JSON's entry for ``vqgan``'s colour table: ``{"code_colours": ...}``, or
    nothing when it has none."""
    table = vqgan.code_colours
    return {} if table is None else {"code_colours": colours_to_json(table)}


def read_table(vqgan, meta: dict, where) -> None:
    """Give ``vqgan`` the colour table of its model JSON ``meta``, when it has one."""
    if "code_colours" in meta:
        vqgan.code_colours = colours_from_json(meta["code_colours"], vqgan.config.n_embed, str(where))


def allowed_codes(
    table: np.ndarray,
    rgb: np.ndarray,
    mask: np.ndarray,
    *,
    grey: bool = False,
    tau: float = PALETTE_TAU,
    band: int = PALETTE_BAND,
    min_codes: int = PALETTE_MIN_CODES,
    support: float | None = None,
) -> np.ndarray | None:
    """(n_embed,) bool: the codes whose colour lies within ``tau`` of at least a share
    ``support`` of the known pixels of ``rgb`` ((H, W, 3) in [0, 1]) at most ``band`` pixels
    from ``mask`` ((H, W) bool; ``support`` 0: of any one of them; None: PALETTE_SUPPORT, or
    PALETTE_SUPPORT_GREY with ``grey``), and always the ``min_codes`` nearest by that measure.
    None when no known pixel lies in the band (nothing to match).

    ``grey``: the edit's output keeps no colour (a greyscale image; the generated RGB is
    averaged into it), so a code counts by its grey level, the mean of its colour, as the
    output will show it. Compared in colour, a grey band is near only the few neutral codes
    of a model trained on colour photographs, mostly its dark ones (at low intensity every
    hue is close to grey), and the fill came out near-black (docs/benchmarks.md, "Sampling:
    the context palette")."""
    ring = ndimage.binary_dilation(mask, iterations=band) & ~mask
    px = rgb[ring].reshape(-1, 3).astype(np.float32) * 255
    if len(px) == 0:
        return None
    if len(px) > PALETTE_PIXELS:  # a fixed subsample: the same inputs give the same palette
        px = px[np.random.default_rng(0).choice(len(px), PALETTE_PIXELS, replace=False)]
    if support is None:
        support = PALETTE_SUPPORT_GREY if grey else PALETTE_SUPPORT
    colours = table.astype(np.float32)
    if grey:
        colours = np.repeat(colours.mean(1, keepdims=True), 3, axis=1)
    dist = np.sqrt(((colours[:, None, :] - px[None]) ** 2).sum(-1))  # (codes, pixels)
    # each code's distance to the nearest ``support`` share of the pixels (0: the nearest pixel)
    d = dist.min(1) if support <= 0 else np.quantile(dist, support, axis=1)
    keep = d <= tau
    k = min(min_codes, len(d))
    if keep.sum() < k:
        keep = d <= np.sort(d)[k - 1]
    return keep


def check_palette(palette) -> str:
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {', '.join(PALETTES)}, got {palette!r}")
    return palette


__all__ = [
    "PALETTES",
    "PALETTE_SUPPORT",
    "allowed_codes",
    "check_palette",
    "code_colours",
    "colours_from_json",
    "colours_of",
    "colours_to_json",
    "has_colours",
    "read_table",
    "table_meta",
]
