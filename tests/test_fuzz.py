"""Issue 17: property-based fuzzing of edit()'s inputs (hypothesis).

For any image (dtype, shape, value range, NaN / inf), mask (dtype, contents, shape), pose and
options, edit() either raises a ValueError whose message names the argument, or returns an
array of the input's shape (plus the candidate axis) and dtype whose pixels outside the mask
and its feather band equal the input's exactly and whose values lie in the input's value
range (docs/usage.md: uint8 0..255, bool, floats in [0, 1], other dtypes the unmasked min..max).

Profiles (HYPOTHESIS_PROFILE): ``ci`` (default, few examples, derandomized: under a minute
on a 2-core CPU) and ``dev`` (many examples, random: run locally,
``HYPOTHESIS_PROFILE=dev pytest tests/test_fuzz.py``).
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_ilat import edit  # noqa: E402
from napari_ilat.engine.editing import feather_alpha  # noqa: E402
from napari_ilat.engine.inputs import normalize_mask  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=120, derandomize=True, **_common)
settings.register_profile("dev", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Every argument name a ValueError may name (the message must contain one).
ARGUMENTS = (
    "image",
    "mask",
    "pose",
    "samples",
    "seed",
    "temperature",
    "top_k",
    "top_p",
    "greedy",
    "feather",
    "value_range",
    "device",
    "mode",
)

DTYPES = [
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.bool_,
]


def _rare(draw) -> bool:
    """True about once in 12 draws (a bad value among good ones)."""
    return draw(st.integers(0, 11)) == 5


@st.composite
def images(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    h, w = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    if _rare(draw):
        h = draw(st.integers(1, 7))  # too small
    channels = draw(st.sampled_from([None, 3, 1, 4]))
    if _rare(draw):
        channels = draw(st.sampled_from([2, 5]))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        a = draw(st.integers(int(info.min), int(info.max)))
        b = draw(st.integers(int(info.min), int(info.max)))
        lo, hi = min(a, b), max(a, b)
        return rng.integers(lo, hi, size=shape, endpoint=True, dtype=dtype)
    scale = draw(st.sampled_from([1.0, 1.0, 255.0, 1e4, 1e-3, -1.0]))
    img = (rng.random(shape) * scale + draw(st.sampled_from([0.0, 0.0, -0.5, 100.0]))).astype(dtype)
    if _rare(draw):  # NaN / inf somewhere
        img.flat[rng.integers(img.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return img


@st.composite
def masks(draw, shape):
    h, w = shape[:2]
    if _rare(draw):  # another size
        h += draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["box", "random", "full"])) if not _rare(draw) else "empty"
    m = np.zeros((h, w), bool)
    if kind == "box":
        r, c = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        m[r : r + draw(st.integers(1, h)), c : c + draw(st.integers(1, w))] = True
    elif kind == "random":
        m = rng.random((h, w)) < draw(st.floats(0.01, 0.9))
    elif kind == "full":
        m[:] = True
    form = draw(st.sampled_from(["bool", "uint8", "float", "labels", "rgba", "rgba-alpha"]))
    if _rare(draw):
        form = draw(st.sampled_from(["nan", "strings"]))
    if form == "uint8":
        return m.astype(np.uint8) * 255
    if form == "float":
        return m * 0.5
    if form == "labels":
        return m.astype(np.int32) * draw(st.integers(-5, 5))
    if form == "rgba":
        out = np.zeros((h, w, 4), np.uint8)
        out[..., 3] = 255
        out[m, 0] = 200
        return out
    if form == "rgba-alpha":
        out = np.zeros((h, w, 4), np.uint8)
        out[m, 3] = 255
        return out
    if form == "nan":
        out = m.astype(float)
        out[0, 0] = np.nan
        return out
    if form == "strings":
        return np.where(m, "x", "")
    return m


def poses(shape):
    h, w = shape[:2]
    good = st.lists(
        st.tuples(
            st.floats(-1, 1.5 * w, allow_nan=False), st.floats(-1, 1.5 * h, allow_nan=False), st.sampled_from([0, 1])
        ),
        min_size=18,
        max_size=18,
    )
    bad = st.sampled_from([np.zeros((16, 2)), np.full((18, 3), np.nan), [[1, 2]] * 17 + [[1]], "pose", 5.0])
    return st.one_of(st.none(), st.none(), good, bad)


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "samples": st.sampled_from([1, 1, 2, 2, 3, 1, 2, 0, 2.0, -1, True, 65]),
        "seed": st.one_of(st.integers(0, 2**63 - 4), st.integers(0, 2**63 - 4), st.sampled_from([-1, 1.7, 2**63, "1"])),
        "temperature": st.sampled_from([0.5, 1.0, 2.0, 1.0, 0.7, 1.0, 0.0, -1.0, float("inf"), float("nan")]),
        "top_k": st.sampled_from([None, 1, 5, 100, None, 3, 0, 1.5]),
        "top_p": st.sampled_from([None, 0.5, 1.0, 0.9, None, 0.3, 0.0, 1.5, float("nan")]),
        "greedy": st.sampled_from([False, True, False, True, "yes"]),
        "feather": st.sampled_from([0, 0.0, 1.0, 2.5, 6, 2, 3.5, 1, -1.0, float("inf"), float("nan")]),
        "mode": st.sampled_from(["ilat", "ilat*", "taming", "ilat", "ilat*", "taming", "fast"]),
        "device": st.sampled_from(["cpu", "auto", "cpu", "auto", "cpu", "meta", "tpu"]),
    },
)


def value_range_of(image: np.ndarray, mask: np.ndarray):
    """The range the output must lie in (docs/usage.md, 'What each input gets')."""
    if image.dtype == bool:
        return 0, 1
    if image.dtype == np.uint8:
        return 0, 255
    colour = image[..., :3] if image.ndim == 3 and image.shape[2] == 4 else image
    known = colour[~mask]
    if not known.size:  # a full mask: floats 0..1; other dtypes need value_range (a ValueError)
        return 0.0, 1.0
    if image.dtype.kind == "f":
        lo, hi = float(known.min()), float(known.max())
        if lo >= 0 and hi <= 1:
            return 0.0, 1.0
        return (lo, hi) if hi > lo else (lo, lo + max(1.0, abs(lo) * 1e-6))  # constant: one unit up
    lo, hi = int(known.min()), int(known.max())
    if lo == hi:  # constant: one step up (down at the dtype's top)
        return (lo, lo + 1) if lo < np.iinfo(image.dtype).max else (lo - 1, lo)
    return lo, hi


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@functools.lru_cache(maxsize=1)
def models():
    """Tiny random models (not a fixture: hypothesis would print them in full)."""
    from napari_ilat import ILATModel

    return ILATModel.tiny(resolution=32, seed=11), ILATModel.tiny(cond="pose", resolution=32, seed=12)


@given(data=st.data())
def test_edit_fuzz_value_error_naming_the_argument_or_an_exact_passthrough(data):
    tiny, tiny_pose = models()
    image = data.draw(images(), label="image")
    mask = data.draw(masks(image.shape), label="mask")
    pose = data.draw(poses(image.shape), label="pose")
    opts = data.draw(OPTIONS, label="options")
    before = (image.copy(), np.array(mask, copy=True))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "pose made for a smaller image?"
            out = edit(image, mask, pose, model=tiny if pose is None else tiny_pose, **opts)
    except ValueError as e:
        message = str(e)
        named = [arg for arg in ARGUMENTS if arg in message]
        assert named, f"the message names no argument: {message!r}"
        hypothesis.event(f"ValueError ({min(named, key=message.index)}): {message[:60]}")
        return
    finally:
        assert _same(image, before[0]), "the image was modified"
        assert _same(np.asarray(mask), before[1]), "the mask was modified"
    hypothesis.event("edited")

    samples = int(opts.get("samples", 1))
    assert out.dtype == image.dtype
    assert out.shape == ((samples, *image.shape) if samples > 1 else image.shape)
    outs = out if samples > 1 else out[None]
    m = normalize_mask(mask, image.shape)
    band = feather_alpha(m, float(opts.get("feather", 2.0))) > 0
    lo, hi = value_range_of(image, m)
    for k, o in enumerate(outs):
        assert np.array_equal(o[~band], image[~band], equal_nan=image.dtype.kind == "f"), f"candidate {k}: outside"
        colour = o[..., :3] if o.ndim == 3 and o.shape[2] == 4 else o
        edited = colour[band]
        if image.dtype.kind == "f":
            assert np.isfinite(edited).all()
        assert edited.size == 0 or (edited.min() >= lo and edited.max() <= hi), (edited.min(), edited.max(), lo, hi)
        if o.ndim == 3 and o.shape[2] == 4:
            assert np.array_equal(o[..., 3], image[..., 3], equal_nan=image.dtype.kind == "f"), "alpha changed"
