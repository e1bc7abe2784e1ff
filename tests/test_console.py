"""napari_ilat.plugin.console.edit_layers on a real viewer."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(
        sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
        reason="needs a display (run under xvfb-run)",
    ),
]


def test_edit_layers_by_name(make_napari_viewer, tiny_pose_model):
    from napari_ilat.plugin.console import edit_layers

    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "pose")
    source = viewer.layers["pose scene"].data.copy()
    layer = edit_layers(viewer, image="pose scene", mask="suggested mask", pose="pose", model=tiny_pose_model, seed=2)
    assert layer.name == "pose scene [iLAT seed 2]"
    assert layer.data.shape == source.shape
    meta = layer.metadata["napari_ilat"]  # what the widget records (plugin.results.add_edit_result)
    assert {k: meta[k] for k in ("source", "mask", "slice", "mode", "samples", "seed")} == {
        "source": "pose scene",
        "mask": "suggested mask",
        "slice": [],
        "mode": "ilat",
        "samples": 1,
        "seed": 2,
    }
    assert meta["model"] == tiny_pose_model.config.name and "device" in meta

    drawn = edit_layers(
        viewer, image="pose scene", mask="suggested mask", pose="pose", model=tiny_pose_model
    )  # no seed: drawn by the engine, recorded
    seed = drawn.metadata["napari_ilat"]["seed"]
    assert drawn.name == f"pose scene [iLAT seed {seed}]"
    np.testing.assert_array_equal(viewer.layers["pose scene"].data, source)

    with pytest.raises(ValueError, match="no layer named 'nope'"):
        edit_layers(viewer, image="nope", mask="suggested mask")
    with pytest.raises(ValueError, match="not pose-conditioned"):
        from napari_ilat import ILATModel

        edit_layers(viewer, image="pose scene", mask="suggested mask", pose="pose", model=ILATModel.tiny(resolution=32))


def test_keep_candidate_by_name_and_index(make_napari_viewer, tiny_pose_model):
    from napari_ilat.plugin.console import edit_layers, keep_candidate

    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "pose")
    args = dict(image="pose scene", mask="suggested mask", pose="pose", model=tiny_pose_model)
    four = edit_layers(viewer, **args, seed=3, samples=4)
    kept = keep_candidate(four.name, 2, viewer=viewer)
    assert kept.name == "pose scene [iLAT seed 5]" and kept.data.shape == (128, 128, 3)
    np.testing.assert_array_equal(kept.data, edit_layers(viewer, **args, seed=5).data)
    assert keep_candidate(four, viewer=viewer).name == "pose scene [iLAT seed 3]"  # the one shown: the first
    with pytest.raises(ValueError, match=r"candidate 4 does not exist: .* has 4 \(0..3\)"):
        keep_candidate(four, 4, viewer=viewer)
    with pytest.raises(ValueError, match="is not a layer of candidates"):
        keep_candidate(kept, 0, viewer=viewer)


def test_edit_layers_every_slice(make_napari_viewer, tiny_model):
    from napari_ilat.plugin.console import edit_layers

    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).random((3, 40, 48)).astype(np.float32)
    viewer.add_image(stack, name="stack")
    mask = np.zeros((40, 48), np.uint8)
    mask[10:20, 10:25] = 1
    viewer.add_labels(mask, name="m")
    layer = edit_layers(viewer, image="stack", mask="m", model=tiny_model, seed=2, every_slice=True)
    assert layer.name == "stack [iLAT seeds 2..4, every slice]" and layer.data.shape == stack.shape
    viewer.dims.set_current_step(0, 1)
    one = edit_layers(viewer, image="stack", mask="m", model=tiny_model, seed=3)  # the shown slice alone
    np.testing.assert_array_equal(one.data[0], layer.data[1])
    with pytest.raises(ValueError, match="has a single 2D slice; 'every slice' is for stacks"):
        viewer.add_image(stack[0], name="flat")
        edit_layers(viewer, image="flat", mask="m", model=tiny_model, every_slice=True)


def test_edit_layers_one_label_grown_and_a_shapes_mask(make_napari_viewer, tiny_model):
    """label= / grow=: one object of a Labels layer, grown; a Shapes layer as the mask: the
    same edits as edit() with those masks."""
    from napari_ilat import edit
    from napari_ilat.engine.inputs import grow_mask
    from napari_ilat.plugin.console import edit_layers

    viewer = make_napari_viewer()
    image = np.random.default_rng(1).random((40, 48)).astype(np.float32)
    viewer.add_image(image, name="img")
    seg = np.zeros((40, 48), np.uint8)
    seg[5:12, 5:15], seg[20:30, 25:40] = 2, 6
    viewer.add_labels(seg, name="seg")
    got = edit_layers(viewer, image="img", mask="seg", label=6, grow=2, model=tiny_model, seed=5)
    np.testing.assert_array_equal(got.data, edit(image, grow_mask(seg == 6, 2), model=tiny_model, seed=5))
    assert got.metadata["napari_ilat"]["mask_label"] == 6 and got.metadata["napari_ilat"]["grow"] == 2
    viewer.add_shapes([[[20, 25], [20, 39], [29, 39], [29, 25]]], shape_type="polygon", name="outline")
    got = edit_layers(viewer, image="img", mask="outline", model=tiny_model, seed=5)
    np.testing.assert_array_equal(got.data, edit(image, seg == 6, model=tiny_model, seed=5))
