"""The dock widget in a real napari viewer (needs a display: scripts/test.sh uses xvfb-run)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ilat.engine.defaults import DEFAULT_GUIDANCE

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(
        sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
        reason="needs a display (run under xvfb-run)",
    ),
]


@pytest.fixture
def errors(monkeypatch):
    """Messages the widget sends to napari's error / warning notifications."""
    import napari_ilat.plugin.widget as w

    got = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(w, "show_error", lambda m: got["error"].append(m))
    monkeypatch.setattr(w, "show_warning", lambda m: got["warning"].append(m))
    monkeypatch.setattr(w, "show_info", lambda m: got["info"].append(m))
    return got


def _snapshot(viewer):
    out = {}
    for layer in viewer.layers:
        data = layer.data
        copy = [np.array(d, copy=True) for d in data] if isinstance(data, list) else np.array(data, copy=True)
        out[layer.name] = copy
    return out


def _unchanged(before, viewer):
    for name, data in before.items():
        now = viewer.layers[name].data
        if isinstance(data, list):
            assert len(now) == len(data) and all(np.array_equal(a, b) for a, b in zip(data, now)), name
        else:
            assert np.array_equal(np.asarray(now), data), name


@pytest.fixture
def pose_viewer(make_napari_viewer, tiny_pose_model):
    """The pose sample with the widget docked (through the plugin manifest), synchronous mode."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "pose")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ilat", "iLAT editor")
    widget.synchronous = True
    widget.add_model(tiny_pose_model, "tiny pose")
    widget.seed.value = 3
    return viewer, widget


def test_sample_generate_adds_layer_and_keeps_inputs(pose_viewer, errors):
    viewer, widget = pose_viewer
    assert [type(la).__name__ for la in viewer.layers] == ["Image", "Labels", "Shapes", "Points"]
    assert widget.image.value.name == "pose scene"
    assert widget.mask.value.name == "suggested mask"
    assert widget.pose.value.name == "pose"  # picked automatically: named keypoints
    before = _snapshot(viewer)
    source = viewer.layers["pose scene"].data
    mask = viewer.layers["suggested mask"].data != 0

    widget.generate()

    assert errors["error"] == []
    assert len(viewer.layers) == 5
    result = widget.last_result
    assert result.name == "pose scene [iLAT seed 3]"
    assert result.data.shape == source.shape and result.data.dtype == source.dtype
    assert result.rgb
    np.testing.assert_array_equal(result.scale, viewer.layers["pose scene"].scale)
    # above images and labels, below the keypoints / skeleton (they stay draggable)
    assert [la.name for la in viewer.layers][2] == result.name
    from scipy import ndimage

    far = ndimage.distance_transform_edt(~mask) > 3
    np.testing.assert_array_equal(result.data[far], source[far])  # outside the mask: untouched
    assert (result.data[mask] != source[mask]).any()
    _unchanged(before, viewer)
    assert widget.progress.value == widget.progress.max > 0
    assert result.metadata["napari_ilat"]["seed"] == 3

    # N candidates: one layer with a slider; the first uses the same seed as before
    widget.samples.value = 2
    widget.generate()
    stacked = widget.last_result
    assert errors["error"] == []
    assert stacked.data.shape == (2, 128, 128, 3) and "seeds 3..4" in stacked.name
    np.testing.assert_array_equal(stacked.data[0], result.data)  # candidate 0 = the single edit, seed 3
    assert len(stacked.scale) == 3  # candidate axis + 2 spatial (rgb is not an axis)
    _unchanged(before, viewer)


def test_a_mask_over_the_whole_image_is_a_warning_notification(pose_viewer, errors):
    viewer, widget = pose_viewer
    labels = viewer.layers["suggested mask"]
    labels.data = np.ones_like(labels.data)  # the user fills the whole image
    n = len(viewer.layers)
    widget.generate()
    assert errors["error"] == [] and len(viewer.layers) == n + 1  # still done, as asked
    assert any("covers the whole image" in m for m in errors["warning"])


def test_a_pose_in_normalised_coordinates_is_an_error_notification(pose_viewer, errors):
    """Keypoints as fractions of the image (a MediaPipe pose pasted into the points layer): an
    error notification that names the factors, nothing added, every layer as it was."""
    viewer, widget = pose_viewer
    points = viewer.layers["pose"]
    points.data = points.data / 128
    before, n = _snapshot(viewer), len(viewer.layers)
    widget.generate()
    assert len(viewer.layers) == n and any("normalised coordinates?" in m for m in errors["error"])
    _unchanged(before, viewer)


def test_candidates_beyond_free_memory_are_an_error_notification(pose_viewer, errors, monkeypatch):
    """Candidates that would not fit in memory: a notification, nothing added, napari lives."""
    import napari_ilat.engine.editing as editing

    viewer, widget = pose_viewer
    image = viewer.layers["pose scene"].data
    monkeypatch.setattr(editing, "free_memory", lambda: 3 * image.nbytes)
    widget.samples.value = 8
    n = len(viewer.layers)
    widget.generate()
    assert len(viewer.layers) == n
    assert any("8 candidates of this" in m and "ask for fewer candidates" in m for m in errors["error"])
    widget.samples.value = 2  # fits: done
    widget.generate()
    assert len(viewer.layers) == n + 1


def test_an_off_scale_figure_is_edited_at_its_scale_and_the_status_says_so(pose_viewer, errors):
    """The tiny 32 px pose model sees the sample's figure about 6x too large: with resolution
    'auto' (the default) the edit is made on the image shrunk to one model window and the
    status line says so; 'native' warns in a notification instead."""
    viewer, widget = pose_viewer
    assert widget.resolution.value == "auto"
    widget.generate()
    meta = widget.last_result.metadata["napari_ilat"]
    assert errors["error"] == [] and not errors["warning"]
    assert widget.status.value.endswith("(edited at 1/4.0 of the image's size)") and meta["scale"] == 4.0
    widget.resolution.value = "native"
    widget.generate()
    assert widget.last_result.metadata["napari_ilat"]["scale"] == 1.0 and "edited at" not in widget.status.value
    assert any("the size of the pose model's training figures" in m for m in errors["warning"])


def test_drawn_seed_is_the_one_shown_and_reproduces(pose_viewer, errors, tiny_pose_model):
    viewer, widget = pose_viewer
    # (at the model's pixel scale: the tiny 32 px model sees the sample's figure 6x too large, and
    # 'auto' would edit it shrunk to one window, whose surroundings allow all 64 codes, so the
    # context palette below would change nothing)
    widget.resolution.value = "native"
    widget.seed.value = -1  # draw one
    widget.generate()
    first = widget.last_result
    meta = first.metadata["napari_ilat"]
    seed = meta["seed"]
    assert errors["error"] == [] and isinstance(seed, int)
    assert first.name == f"pose scene [iLAT seed {seed}]" and first.name in widget.status.value
    assert meta["source"] == "pose scene" and meta["mask"] == "suggested mask"
    assert meta["model"] == "tiny" and meta["mode"] == "ilat" and meta["samples"] == 1
    widget.seed.value = seed
    widget.generate()
    np.testing.assert_array_equal(widget.last_result.data, first.data)
    assert widget.blend.value == "seamless"  # the default; pasted as drawn is another result
    widget.blend.value = "alpha"
    widget.generate()
    assert errors["error"] == [] and not np.array_equal(widget.last_result.data, first.data)
    widget.blend.value = "seamless"
    assert widget.top_k.value == 20  # the default: the 20 most likely codes, as edit()'s
    widget.top_k.value = 0  # 0 = the whole distribution: another result
    widget.generate()
    assert errors["error"] == [] and not np.array_equal(widget.last_result.data, first.data)
    widget.top_k.value = 20
    assert widget.guidance.value == DEFAULT_GUIDANCE  # as edit()'s
    widget.guidance.value = 4.0 if DEFAULT_GUIDANCE != 4.0 else 1.0  # another scale: another result
    widget.generate()
    assert errors["error"] == [] and not np.array_equal(widget.last_result.data, first.data)
    assert widget.last_result.metadata["napari_ilat"]["guidance"] == widget.guidance.value  # recorded
    assert meta["guidance"] == DEFAULT_GUIDANCE
    widget.guidance.value = DEFAULT_GUIDANCE
    # the context palette: "auto" leaves it off with a pose; "from the surroundings" uses it
    # (this model has no colour table: it is computed first), recorded
    assert widget.palette.value == "auto" and meta["palette"] == "auto" and meta["palette_used"] is False
    try:
        widget.palette.value = "on"
        widget.generate()
        assert errors["error"] == [] and not np.array_equal(widget.last_result.data, first.data)
        assert widget.last_result.metadata["napari_ilat"]["palette_used"] is True
    finally:
        tiny_pose_model.vqgan.code_colours = None  # the session's model, as the other tests expect it


def test_skeleton_follows_points_and_auto_mask(pose_viewer, errors):
    from napari_ilat.cli.demo import move_points_to
    from napari_ilat.engine.pose_mask import default_mask_radius
    from napari_ilat.engine.skeleton import KEYPOINT_NAMES, PART_NAMES
    from napari_ilat.plugin.sample_data import pose_sample_pair

    viewer, widget = pose_viewer
    points, skeleton = viewer.layers["pose"], viewer.layers["skeleton"]
    pair = pose_sample_pair()
    n_bones = len(skeleton.data)

    data = points.data.copy()
    data[0] += (5, -3)
    points.data = data
    first = points.features["name"][0]
    assert any(np.allclose(line, data[0]) for line in np.concatenate(skeleton.data))
    assert len(skeleton.data) == n_bones, first

    names = list(points.features["name"])
    assert pair.target_pose[KEYPOINT_NAMES.index("l_hip"), 2] == 0  # the new arm hides a hip...
    move_points_to(points, pair.target_pose)  # the demo's "drag"
    assert list(points.features["name"]) == names  # ...which a drag leaves where it was
    layer = widget.auto_mask()
    assert errors["error"] == []
    assert layer is not None and layer.name == "auto mask"
    assert widget.mask.value is layer
    auto = layer.data != 0
    moved = [PART_NAMES.index(name) for name in pair.moved_parts]  # the arm, old and new, as drawn
    arm = np.isin(pair.source_labels, moved) | np.isin(pair.target_labels, moved)
    covered = (auto & arm).sum() / arm.sum()
    assert covered > 0.95, covered  # is inside the auto mask (the pair's own mask is dilated beyond it)
    assert auto.mean() < 0.2
    assert widget.mask_radius.native.text() == "auto"  # 0, from the figure: not "0.00"
    said = float(widget.status.value.rsplit("limb radius ", 1)[1].removesuffix(" px"))
    figure = default_mask_radius(auto.shape, pair.source_pose, pair.target_pose)  # (the drag's pose aside)
    assert said == pytest.approx(figure, abs=0.3) and abs(said - 0.06 * 128) > 0.5, widget.status.value
    widget.mask_radius.value = 5.5
    assert widget.mask_radius.native.text() == "5.50"
    assert widget.auto_mask() is layer and widget.status.value.endswith("limb radius 5.5 px")
    assert (layer.data != 0).sum() < auto.sum()
    widget.mask_radius.value = 0

    widget.generate()
    assert errors["error"] == []
    # after Generate the moved pose is the new reference: nothing moved, nothing to mask
    assert widget.auto_mask() is None and errors["warning"]


def test_an_auto_mask_beyond_free_memory_is_an_error_notification(pose_viewer, errors, monkeypatch):
    """The auto mask is a Labels layer of the image's size (a pyramid's full resolution too):
    one that would not fit in memory is refused before anything is allocated."""
    import napari_ilat.engine.editing as editing
    from napari_ilat.cli.demo import move_points_to
    from napari_ilat.plugin.sample_data import pose_sample_pair

    viewer, widget = pose_viewer
    move_points_to(viewer.layers["pose"], pose_sample_pair().target_pose)
    monkeypatch.setattr(editing, "free_memory", lambda: 1000)
    n = len(viewer.layers)
    assert widget.auto_mask() is None and len(viewer.layers) == n
    assert "an auto mask of this image would need" in errors["error"][-1]


def test_controls_follow_the_chosen_pose_and_sketch(pose_viewer):
    """The auto mask (and its radius) sits under the pose picker and is live only with a pose;
    the stroke width only with a sketch; guidance with either."""
    viewer, widget = pose_viewer
    order = [id(w) for w in widget]
    at = [order.index(id(w)) for w in (widget.pose, widget.mask_radius, widget.auto_mask_btn, widget.sketch)]
    assert at == list(range(at[0], at[0] + 4)), at
    assert widget.pose.value is not None and widget.sketch.value is None  # the pose sample
    assert widget.auto_mask_btn.enabled and widget.mask_radius.enabled and widget.guidance.enabled
    assert not widget.sketch_width.enabled

    widget.pose.value = None
    assert not widget.auto_mask_btn.enabled and not widget.mask_radius.enabled and not widget.guidance.enabled

    strokes = viewer.add_shapes([[[10, 10], [40, 50]]], shape_type="path", name="strokes")
    widget.sketch.value = strokes
    assert widget.sketch_width.enabled and widget.guidance.enabled and not widget.auto_mask_btn.enabled
    widget.sketch.value = None  # "none" chosen
    assert not widget.sketch_width.enabled and not widget.guidance.enabled
    widget.sketch.value = strokes
    viewer.layers.remove(strokes)  # the chosen sketch layer goes: back to none, width off
    assert widget.sketch.value is None and not widget.sketch_width.enabled


def test_the_mask_follows_the_image_to_a_labels_layer_of_its_size(make_napari_viewer, errors):
    """A second image opened with its own mask (or an image chosen by hand): the mask picker
    moves to a Labels layer of the image's size instead of keeping one that cannot fit."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "photo")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ilat", "iLAT editor")
    photo, photo_mask = viewer.layers["chelsea"], viewer.layers["suggested mask"]
    assert widget.image.value is photo and widget.mask.value is photo_mask
    viewer.open_sample("napari-ilat", "pose")
    scene = viewer.layers["pose scene"]
    assert widget.image.value is scene
    assert widget.mask.value is not photo_mask and widget.mask.value.data.shape == scene.data.shape[:2]
    widget.image.value = photo  # chosen by hand: back to the photo's own mask
    assert widget.mask.value is photo_mask
    extra = viewer.add_labels(np.zeros(photo.data.shape[:2], np.uint8), name="my mask")
    viewer.layers.move(viewer.layers.index(extra), 0)  # not the top-most
    widget.mask.value = extra  # a fitting mask the user chose is kept when layers come and go
    viewer.add_points([[5, 5]], name="a point")
    assert widget.image.value is photo and widget.mask.value is extra
    assert errors["error"] == []


def test_a_newly_opened_image_does_not_inherit_another_images_pose(pose_viewer, errors):
    """Opening a photo after the pose sample: its edit must not be steered by the pose
    scene's keypoints (it was, silently, with the pose model); a pose opened with an image
    is picked."""
    viewer, widget = pose_viewer
    widget.model.value = "auto"
    strokes = viewer.add_shapes([[[10, 10], [40, 50]]], shape_type="path", name="strokes")
    widget.sketch.value = strokes
    viewer.open_sample("napari-ilat", "photo")
    assert widget.image.value.name == "chelsea" and widget.pose.value is None and widget.sketch.value is None
    widget.generate()
    assert errors["error"] == [] and widget.last_result.metadata["napari_ilat"]["model"] == "natural"
    viewer.open_sample("napari-ilat", "pose")  # an image with its pose: picked again
    assert widget.image.value.name.startswith("pose scene") and widget.pose.value is viewer.layers[-1]
    pose = widget.pose.value
    copy = viewer.add_image(widget.image.value.data.copy(), name="same size")  # e.g. a duplicate
    assert widget.image.value is copy and widget.pose.value is pose  # same size: the pose stays


def test_strokes_drawn_but_not_chosen_as_the_sketch_get_a_hint(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "photo")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ilat", "iLAT editor")
    widget.synchronous = True
    widget.seed.value = 0
    ys, xs = np.nonzero(viewer.layers["suggested mask"].data)
    far = viewer.add_shapes([[[5, 5], [5, 40]]], shape_type="path", name="far away")
    box = [[ys.min(), xs.min()], [ys.min(), xs.max()], [ys.max(), xs.max()], [ys.max(), xs.min()]]
    viewer.add_shapes([box], shape_type="polygon", name="annotations")  # outlines, not strokes
    widget.generate()
    assert not any("strokes in the mask" in m for m in errors["info"])  # none in the mask: no hint
    across = [[ys.min(), xs.min()], [ys.max(), xs.max()]]
    strokes = viewer.add_shapes([across], shape_type="line", name="my strokes")
    widget.generate()
    assert any("'my strokes' has strokes in the mask but sketch is 'none'" in m for m in errors["info"])
    errors["info"].clear()
    widget.sketch.value = strokes  # chosen: used, no hint
    widget.generate()
    assert not any("strokes in the mask" in m for m in errors["info"]) and errors["error"] == []
    assert far.data and strokes.data


def test_cancel_stops_and_adds_nothing(make_napari_viewer, qtbot, tiny_pose_model, monkeypatch, errors):
    import time

    import napari_ilat.engine.editing as edit_mod

    real_edit = edit_mod.edit_with_info

    def slow_edit(*args, progress=None, **kwargs):
        def slow_progress(done, total):
            progress(done, total)
            time.sleep(0.05)  # long enough for the test to press Cancel mid-run

        return real_edit(*args, progress=slow_progress, **kwargs)

    monkeypatch.setattr(edit_mod, "edit_with_info", slow_edit)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "pose")
    from napari_ilat.plugin.widget import ILATWidget

    widget = ILATWidget(viewer)  # threaded, as in the GUI
    viewer.window.add_dock_widget(widget)
    widget.add_model(tiny_pose_model, "tiny pose")
    n = len(viewer.layers)
    before = _snapshot(viewer)

    widget.generate_btn.native.click()
    assert widget.running and widget.cancel_btn.enabled
    # (the progress bar follows the worker every POLL_MS)
    qtbot.waitUntil(
        lambda: widget._state is not None and widget._state.done >= 2 and widget.progress.max > 1, timeout=20000
    )
    done_at_cancel = widget._state.done
    widget.cancel_btn.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)

    assert len(viewer.layers) == n
    assert widget.status.value.startswith("cancelled")
    assert errors["error"] == []
    assert widget.progress.value < widget.progress.max
    assert done_at_cancel < widget.progress.max
    assert widget.generate_btn.enabled and not widget.cancel_btn.enabled
    _unchanged(before, viewer)


def test_threaded_generate_adds_layer(make_napari_viewer, qtbot, tiny_model, errors):
    from napari_ilat.plugin.widget import ILATWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "photo")
    widget = ILATWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.add_model(tiny_model)
    widget.seed.value = 1
    widget.generate()
    qtbot.waitUntil(lambda: not widget.running, timeout=30000)
    assert errors["error"] == []
    assert widget.last_result.data.shape == viewer.layers["chelsea"].data.shape
    assert widget.last_result.name == "chelsea [iLAT seed 1]"


def test_lazy_pixels_are_read_in_the_worker_not_in_napari(make_napari_viewer, qtbot, tiny_model, errors):
    """A lazy image's region is read by the worker thread: a slow store (zarr over a network,
    a long time-lapse) must not freeze napari."""
    import threading

    import dask
    import dask.array as da

    from napari_ilat.plugin.widget import ILATWidget

    readers = []

    def record(block):
        readers.append(threading.current_thread() is threading.main_thread())
        return block

    lazy = da.from_array(np.random.default_rng(0).random((256, 256)), chunks=64).map_blocks(record, dtype=float)
    viewer = make_napari_viewer()
    viewer.add_image(lazy, name="lazy", contrast_limits=(0, 1))
    box = viewer.add_shapes([[[100, 100], [140, 150]]], shape_type="rectangle", name="box")
    widget = ILATWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.add_model(tiny_model)
    widget.mask.value = box
    readers.clear()  # (napari reads the slice it shows)
    with dask.config.set(scheduler="synchronous"):  # chunks computed in the thread that reads
        widget.generate()
        qtbot.waitUntil(lambda: not widget.running, timeout=30000)
    assert errors["error"] == [] and widget.last_result.name.endswith(", region]")
    assert readers and not any(readers)  # read, and never on the main thread


def test_errors_are_notifications(make_napari_viewer, tiny_model, errors):
    from napari_ilat.plugin.widget import LOAD_FILE, ILATWidget

    viewer = make_napari_viewer()
    widget = ILATWidget(viewer, synchronous=True)
    viewer.window.add_dock_widget(widget)

    widget.generate()  # no image at all
    assert "no image layer" in errors["error"][-1]

    viewer.add_image(np.random.rand(40, 40), name="img")
    widget.generate()  # no mask
    assert "no mask layer" in errors["error"][-1]

    empty = viewer.add_labels(np.zeros((40, 40), np.uint8), name="empty")
    widget.add_model(tiny_model)
    widget.mask.value = empty
    widget.generate()
    assert "empty" in errors["error"][-1]

    small = np.zeros((30, 40), np.uint8)
    small[5:10, 5:10] = 1
    widget.mask.value = viewer.add_labels(small, name="small", translate=(100, 0))  # drawn below the image
    widget.generate()
    assert "'small' covers no pixel of image" in errors["error"][-1]

    good = np.zeros((40, 40), np.uint8)
    good[5:15, 5:15] = 1
    widget.mask.value = viewer.add_labels(good, name="good")
    widget.pose.value = viewer.add_points(np.random.rand(5, 2) * 40, name="pts")
    widget.generate()
    assert "5 points" in errors["error"][-1]

    widget.pose.value = None
    with widget.model.changed.blocked():
        widget.model.value = LOAD_FILE
    widget.generate()
    assert "no model selected" in errors["error"][-1]

    n = len(viewer.layers)
    widget.add_model(tiny_model)
    viewer.add_points(np.random.rand(18, 2) * 40, name="pose18")
    widget.pose.value = viewer.layers["pose18"]
    widget.generate()  # an unconditional model with a pose: the engine's message, as a notification
    assert "not pose-conditioned" in errors["error"][-1]
    assert len(viewer.layers) == n + 1  # only the points layer we added
    assert not widget.running


def test_load_file_refuses_a_json_that_is_not_a_model(make_napari_viewer, tiny_model_path, errors, monkeypatch):
    """*load file...* on a run's recipe.json (beside the model's JSON in a `train recipe`
    folder): an error notification at once and the previous model kept; a model JSON loads."""
    from qtpy.QtWidgets import QFileDialog

    from napari_ilat.plugin.widget import LOAD_FILE, ILATWidget

    viewer = make_napari_viewer()
    widget = ILATWidget(viewer, synchronous=True)
    before = widget.model.value
    record = Path(tiny_model_path).parent / "recipe.json"
    record.write_text('{"phases": {}}')
    picked = iter([(str(record), ""), (str(tiny_model_path), "")])
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: next(picked)))
    widget.model.value = LOAD_FILE
    assert "recipe.json is not a napari-ilat model" in errors["error"][-1] and widget.model.value == before
    widget.model.value = LOAD_FILE
    assert widget.model.value == str(tiny_model_path) and len(errors["error"]) == 1


def _docked_widget(viewer, model):
    """The dock widget on ``viewer``, synchronous, with ``model`` chosen."""
    from napari_ilat.plugin.widget import ILATWidget

    widget = ILATWidget(viewer, synchronous=True)
    viewer.window.add_dock_widget(widget)
    widget.add_model(model)
    return widget


def _add_stack(viewer, n, scale=(2, 0.5, 0.5), translate=(10, 3, 4), **transform):
    """(stack, image layer, mask): ``n`` random 40x48 float slices placed by ``scale`` /
    ``translate`` / ``transform``, and a 2D Labels mask "m" over their plane."""
    stack = np.random.default_rng(0).random((n, 40, 48)).astype(np.float32)
    img = viewer.add_image(stack, name="stack", scale=scale, translate=translate, **transform)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:20, 10:25] = 1
    viewer.add_labels(mask, name="m", scale=scale[1:], translate=translate[1:])
    return stack, img, mask


def _generated_on_slice_2(make_napari_viewer, model):
    """(viewer, widget, stack, image layer, mask): a 4-slice stack (:func:`_add_stack`) and
    the widget, after Generate with seed 0 on slice 2 and the 2D Labels mask "m"."""
    viewer = make_napari_viewer()
    stack, img, mask = _add_stack(viewer, 4)
    widget = _docked_widget(viewer, model)
    widget.seed.value = 0
    viewer.dims.set_current_step(0, 2)
    widget.generate()
    return viewer, widget, stack, img, mask


def test_stack_edits_displayed_slice(make_napari_viewer, tiny_model, errors):
    viewer, widget, stack, img, mask = _generated_on_slice_2(make_napari_viewer, tiny_model)

    assert errors["error"] == []
    assert any("axis 0 = 2" in m for m in errors["info"])
    out = widget.last_result
    assert out.data.shape == (1, 40, 48) and "slice 2" in out.name
    np.testing.assert_allclose(out.translate, (14, 3, 4))  # 10 + 2 * scale 2
    np.testing.assert_allclose(out.scale, img.scale)
    assert (out.data[0] != stack[2]).any() and np.array_equal(out.data[0][mask == 0][:10], stack[2][mask == 0][:10])
    np.testing.assert_array_equal(img.data, stack)


def test_a_transposed_view_edits_the_same_slice_and_other_planes_are_refused(make_napari_viewer, tiny_model, errors):
    """Transposing the view (rows shown across) shows the same slice: the same edit. A rolled
    view shows another plane of the stack, and a 3D view no slice: both are notifications."""
    viewer, widget, stack, img, _ = _generated_on_slice_2(make_napari_viewer, tiny_model)
    first = widget.last_result.data
    viewer.dims.transpose()
    widget.generate()
    assert errors["error"] == []
    np.testing.assert_array_equal(widget.last_result.data, first)
    n = len(viewer.layers)
    viewer.dims.transpose()
    viewer.dims.roll()
    widget.generate()
    assert "another plane than the image's slices" in errors["error"][-1]
    viewer.dims.order = (0, 1, 2)
    viewer.dims.ndisplay = 3
    widget.generate()
    assert "switch the viewer to 2D" in errors["error"][-1]
    assert len(viewer.layers) == n
    np.testing.assert_array_equal(img.data, stack)


def test_a_shapes_layer_as_the_mask(make_napari_viewer, tiny_model, errors):
    """A rectangle drawn on a Shapes layer masks the pixels it covers: the same edit, bit for
    bit, as a Labels layer painted over those pixels (through both layers' world placement,
    on the slice it was drawn on). Labels layers stay the default pick; a path drawn in the
    mask layer gets no "choose it as the sketch" hint; one layer cannot be both."""
    viewer, widget, stack, img, _ = _generated_on_slice_2(make_napari_viewer, tiny_model)
    painted = widget.last_result.data
    labels = viewer.layers["m"]
    # world (z, row, col) of "m"'s pixels rows 10..19, cols 10..24 on slice 2 (z = 10 + 2 * 2)
    box = [[14, 8, 9], [14, 8, 16], [14, 12.5, 16], [14, 12.5, 9]]
    drawn = viewer.add_shapes([box], shape_type="rectangle", name="drawn")
    drawn.add_paths([np.array([[14, 9, 10], [14, 9, 15]])])  # inside the box: no hint, no change
    assert widget.mask.value is labels and widget.mask.choices == (labels, drawn)  # Labels first
    widget.mask.value = drawn
    widget.generate()

    assert errors["error"] == [] and not any("strokes in the mask" in m for m in errors["info"])
    np.testing.assert_array_equal(widget.last_result.data, painted)
    assert widget.last_result.metadata["napari_ilat"]["mask"] == "drawn"
    np.testing.assert_array_equal(img.data, stack)
    viewer.dims.set_current_step(0, 1)  # nothing drawn on slice 1
    widget.generate()
    assert "'drawn' covers no pixel of this slice" in errors["error"][-1]
    widget.sketch.value = drawn
    widget.generate()
    assert "both the mask and the sketch" in errors["error"][-1]


def test_a_coarse_labels_mask_is_mapped_onto_the_image(make_napari_viewer, tiny_model, errors):
    """A Labels mask on a coarser grid than the image (one label pixel per 2x2 image pixels,
    as a segmentation of a downsampled image is shown) gives, bit for bit, the edit of a
    Labels layer of the image's size painted where napari draws it; a note says so."""
    viewer = make_napari_viewer()
    stack, img, _ = _add_stack(viewer, 4)
    widget = _docked_widget(viewer, tiny_model)
    widget.seed.value = 0
    coarse = np.zeros((20, 24), np.uint8)
    coarse[5:10, 4:12] = 3
    # image pixel r lies at world 3 + r / 2; label pixel j is drawn over [3.25 + j - 1/2, 3.25 + j + 1/2)
    # world (rows; columns alike from 4): label pixel j covers image pixels 2j and 2j + 1
    viewer.add_labels(coarse, name="coarse", scale=(1, 1), translate=(3.25, 4.25))
    fine = viewer.add_labels(
        np.kron(coarse, np.ones((2, 2), np.uint8)), name="fine", scale=(0.5, 0.5), translate=(3, 4)
    )
    widget.mask.value = fine
    widget.generate()
    painted = widget.last_result.data
    widget.mask.value = viewer.layers["coarse"]
    widget.generate()

    assert errors["error"] == [] and any("mapped onto the image's pixels" in m for m in errors["info"])
    np.testing.assert_array_equal(widget.last_result.data, painted)
    assert (painted[0] != stack[0]).any()
    np.testing.assert_array_equal(img.data, stack)
    np.testing.assert_array_equal(viewer.layers["coarse"].data[5:10, 4:12], 3)


def test_only_the_selected_label_grown(make_napari_viewer, tiny_model, errors):
    """*only the selected label* regenerates one object of a segmentation (the label chosen in
    the Labels layer's controls), *grow mask* grows it: the same edit as a Labels layer
    painted with exactly that mask; both recorded. Off for a Shapes mask; label 0 and a label
    not on the slice are notifications."""
    from napari_ilat.engine.inputs import grow_mask

    viewer = make_napari_viewer()
    stack, img, _ = _add_stack(viewer, 2)
    widget = _docked_widget(viewer, tiny_model)
    seg = np.zeros((40, 48), np.uint8)
    seg[5:12, 5:15], seg[20:30, 25:40] = 1, 4
    labels = viewer.add_labels(seg, name="cells", scale=(0.5, 0.5), translate=(3, 4))
    expected = viewer.add_labels(
        grow_mask(seg == 4, 3).astype(np.uint8), name="painted", scale=(0.5, 0.5), translate=(3, 4)
    )
    widget.seed.value = 0
    widget.mask.value = expected
    widget.generate()
    painted = widget.last_result.data

    widget.mask.value = labels
    assert widget.only_label.enabled
    widget.only_label.value, widget.grow.value = True, 3
    labels.selected_label = 4
    widget.generate()
    assert errors["error"] == []
    np.testing.assert_array_equal(widget.last_result.data, painted)
    meta = widget.last_result.metadata["napari_ilat"]
    assert meta["mask"] == "cells" and meta["mask_label"] == 4 and meta["grow"] == 3
    assert any("mask grown by 3 px" in m for m in errors["info"])
    np.testing.assert_array_equal(labels.data, seg)  # the segmentation is not modified

    labels.selected_label = 2
    widget.generate()
    assert "has no pixel of label 2 (labels there: 1, 4)" in errors["error"][-1]
    labels.selected_label = 0
    widget.generate()
    assert "the selected label of 'cells' is 0" in errors["error"][-1]
    widget.mask.value = viewer.add_shapes([[[1, 1], [5, 5]]], shape_type="rectangle", name="box")
    assert not widget.only_label.enabled


def test_a_pyramid_is_edited_around_the_mask_and_the_result_is_that_region(make_napari_viewer, tiny_model, errors):
    """A multiscale image (a slide scan's pyramid): Generate reads the region around the mask
    from full resolution and adds the pixels it changed as a small layer placed over them;
    candidates and *Keep shown candidate* too. Each equals the edit of the whole image there."""
    from napari_ilat import edit
    from napari_ilat.plugin import layers as _layers

    viewer = make_napari_viewer()
    level0 = (np.random.default_rng(2).random((2048, 1536)) * 255).astype(np.uint8)
    pyramid = [level0, level0[::2, ::2], level0[::4, ::4]]
    scan = viewer.add_image(pyramid, multiscale=True, name="scan", scale=(0.25, 0.25), translate=(7, 9))
    widget = _docked_widget(viewer, tiny_model)
    corners = np.array([[1500.0, 200.0], [1500.0, 260.0], [1540.0, 260.0], [1540.0, 200.0]])  # level-0 pixels
    box = viewer.add_shapes([corners * 0.25 + (7, 9)], shape_type="rectangle", name="pen mark")
    widget.mask.value, widget.samples.value, widget.seed.value = box, 2, 5
    widget.generate()

    assert errors["error"] == [] and any("large image" in m for m in errors["info"])
    got = widget.last_result
    r, c, h, w = got.metadata["napari_ilat"]["region"]
    assert got.name == "scan [iLAT seeds 5..6, region]" and got.data.shape == (2, h, w) and h * w < 100 * 100
    mask = _layers.shapes_to_mask(box, level0.shape, scan)
    for k in range(2):
        np.testing.assert_array_equal(
            got.data[k], edit(level0, mask, model=tiny_model, seed=5 + k)[r : r + h, c : c + w]
        )
    np.testing.assert_allclose(got.data_to_world((0, 0, 0))[1:], scan.data_to_world((r, c)))
    viewer.dims.set_current_step(0, 1)
    kept = widget.keep_candidate()
    assert kept.name == "scan [iLAT seed 6, region]"
    np.testing.assert_array_equal(kept.data, got.data[1])
    np.testing.assert_allclose(kept.data_to_world((0, 0)), scan.data_to_world((r, c)))
    assert scan.data[0] is level0 and not errors["error"]


# ---------------------------------------------------------------- issue 17


def test_status_line_is_cleared_after_a_later_input_error(make_napari_viewer, tiny_model, errors):
    from napari_ilat.plugin.widget import ILATWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "photo")
    widget = ILATWidget(viewer, synchronous=True)
    widget.add_model(tiny_model)
    widget.seed.value = 1
    widget.generate()
    assert widget.status.value.startswith("done in")
    widget.mask.value = viewer.add_labels(np.zeros(viewer.layers["chelsea"].data.shape[:2], np.uint8), name="e")
    widget.generate()
    assert "empty" in errors["error"][-1]
    assert widget.status.value.startswith("error:") and "empty" in widget.status.value


def test_closed_viewer_resets_the_running_flag(make_napari_viewer, qtbot, tiny_model, monkeypatch, errors):
    import threading

    import napari_ilat.engine.editing as edit_mod
    from napari_ilat.plugin.widget import ILATWidget

    release = threading.Event()
    real_edit = edit_mod.edit_with_info

    def blocked_edit(*args, **kwargs):
        release.wait(20)
        return real_edit(*args, **kwargs)

    monkeypatch.setattr(edit_mod, "edit_with_info", blocked_edit)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "photo")
    widget = ILATWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.add_model(tiny_model)
    widget.generate()
    assert widget.running
    state = widget._state
    viewer.close()
    assert not widget.running
    assert state.cancel.is_set()  # the worker stops after its current token
    release.set()


def test_result_whose_source_layer_was_deleted_is_not_added(make_napari_viewer, tiny_model, monkeypatch, errors):
    import napari_ilat.plugin.widget as w

    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "photo")
    widget = w.ILATWidget(viewer, synchronous=True)
    widget.add_model(tiny_model)
    real_run_job = w.run_job

    def run_job_and_delete(*args, **kwargs):
        out = real_run_job(*args, **kwargs)
        viewer.layers.remove("chelsea")  # deleted while generating
        return out

    monkeypatch.setattr(w, "run_job", run_job_and_delete)
    n = len(viewer.layers)
    widget.generate()
    assert len(viewer.layers) == n - 1  # nothing added
    assert "was deleted while generating; the result was not added" in errors["warning"][-1]
    assert "deleted" in widget.status.value and not widget.running


def test_candidates_layer_names_each_candidates_seed(pose_viewer, errors):
    viewer, widget = pose_viewer
    widget.samples.value = 3
    widget.generate()
    assert errors["error"] == []
    assert widget.last_result.name == "pose scene [iLAT seeds 3..5]"
    assert widget.last_result.metadata["napari_ilat"]["seeds"] == [3, 4, 5]


def test_pose_json_opens_as_keypoints_and_skeleton_and_saves_back(
    make_napari_viewer, tiny_pose_model, tmp_path, errors
):
    """An OpenPose --write_json file dropped on napari: named keypoints (BODY_25 converted),
    a skeleton that follows them, picked by the widget for Generate; saved as .json, it reads
    back as the moved pose. A JSON file that is not a pose is not claimed."""
    import json

    from napari_ilat.cli.edit import read_pose
    from napari_ilat.engine.inputs import check_pose
    from napari_ilat.engine.skeleton import POSE_LAYOUTS
    from napari_ilat.plugin.layers import points_to_pose
    from napari_ilat.plugin.pose_files import get_reader
    from napari_ilat.plugin.sample_data import pose_sample_pair

    pair = pose_sample_pair()
    body25 = np.zeros((25, 3))
    for k, j in enumerate(POSE_LAYOUTS[25][1]):
        if pair.source_pose[k, 2] > 0:
            body25[j] = (pair.source_pose[k, 0], pair.source_pose[k, 1], 0.8)
    path = tmp_path / "person.json"
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": body25.flatten().tolist()}]}))
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}))
    assert get_reader(str(tmp_path / "other.json")) is None
    (tmp_path / "big.json").write_text(json.dumps([[1.0, 2.0, 1.0]] * 18) + " " * (1 << 20))  # a pose, but 1 MiB
    assert get_reader(str(tmp_path / "big.json")) is None and get_reader(str(path)) is not None
    # a pose file napari-ilat cannot use is claimed, and opening it says why
    two = {"people": [{"pose_keypoints_2d": body25.flatten().tolist()}] * 2}
    (tmp_path / "two.json").write_text(json.dumps(two))
    reader = get_reader(str(tmp_path / "two.json"))
    with pytest.raises(ValueError, match="holds 2 people"):
        reader(str(tmp_path / "two.json"))

    viewer = make_napari_viewer()
    viewer.add_image(pair.source, name="scene")
    viewer.add_labels(pair.mask.astype(np.uint8), name="mask")
    viewer.open(str(path), plugin="napari-ilat")
    points, skeleton = viewer.layers["person pose"], viewer.layers["person skeleton"]
    np.testing.assert_allclose(points_to_pose(points), pair.source_pose)
    _, widget = viewer.window.add_plugin_dock_widget("napari-ilat", "iLAT editor")
    widget.synchronous = True
    widget.add_model(tiny_pose_model, "tiny pose")
    assert widget.pose.value is points

    data = points.data.copy()
    data[0] += (4, -2)  # drag the first keypoint: the skeleton follows
    points.data = data
    assert any(np.allclose(line, data[0]) for line in np.concatenate(skeleton.data))
    widget.generate()
    assert errors["error"] == []
    assert any(layer.name.startswith("scene [iLAT") for layer in viewer.layers)

    out = tmp_path / "moved.json"
    viewer.layers.selection = {points}
    assert viewer.layers.save(str(out), selected=True, plugin="napari-ilat") == [str(out)]
    np.testing.assert_allclose(check_pose(read_pose(out)), points_to_pose(points), atol=1e-3)


def test_keep_shown_candidate_adds_that_edit_as_its_own_layer(make_napari_viewer, tiny_model, errors):
    """Keep shown candidate: the candidate the slider shows becomes a layer of its own, equal to
    the single edit with its seed, exactly over the source slice (napari's Split Stack would
    blend it additively and drop rotate / shear)."""
    viewer = make_napari_viewer()
    stack, img, mask = _add_stack(viewer, 3, scale=(2, 0.5, 0.7), rotate=20, shear=[0, 0, 0.2])
    widget = _docked_widget(viewer, tiny_model)
    assert not widget.keep_btn.enabled
    assert widget.keep_candidate() is None and "no candidates to keep" in errors["error"][-1]
    errors["error"].clear()
    viewer.dims.set_current_step(0, 1)
    widget.seed.value, widget.samples.value = 5, 3
    widget.generate()
    cands = widget.last_result
    assert cands.data.shape == (3, 1, 40, 48) and widget.keep_btn.enabled
    before = np.array(cands.data, copy=True)

    viewer.layers.selection.active = img  # not a candidates layer: the top-most one is used
    viewer.dims.set_current_step(0, 2)  # the candidate slider (the viewer's first axis)
    kept = widget.keep_candidate()

    assert errors["error"] == []
    assert kept.name == "stack [iLAT seed 7, slice 1]" and kept.data.shape == (1, 40, 48)
    meta = kept.metadata["napari_ilat"]
    assert meta["seed"] == 7 and meta["seeds"] == [7] and meta["samples"] == 1 and meta["candidate"] == 2
    np.testing.assert_array_equal(kept.data, before[2])
    np.testing.assert_array_equal(cands.data, before)  # the candidates layer is not modified
    assert kept.blending == cands.blending and tuple(kept.contrast_limits) == tuple(cands.contrast_limits)
    corner = img.data_to_world((1, 5, 7))  # the same pixel of the source slice, in the world
    np.testing.assert_allclose(kept.data_to_world((0, 5, 7)), corner, atol=1e-9)

    widget.samples.value, widget.seed.value = 1, 7  # the single edit with that seed
    widget.generate()
    np.testing.assert_array_equal(widget.last_result.data, kept.data)
    viewer.layers.remove(cands)
    assert not widget.keep_btn.enabled


def test_every_slice_edits_the_whole_stack(make_napari_viewer, tiny_model, errors):
    """*every slice*: one result layer over the whole stack; slice j is what Generate gives on
    that slice alone with seed S+j; a Labels stack gives each slice its own mask (slices with
    none are copied); a mask of another shape is a notification; off for a 2D image."""
    viewer = make_napari_viewer()
    flat = viewer.add_image(np.zeros((40, 48), np.float32), name="flat")
    widget = _docked_widget(viewer, tiny_model)
    assert not widget.every_slice.enabled  # a 2D image has one slice
    stack, img, mask = _add_stack(viewer, 3)
    assert widget.image.value is img and widget.every_slice.enabled
    widget.every_slice.value = True
    assert not widget.samples.enabled
    widget.seed.value = 4
    widget.generate()

    assert errors["error"] == []
    out = widget.last_result
    assert out.name == "stack [iLAT seeds 4..6, every slice]" and out.data.shape == stack.shape
    np.testing.assert_allclose(out.scale, img.scale)
    np.testing.assert_allclose(out.translate, img.translate)
    assert out.metadata["napari_ilat"]["seeds"] == [4, 5, 6] and out.metadata["napari_ilat"]["slice"] == "every"
    np.testing.assert_array_equal(img.data, stack)  # the input is not modified
    widget.every_slice.value = False
    for j in range(3):  # the displayed slice alone, seed 4 + j
        viewer.dims.set_current_step(0, j)
        widget.seed.value = 4 + j
        widget.generate()
        np.testing.assert_array_equal(widget.last_result.data[0], out.data[j])

    per_slice = np.zeros((3, 40, 48), np.uint8)
    per_slice[1] = mask
    labels = viewer.add_labels(per_slice, name="per slice", scale=(2, 0.5, 0.5), translate=(10, 3, 4))
    widget.mask.value, widget.every_slice.value, widget.seed.value = labels, True, 0
    widget.generate()
    got = widget.last_result
    assert got.metadata["napari_ilat"]["seeds"] == [None, 1, None]
    np.testing.assert_array_equal(got.data[0], stack[0])
    assert (got.data[1] != stack[1]).any()
    assert any("each slice has its own mask" in m for m in errors["info"])

    viewer.add_labels(np.zeros((2, 40, 48), np.uint8), name="wrong")
    widget.mask.value = viewer.layers["wrong"]
    n = len(viewer.layers)
    widget.generate()
    assert "mask 'wrong' has shape (2, 40, 48)" in errors["error"][-1] and len(viewer.layers) == n
    widget.mask.value = viewer.layers["m"]
    widget.pose.value = viewer.add_points(np.zeros((18, 3)), name="tracked")  # keypoints per slice
    widget.generate()
    assert "'tracked' is a 3D layer" in errors["error"][-1] and len(viewer.layers) == n + 1
    widget.image.value = flat
    assert not widget.every_slice.enabled and widget.samples.enabled


def test_every_slice_of_a_stack_too_big_for_memory_is_refused_before_reading_it(
    make_napari_viewer, tiny_model, errors, monkeypatch
):
    """A lazy (dask) stack is read whole for every slice: one larger than the free memory is a
    notification before any chunk is computed, not an out-of-memory kill of napari."""
    import dask.array as da

    import napari_ilat.engine.editing as editing

    computed = []

    def chunk(block):
        computed.append(block.shape)
        return block

    lazy = da.zeros((4, 40, 48), dtype=np.float32, chunks=(1, 40, 48)).map_blocks(chunk, dtype=np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(lazy, name="lazy", contrast_limits=(0, 1))
    mask = np.zeros((40, 48), np.uint8)
    mask[10:20, 10:25] = 1
    viewer.add_labels(mask, name="m")
    widget = _docked_widget(viewer, tiny_model)
    widget.every_slice.value = True
    computed.clear()  # napari reads the shown slice
    monkeypatch.setattr(editing, "free_memory", lambda *a, **k: 40 * 48 * 4 * 4)  # one stack's worth
    n = len(viewer.layers)
    widget.generate()
    assert "every slice of 'lazy'" in errors["error"][-1] and "edit slice by slice" in errors["error"][-1]
    assert computed == [] and len(viewer.layers) == n
    monkeypatch.setattr(editing, "free_memory", lambda *a, **k: None)  # unknown: not checked
    widget.generate()
    out = widget.last_result  # lazy data: the region the edit changed, of every slice
    r, c, h, w = out.metadata["napari_ilat"]["region"]
    assert len(viewer.layers) == n + 1 and out.data.shape == (4, h, w)
    assert r <= 10 and c <= 10 and r + h >= 20 and c + w >= 25


def test_a_missing_colour_table_is_counted_and_cancelled_as_its_own_step(pose_viewer):
    """Colours 'from the surroundings' with a model that carries no colour table: the worker
    computes it first, counted over the codes (the status line names them), then the tokens;
    Cancel during it returns nothing and keeps no table."""
    from napari_ilat import ILATModel
    from napari_ilat.engine.palette import has_colours
    from napari_ilat.plugin.layers import EditInputs
    from napari_ilat.plugin.widget import JobState, run_job

    img = np.random.default_rng(0).random((32, 32, 3))
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:24] = True
    model = ILATModel.tiny(seed=3)
    state, log = JobState(), []
    real = state.progress
    state.progress = lambda done, total: (real(done, total), log.append((state.what, done, total)))
    res = run_job(EditInputs(img, mask), dict(model=model, seed=0, palette="on"), state)
    assert res.status == "ok" and res.result.palette
    assert log[:4] == [("colour of code", k, 64) for k in (16, 32, 48, 64)]
    assert len(log) > 4 and {what for what, _, _ in log[4:]} == {"token"}
    other, stopped = ILATModel.tiny(seed=4), JobState()
    stopped.cancel.set()
    assert run_job(EditInputs(img, mask), dict(model=other, palette="on"), stopped).status == "cancelled"
    assert not has_colours(other.vqgan)
    # what the status line shows while the table is computed
    _, widget = pose_viewer
    import time

    widget._state = JobState(done=16, total=64, what="colour of code", started=time.perf_counter() - 100)
    try:
        widget._poll()
        assert widget.status.value.startswith("colour of code 16/64") and widget.progress.label == "colours"
        assert widget.status.value.endswith(", about 5 min left)")  # 100 s for 16: 300 s for 48 more
        assert (widget.progress.value, widget.progress.max) == (16, 64)
        widget._state = JobState(done=3, total=9)  # then the tokens
        widget._poll()
        assert widget.progress.label == "tokens" and widget.status.value.startswith("token 3/9")
        # the status line has the dock's width: magicgui's empty label column beside it is hidden
        beside = widget.status.native.parent().layout().itemAt(0).widget()
        assert beside is not widget.status.native and beside.isHidden()
    finally:
        widget._state = None


def test_the_dock_scrolls_in_a_short_window_and_generate_shows_the_status_line(pose_viewer, errors):
    """On a laptop screen the window must get shorter than the controls: the dock scrolls
    (napari docks ``.native``, so that is the scroll area), and Generate scrolls down to the
    status line, the bar and the buttons."""
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer, widget = pose_viewer
    window = viewer.window._qt_window
    assert viewer.window.dock_widgets["iLAT editor (napari-ilat)"] is widget
    scroll = widget.native
    assert isinstance(scroll, QScrollArea) and scroll.parent().widget() is scroll  # what the dock holds
    assert widget.status.native in scroll.widget().findChildren(type(widget.status.native))
    assert window.minimumSizeHint().height() < 650  # the controls alone are ~750 px tall
    window.show()  # a hidden window does not lay out its controls
    window.resize(1200, 600)
    for _ in range(20):
        QApplication.processEvents()
    bar, view = scroll.verticalScrollBar(), scroll.viewport()

    def status_in_view():
        top = widget.status.native.mapTo(view, QPoint(0, 0)).y()
        return 0 <= top and top + widget.status.native.height() <= view.height()

    assert window.height() <= 650 and bar.maximum() > 0 and bar.value() == 0
    assert not status_in_view()  # below the fold before the edit
    widget.generate()
    for _ in range(20):
        QApplication.processEvents()
    assert bar.value() > 0 and status_in_view()
    assert widget.status.value.startswith("done in")
