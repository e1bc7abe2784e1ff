"""edit(): leakage (black box), exact passthrough outside the feather band, dtypes/shapes,
determinism, windows, progress/cancel, and clear errors for bad input."""

import threading
import warnings

import numpy as np
import pytest
import torch

from napari_ilat import EditCancelled, edit
from napari_ilat.engine.editing import edit_window, feather_alpha
from napari_ilat.engine.model import ILATModel


@pytest.fixture(scope="module")
def model64():
    return ILATModel.tiny(resolution=32, seed=3).double()


@pytest.fixture(scope="module")
def pose_model64():
    return ILATModel.tiny(cond="pose", resolution=32, seed=4).double()


def blob_mask(shape, seed=0, rate=0.2):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.3, 0.7, 2) * shape
    r = np.sqrt(rate * shape[0] * shape[1] / np.pi)
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def photo(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
    base = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy), xx * yy], -1) * 0.35 + 0.5
    return np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)


def with_noise_under(image, mask, seed=9):
    out = image.copy()
    out[mask] = np.random.default_rng(seed).random(out[mask].shape)
    return out


@pytest.mark.parametrize("shape", [(32, 32), (48, 70)])
def test_no_leakage_black_box(model64, shape):
    """ilat: noise under the mask changes nothing; ilat*: it does (the test can fail)."""
    img, mask = photo(shape), blob_mask(shape)
    other = with_noise_under(img, mask)
    kw = dict(model=model64, seed=7, samples=2)
    a, b = edit(img, mask, **kw), edit(other, mask, **kw)
    assert np.abs(a - b).max() == 0
    a, b = edit(img, mask, mode="ilat*", **kw), edit(other, mask, mode="ilat*", **kw)
    assert np.abs(a - b).max() > 0


def test_no_leakage_when_the_window_is_resized(model64):
    """A mask bigger than the model's window: the crop is resized to 32 px and back."""
    shape = (90, 90)
    img, mask = photo(shape, 1), blob_mask(shape, 1, rate=0.3)
    assert edit_window(mask, 32, 4)[2] > 32
    other = with_noise_under(img, mask, 3)
    a = edit(img, mask, model=model64, seed=1)
    b = edit(other, mask, model=model64, seed=1)
    assert np.abs(a - b).max() == 0


def test_no_leakage_with_pose_condition(pose_model64):
    img, mask = photo((32, 32), 2), blob_mask((32, 32), 2)
    pose = np.random.default_rng(0).uniform(0, 31, (18, 3))
    pose[:, 2] = 1
    pose[4] = (-1, -1, 0)
    other = with_noise_under(img, mask)
    for kw in (dict(seed=2), dict(greedy=True)):
        a = edit(img, mask, pose, model=pose_model64, **kw)
        b = edit(other, mask, pose, model=pose_model64, **kw)
        assert np.abs(a - b).max() == 0


def test_no_leakage_with_sketch_condition():
    """The sketch outside the mask is XDoG of the unmasked pixels only."""
    model = ILATModel.tiny(cond="sketch", resolution=32, seed=5).double()
    shape = (40, 40)
    img, mask = photo(shape, 3), blob_mask(shape, 3)
    strokes = np.zeros(shape)
    strokes[15:17, 5:35] = 1
    other = with_noise_under(img, mask)
    a = edit(img, mask, sketch=strokes, model=model, seed=4)
    b = edit(other, mask, sketch=strokes, model=model, seed=4)
    assert np.abs(a - b).max() == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda s: (photo(s) * 255).astype(np.uint8),
        lambda s: (photo(s) * 65535).astype(np.uint16),
        lambda s: photo(s).astype(np.float32),
        lambda s: photo(s)[..., 0] * 1000 - 200,  # float grey outside [0, 1]
        lambda s: (photo(s)[..., 1] * 255).astype(np.uint8),
        lambda s: np.concatenate([photo(s), np.full(s + (1,), 0.5)], -1),  # RGBA
    ],
    ids=["rgb-u8", "rgb-u16", "rgb-f32", "grey-float-range", "grey-u8", "rgba"],
)
def test_outside_band_returned_exactly(model64, make):
    shape = (40, 56)
    img, mask = make(shape), blob_mask(shape, 4)
    feather = 2.0
    out = edit(img, mask, model=model64.float(), seed=0, feather=feather)
    assert out.shape == img.shape and out.dtype == img.dtype
    band = feather_alpha(mask, feather) > 0
    assert np.array_equal(out[~band], img[~band])
    assert not np.array_equal(out[mask], img[mask])
    if img.ndim == 3 and img.shape[2] == 4:
        assert np.array_equal(out[..., 3], img[..., 3])
    model64.double()


def test_a_mask_over_the_whole_image_warns(model64):
    img = photo((32, 32))
    with pytest.warns(UserWarning, match="covers the whole image"):
        edit(img, np.ones((32, 32), bool), model=model64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one unmasked pixel: no warning
        mask = np.ones((32, 32), bool)
        mask[0, 0] = False
        edit(img, mask, model=model64, seed=0)


def test_feather_band_lies_outside_the_mask():
    mask = blob_mask((30, 30), 5)
    a = feather_alpha(mask, 3)
    assert (a[mask] == 1).all()
    assert ((a > 0) & (a < 1) & mask).sum() == 0
    ring = (a > 0) & ~mask
    assert ring.any() and (a[ring] < 1).all()
    assert np.array_equal(feather_alpha(mask, 0) > 0, mask)


def test_determinism_and_candidates(model64):
    img, mask = photo((32, 32)), blob_mask((32, 32), 6)
    a = edit(img, mask, model=model64, seed=5, samples=3)
    b = edit(img, mask, model=model64, seed=5, samples=3)
    c = edit(img, mask, model=model64, seed=6, samples=3)
    assert a.shape == (3, 32, 32, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])
    for mode in ("ilat*", "taming"):
        assert np.array_equal(
            edit(img, mask, model=model64, seed=5, mode=mode), edit(img, mask, model=model64, seed=5, mode=mode)
        )


def test_default_sampling_keeps_the_20_most_likely_codes(model64):
    """edit() samples from the top 20 codes unless told otherwise (None: the whole
    distribution), in every mode that samples tokens."""
    img, mask = photo((32, 32)), blob_mask((32, 32), 6)
    for mode in ("ilat", "taming"):
        default = edit(img, mask, model=model64, seed=5, mode=mode)
        assert np.array_equal(default, edit(img, mask, model=model64, seed=5, mode=mode, top_k=20))
        assert not np.array_equal(default, edit(img, mask, model=model64, seed=5, mode=mode, top_k=None))


def test_guidance_default_and_errors(pose_model64):
    """edit() guides a pose edit by DEFAULT_GUIDANCE (1: off, the conditional model as
    trained) unless told otherwise; without a pose the scale changes nothing."""
    from napari_ilat.data import make_edit_pair
    from napari_ilat.engine.defaults import DEFAULT_GUIDANCE

    pair = make_edit_pair(3, 32)
    img, mask, pose = pair.source, pair.mask, pair.target_pose
    kw = dict(model=pose_model64, seed=2)
    default = edit(img, mask, pose, **kw)
    assert np.array_equal(default, edit(img, mask, pose, guidance=DEFAULT_GUIDANCE, **kw))
    other = 1.0 if DEFAULT_GUIDANCE != 1.0 else 3.0
    assert not np.array_equal(default, edit(img, mask, pose, guidance=other, **kw))
    assert np.array_equal(edit(img, mask, guidance=0.0, **kw), edit(img, mask, guidance=4.0, **kw))
    assert DEFAULT_GUIDANCE == 1.0
    for bad in (-1, float("inf"), "2", True, None):
        with pytest.raises(ValueError, match="guidance"):
            edit(img, mask, pose, guidance=bad, **kw)


def test_window_native_when_it_fits():
    mask = np.zeros((200, 300), bool)
    mask[100:110, 280:290] = True
    r0, c0, h, w = edit_window(mask, 64, 8)
    assert (h, w) == (64, 64) and c0 + w == 300  # shifted to stay inside the image
    assert r0 <= 100 and r0 + h >= 110
    mask[20:180, 20:40] = True  # bbox 160 x 270 + context: larger than the model's 64 px
    r0, c0, h, w = edit_window(mask, 64, 8)
    assert (r0, c0, h, w) == (0, 12, 200, 286)


def test_progress_and_cancel(model64):
    img, mask = photo((32, 32)), blob_mask((32, 32), 7)
    calls = []
    edit(img, mask, model=model64, seed=0, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)
    stop = threading.Event()

    def progress(done, total):
        if done == 2:
            stop.set()

    with pytest.raises(EditCancelled):
        edit(img, mask, model=model64, progress=progress, cancel=stop)


def test_bad_input_messages(model64, pose_model64):
    img, mask = photo((32, 32)), blob_mask((32, 32))
    cases = [
        (dict(image=img, mask=np.zeros((32, 32))), "mask is empty"),
        (dict(image=img, mask=mask[:30]), "does not match"),
        (dict(image=img[..., :2], mask=mask), "image must be.*two channels"),
        (dict(image=np.concatenate([img, img[..., :2]], -1), mask=mask), "image must be"),  # 5 channels
        (dict(image=np.zeros((4, 32, 32, 3)), mask=mask), "2D slice"),
        (dict(image=np.where(mask[..., None], img, np.nan), mask=mask), "NaN"),
        (dict(image=img, mask=mask, mode="fast"), "mode must be"),
        (dict(image=img, mask=mask, samples=0), "samples"),
        (dict(image=img, mask=mask, temperature=0), "temperature"),
        (dict(image=img, mask=mask, pose=np.zeros((16, 2)), model=pose_model64), r"\(18, 2\)"),
        (dict(image=img, mask=mask, pose=np.full((18, 3), np.nan), model=pose_model64), "NaN"),
        (dict(image=img, mask=mask, pose=np.zeros((18, 3))), "not pose-conditioned"),
        (dict(image=img, mask=mask, device="tpu:3"), "device"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("model", model64)
        with pytest.raises(ValueError, match=message):
            edit(**kwargs)


def test_nan_inside_the_mask_is_fine(model64):
    img, mask = photo((32, 32)), blob_mask((32, 32))
    holes = img.copy()
    holes[mask] = np.nan
    out = edit(holes, mask, model=model64, seed=0)
    assert np.isfinite(out).all()
    assert np.array_equal(out, edit(img, mask, model=model64, seed=0))


def test_missing_bundled_model_is_a_clear_error():
    img, mask = photo((32, 32)), blob_mask((32, 32))
    with pytest.raises(FileNotFoundError, match="no bundled model named 'nope'"):
        edit(img, mask, model="nope")


def test_inputs_are_not_modified(model64):
    img, mask = (photo((32, 32)) * 255).astype(np.uint8), blob_mask((32, 32))
    img0, mask0 = img.copy(), mask.copy()
    edit(img, mask, model=model64, seed=0)
    assert np.array_equal(img, img0) and np.array_equal(mask, mask0)
    assert torch.get_default_dtype() == torch.float32
