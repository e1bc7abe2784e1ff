"""Issue 17, engine side: bad or unusual input to edit() is a ValueError naming the argument,
or an output in the input's dtype, shape and value range; never garbage."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_ilat import edit, edit_with_info
from napari_ilat.engine.editing import MAX_SAMPLES, feather_alpha
from napari_ilat.engine.inputs import normalize_mask

SHAPE = (32, 40)


def _mask(shape=SHAPE):
    m = np.zeros(shape, bool)
    m[10:20, 12:26] = True
    return m


def _grey(lo, hi, dtype, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


# ---------------------------------------------------------------- value ranges


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.uint16])
def test_integer_dtypes_stay_in_the_inputs_range(tiny_model, dtype):
    """int16 holding 0..215 used to come back with -27305..25268 inside the mask."""
    img = _grey(3, 100, dtype)
    mask = _mask()
    out = edit(img, mask, model=tiny_model, seed=0, feather=0)
    assert out.dtype == img.dtype and out.shape == img.shape
    assert out.min() >= 3 and out.max() <= 100, (out.min(), out.max())
    assert np.array_equal(out[~mask], img[~mask])
    assert not np.array_equal(out[mask], img[mask])


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_int64_and_uint64_extremes_are_exact(tiny_model, dtype):
    """Values at the dtype's ends go back without wrapping around (float -> int casts)."""
    from napari_ilat.engine.editing import _Intensity

    info = np.iinfo(dtype)
    img = np.full(SHAPE, info.max, dtype)
    img[::2] = info.min
    mask = _mask()
    intensity = _Intensity.of(img, mask)
    back = intensity.from_unit(np.array([0.0, 1e-30, 0.5, 1.0 - 1e-17, 1.0]))
    assert back[0] == info.min and back[-1] == info.max and back[-2] == info.max
    out = edit(img, mask, model=tiny_model, seed=1, feather=1)
    far = ~(feather_alpha(mask, 1) > 0)
    assert out.dtype == dtype and np.array_equal(out[far], img[far])


def test_uint16_holding_12_bit_data_is_not_brightened(tiny_model):
    """The range is read from the unmasked pixels, not assumed to be 0..65535."""
    img = _grey(0, 4095, np.uint16)
    mask = _mask()
    out = edit(img, mask, model=tiny_model, seed=0)
    assert out.max() <= 4095
    stated = edit(img, mask, model=tiny_model, seed=0, value_range=(0, 4095))
    assert stated.max() <= 4095


def test_value_range_is_checked(tiny_model):
    img, mask = _grey(0, 4095, np.uint16), _mask()
    for bad, message in [
        ((0, 1000), "outside value_range"),
        ((5, 5), "low < high"),
        ((0, 70000), "outside what uint16 holds"),
        ("wide", "value_range must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            edit(img, mask, model=tiny_model, value_range=bad)


def test_whole_image_mask_on_int16_needs_value_range(tiny_model):
    img = _grey(0, 200, np.int16)
    full = np.ones(SHAPE, bool)
    with pytest.warns(UserWarning, match="covers the whole image"):  # and it is said so
        with pytest.raises(ValueError, match="value_range"):
            edit(img, full, model=tiny_model, seed=0)
        out = edit(img, full, model=tiny_model, seed=0, value_range=(0, 200))
    assert 0 <= out.min() and out.max() <= 200


def test_huge_float_span_is_refused(tiny_model):
    img = np.zeros(SHAPE)
    img[0, 0], img[0, 1] = -1e308, 1e308
    with pytest.raises(ValueError, match="image values span"):
        edit(img, _mask(), model=tiny_model)


def test_complex_image_is_refused(tiny_model):
    with pytest.raises(ValueError, match="image must hold real numbers"):
        edit(np.zeros(SHAPE, complex), _mask(), model=tiny_model)


def test_nan_outside_the_mask_is_counted_and_located(tiny_model):
    img = np.random.default_rng(0).random((*SHAPE, 3)).astype(np.float32)
    img[0, 3, 1], img[30, :, 0] = np.inf, np.nan  # one pixel's green, a row's red
    with pytest.raises(ValueError, match=r"outside the mask \(41 pixels, the first at row 0, column 3\)"):
        edit(img, _mask(), model=tiny_model)
    img[0, 3], img[30] = 0.5, 0.5
    img[_mask()] = np.nan  # inside the mask: fine
    assert np.isfinite(edit(img, _mask(), model=tiny_model, seed=0)).all()


def test_channels_first_image_is_told_to_put_them_last(tiny_model):
    """A torch-style (3, H, W) image: the message says how to reorder it."""
    chw = np.zeros((3, *SHAPE), np.float32)
    with pytest.raises(ValueError, match=r"channels first\? pass them last: image.transpose\(1, 2, 0\)"):
        edit(chw, _mask(), model=tiny_model)
    with pytest.raises(ValueError, match="for a stack, pass the 2D slice") as e:
        edit(np.zeros((5, *SHAPE)), _mask(), model=tiny_model)
    assert "channels first" not in str(e.value)


@pytest.mark.parametrize(
    "mask",
    [
        np.full(SHAPE, "x"),
        np.full(SHAPE, None, dtype=object),
        np.ones(SHAPE, dtype=object),
        np.ones(SHAPE, complex),
    ],
    ids=["strings", "objects-none", "objects-int", "complex"],
)
def test_string_object_and_complex_masks_are_refused(tiny_model, mask):
    with pytest.raises(ValueError, match="mask must hold real numbers"):
        edit(np.zeros(SHAPE), mask, model=tiny_model)


def test_rgba_mask_painted_only_in_alpha_is_the_alpha():
    mask = _mask()
    rgba = np.zeros(SHAPE + (4,), np.uint8)
    rgba[mask, 3] = 255
    np.testing.assert_array_equal(normalize_mask(rgba), mask)
    grey_alpha = rgba[..., 2:]  # (H, W, 2): grey + alpha
    np.testing.assert_array_equal(normalize_mask(grey_alpha), mask)


def test_rgba_mask_transparent_pixels_are_never_masked():
    """White strokes on a transparent *white* background: only the opaque strokes count."""
    mask = _mask()
    rgba = np.full(SHAPE + (4,), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[mask, 3] = 255
    np.testing.assert_array_equal(normalize_mask(rgba), mask)
    opaque = np.zeros(SHAPE + (4,), np.uint8)
    opaque[..., 3] = 255  # uniform alpha: ignored, so an empty mask
    with pytest.raises(ValueError, match="mask is empty"):
        normalize_mask(opaque)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(samples=2.0), "samples must be an integer"),
        (dict(samples=True), "samples must be an integer"),
        (dict(samples=MAX_SAMPLES + 1), "samples must be an integer from 1 to 64"),
        (dict(top_k=1.5), "top_k must be an integer"),
        (dict(seed=1.7), "seed must be an integer"),
        (dict(seed=2**63), r"seed must be in \[0, 2\*\*63"),
        (dict(seed=2**63 - 2, samples=3), r"seed must be in \[0, 2\*\*63"),
        (dict(seed=-1), r"seed must be in"),
        (dict(feather=float("inf")), "feather must be a finite number"),
        (dict(feather=float("nan")), "feather must be a finite number"),
        (dict(feather="2"), "feather must be a finite number"),
        (dict(temperature=float("inf")), "temperature must be a finite number"),
        (dict(temperature="hot"), "temperature must be"),
        (dict(top_p=float("nan")), "top_p must be"),
        (dict(greedy="no"), "greedy must be True or False"),
        (dict(device="meta"), "device must be"),
        (dict(device="mps"), "device 'mps' asked for"),
        (dict(device="cuda:7"), "device 'cuda:7' asked for"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_bad_options_are_value_errors_naming_the_argument(tiny_model, kwargs, message):
    import torch

    if kwargs.get("device") == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if kwargs.get("device") == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ValueError, match=message):
        edit(np.zeros(SHAPE), _mask(), model=tiny_model, **kwargs)


def test_numpy_integers_are_fine_for_samples_seed_top_k(tiny_model):
    out = edit(np.zeros(SHAPE), _mask(), model=tiny_model, samples=np.int64(2), seed=np.uint32(3), top_k=np.int8(5))
    assert out.shape == (2, *SHAPE)


def test_candidates_that_do_not_fit_in_memory_are_refused_before_any_work(tiny_model, monkeypatch):
    """Each candidate is a full copy of the image: more than free memory is a ValueError up
    front (not an out-of-memory kill that takes napari and unsaved work with it)."""
    import napari_ilat.engine.editing as editing

    img = _grey(0, 255, np.uint8, shape=(64, 64, 3))  # 12 KiB a copy
    monkeypatch.setattr(editing, "free_memory", lambda: 40 * 1024)
    monkeypatch.setattr(editing, "cached_model", lambda m: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"4 candidates of this 64x64 image .* ask for fewer candidates"):
        edit(img, _mask((64, 64)), model=tiny_model, samples=4)
    monkeypatch.setattr(editing, "free_memory", lambda: 10 * 1024)
    with pytest.raises(ValueError, match="the result, a copy of this 64x64 image, would need"):
        edit(img, _mask((64, 64)), model=tiny_model)
    monkeypatch.undo()
    monkeypatch.setattr(editing, "free_memory", lambda: 60 * 1024)  # 4 copies fit in 80% of it
    assert edit(img, _mask((64, 64)), model=tiny_model, samples=4, seed=0).shape == (4, 64, 64, 3)
    monkeypatch.setattr(editing, "free_memory", lambda: None)  # unknown (not Linux): not checked
    assert edit(img, _mask((64, 64)), model=tiny_model, samples=4, seed=0).shape == (4, 64, 64, 3)


def _files(root, files: dict):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_free_memory_reads_the_system_and_the_cgroup_limit(tmp_path):
    """MemAvailable, or less where the process's cgroup limit (v2 or v1; a container's at the
    mount's root, a batch job's down its path, the tightest level) leaves less, its
    reclaimable page cache counted as free; no limit, or nothing readable: the system's, or None."""
    from napari_ilat.engine.editing import free_memory

    meminfo = {"meminfo": "MemTotal: 8000 kB\nMemAvailable:    4000 kB\n"}
    system = 4000 * 1024

    def case(name, self_cgroup, tree):
        proc = _files(tmp_path / name / "proc", {**meminfo, "self/cgroup": self_cgroup})
        return free_memory(proc, _files(tmp_path / name / "cg", tree))

    v2 = {"memory.max": "3000000\n", "memory.current": "2000000\n", "memory.stat": "anon 1\ninactive_file 500000\n"}
    assert case("v2-container", "0::/\n", v2) == 3000000 - 2000000 + 500000
    job = {f"slurm/job_1/{k}": v for k, v in v2.items()} | {"slurm/memory.max": "max\n", "cgroup.procs": ""}
    assert case("v2-job", "0::/slurm/job_1\n", job) == 1500000
    tighter = job | {"slurm/memory.max": "2500000\n", "slurm/memory.current": "2000000\n", "slurm/memory.stat": ""}
    assert case("v2-parent", "0::/slurm/job_1\n", tighter) == 500000
    assert case("v2-unlimited", "0::/\n", {**v2, "memory.max": "max\n"}) == system
    v1 = {
        "memory.limit_in_bytes": "9223372036854771712\n",
        "memory.usage_in_bytes": "1000000\n",
        "memory.stat": "cache 10\nhierarchical_memory_limit 2500000\ntotal_inactive_file 100000\n",
    }
    v1_job = {f"memory/slurm/job_7/{k}": v for k, v in v1.items()}
    assert case("v1-job", "9:memory:/slurm/job_7\n", v1_job) == 2500000 - 1000000 + 100000
    v1_root = {f"memory/{k}": v for k, v in v1.items()}  # a container: its own cgroup at the root
    assert case("v1-container", "9:memory:/docker/abc\n", v1_root) == 1600000
    unlimited = {**v1_root, "memory/memory.stat": "hierarchical_memory_limit 9223372036854771712\n"}
    assert case("v1-unlimited", "9:memory:/\n", unlimited) == system
    assert free_memory(tmp_path / "nothing", tmp_path / "nothing") is None


def test_candidate_k_equals_the_single_edit_with_seed_plus_k(tiny_model):
    rng = np.random.default_rng(0)
    img, mask = rng.random(SHAPE + (3,)), _mask()
    result = edit_with_info(img, mask, model=tiny_model, seed=10, samples=3)
    assert result.seeds == (10, 11, 12)
    for k, seed in enumerate(result.seeds):
        np.testing.assert_array_equal(result.image[k], edit(img, mask, model=tiny_model, seed=seed))


def test_samples_progress_counts_every_candidate(tiny_model):
    calls = []
    edit(np.zeros(SHAPE), _mask(), model=tiny_model, seed=0, samples=3, progress=lambda d, t: calls.append((d, t)))
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1))
    assert calls[-1][0] == calls[-1][1]


# ---------------------------------------------------------------- poses


@pytest.mark.parametrize(
    "pose",
    [[[1, 2]] * 17 + [[1]], [["a", "b"]] * 18, [[None, None]] * 18, 5.0],
    ids=["ragged", "strings", "nulls", "scalar"],
)
def test_malformed_pose_is_a_value_error_naming_pose(tiny_pose_model, pose):
    with pytest.raises(ValueError, match="pose"):
        edit(np.zeros(SHAPE), _mask(), pose, model=tiny_pose_model)


def test_keypoints_far_outside_the_image_are_refused(tiny_pose_model):
    pose = np.full((18, 3), -1.0)
    pose[0] = (10, 10, 1)
    pose[1] = (5000, 10, 1)  # more than the image's width beyond its edge
    with pytest.raises(ValueError, match="'neck' at x=5000, y=10 is far outside the 32x40 image"):
        edit(np.zeros(SHAPE), _mask(), pose, model=tiny_pose_model)
    pose[1] = (45, 10, 1)  # just outside (a limb leaving the frame): fine
    edit(np.zeros(SHAPE), _mask(), pose, model=tiny_pose_model, seed=0)
    pose[1] = (5000, 10, 0)  # invisible: ignored
    edit(np.zeros(SHAPE), _mask(), pose, model=tiny_pose_model, seed=0)


def test_pose_made_for_a_smaller_image_warns(tiny_pose_model):
    shape = (120, 150)
    mask = np.zeros(shape, bool)
    mask[50:60, 50:60] = True
    pose = np.full((18, 3), -1.0)
    pose[:4] = [(5, 5, 1), (10, 20, 1), (30, 30, 1), (12, 8, 1)]  # all in the top-left third
    with pytest.warns(UserWarning, match="made for a smaller image"):
        edit(np.zeros(shape), mask, pose, model=tiny_pose_model, seed=0)
    pose[2] = (100, 90, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        edit(np.zeros(shape), mask, pose, model=tiny_pose_model, seed=0, resolution="native")
    # (this 120 px figure is far larger than the tiny 32 px model's: that warning, at native
    # resolution, not this one)
    assert [w for w in caught if "smaller image" in str(w.message)] == [] and caught


def test_a_pose_in_normalised_coordinates_is_refused_with_the_factors(tiny_pose_model):
    """MediaPipe and normalised COCO exports give keypoints as fractions of the image: read as
    pixels, the figure is a dot in the corner (and "auto" would enlarge the image for it). An
    error says so and names the factors; keypoints on pixel 0 or 1 (an OpenPose file's
    missing keypoints at 0, 0 are hidden by their confidence) are no such pose."""
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(151, 128)
    mask = pair.mask
    pose = pair.target_pose.copy()
    pose[:, :2] /= 128
    with pytest.raises(ValueError, match=r"normalised coordinates\? .* x times its width \(128\), y times its height"):
        edit(pair.source, mask, pose, model=tiny_pose_model, seed=0)
    corner = np.full((18, 3), -1.0)
    corner[:3] = [(0, 0, 1), (1, 0, 1), (1, 1, 1)]  # whole pixels: a (tiny) figure in the corner
    with pytest.warns(UserWarning, match="made for a smaller image"):
        edit(pair.source, mask, corner, model=tiny_pose_model, seed=0)


# ---------------------------------------------------------------- one label, grown


def test_label_mask_takes_one_object_of_a_segmentation():
    from napari_ilat.engine.inputs import label_mask

    labels = np.zeros(SHAPE, np.uint16)
    labels[2:6, 2:6], labels[10:20, 12:26] = 3, 700
    np.testing.assert_array_equal(label_mask(labels, 700), _mask())
    np.testing.assert_array_equal(label_mask(np.stack([labels] * 3, -1), 3), labels == 3)  # grey saved as RGB
    with pytest.raises(ValueError, match=r"no pixel of label 5 \(labels there: 3, 700\)"):
        label_mask(labels, 5)
    np.testing.assert_array_equal(label_mask(labels, [3, 700]), labels > 0)  # several objects
    with pytest.raises(ValueError, match="no pixel of labels 4, 5"):
        label_mask(labels, (3, 4, 5))
    with pytest.raises(ValueError, match="not 0|non-zero"):
        label_mask(labels, 0)
    colour = np.zeros(SHAPE + (3,), np.uint8)
    colour[..., 0] = labels > 0
    with pytest.raises(ValueError, match="colour image"):
        label_mask(colour, 1)


def test_grow_mask_is_a_disc_per_plane():
    from napari_ilat.engine.inputs import grow_mask

    m = np.zeros((2,) + SHAPE, bool)
    m[0, 16, 20] = True
    g = grow_mask(m, 2)
    rows, cols = np.nonzero(g[0])
    assert np.hypot(rows - 16, cols - 20).max() <= 2 and g[0].sum() == 13  # the disc of radius 2
    assert not g[1].any()  # planes grow on their own; an empty one stays empty
    np.testing.assert_array_equal(grow_mask(m, 0), m)
    assert grow_mask(m, 0) is not m and not m[0, 16, 21]  # a new array; the input is untouched
    for bad in (-1, float("nan"), "3", True):
        with pytest.raises(ValueError, match="grow must be"):
            grow_mask(m, bad)
