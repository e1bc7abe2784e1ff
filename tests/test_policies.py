"""One definition each (issue 18): modes, skeleton, rasteriser, input normalisation, seeds;
and the three bugs a review planted that the suite used to miss (quality scored against the
source, a 0-255 sketch no longer scaled, a wrong bone in the GUI skeleton)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import skimage.io

from napari_ilat.cli import main
from napari_ilat.engine.inputs import normalize_mask, normalize_sketch
from napari_ilat.engine.modes import MODE_NAMES
from napari_ilat.engine.skeleton import KEYPOINT_NAMES

# ---------------------------------------------------------------- modes


@pytest.mark.gui  # imports napari
def test_every_front_end_offers_the_engines_modes_and_no_other():
    import argparse

    from napari_ilat.cli import edit as cli_edit
    from napari_ilat.evaluation.quality import LEARNED
    from napari_ilat.plugin.widget import available_modes

    assert [name for _, name in available_modes()] == list(MODE_NAMES)
    parser = argparse.ArgumentParser()
    cli_edit.add_arguments(parser)
    mode_arg = next(a for a in parser._actions if a.dest == "mode")
    assert list(mode_arg.choices) == list(MODE_NAMES)
    # bench quality runs every mode of an iLAT model; imagebart needs its own model
    assert tuple(LEARNED) == tuple(n for n in MODE_NAMES if n != "imagebart")
    assert "imagebart" in MODE_NAMES


def test_edit_rejects_an_unknown_mode_naming_the_valid_ones(tiny_model):
    from napari_ilat import edit

    img = np.zeros((16, 16), np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    with pytest.raises(ValueError, match=r"ilat, ilat\*, taming, imagebart, got 'bogus'"):
        edit(img, mask, model=tiny_model, mode="bogus")


# ---------------------------------------------------------------- input normalisation


def test_sketch_is_scaled_by_its_dtype_one_rule():
    """Planted bug (b): a 0-255 sketch no longer scaled gives strokes of 255, not 1."""
    strokes = np.zeros((10, 12))
    strokes[4:6, 2:10] = 1.0
    strokes[3, 2:10] = 128 / 255  # anti-aliased edges: k / 255 is exact in 8 and 16 bits
    strokes[6, 2:10] = 40 / 255
    for given in (
        strokes,  # float in [0, 1]: as is
        np.rint(strokes * 255).astype(np.uint8),
        np.rint(strokes * 255).astype(np.float32),  # 0..255 floats
        np.rint(strokes * 255).astype(np.int64),  # 0..255 from a Python list
        np.rint(strokes * 65535).astype(np.uint16),
        np.repeat(np.rint(strokes * 255).astype(np.uint8)[..., None], 3, 2),  # RGB file
    ):
        out = normalize_sketch(given)
        assert out.dtype == np.float64 and out.shape == strokes.shape
        np.testing.assert_allclose(out, strokes, atol=1e-6, err_msg=f"{given.dtype} {given.shape}")
    np.testing.assert_array_equal(normalize_sketch(strokes.astype(bool)), strokes > 0)
    with pytest.raises(ValueError, match="up to 1000"):
        normalize_sketch(strokes * 1000)
    with pytest.raises(ValueError, match="NaN"):
        normalize_sketch(np.full((4, 4), np.nan))


def test_mask_is_nonzero_whatever_the_dtype():
    mask = np.zeros((6, 7), bool)
    mask[1:3, 2:5] = True
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 3] = 255  # an opaque alpha channel is not "masked everywhere"
    rgba[mask, 1] = 9
    for given in (mask, mask.astype(np.uint16) * 65535, mask.astype(np.uint16), mask * 0.5, rgba):
        np.testing.assert_array_equal(normalize_mask(given), mask, err_msg=str(given.dtype))
    with pytest.raises(ValueError, match="does not match the image"):
        normalize_mask(mask, (7, 6))


def test_edit_and_cli_read_a_0_255_sketch_as_strokes_of_1(tmp_path):
    from napari_ilat import ILATModel, edit
    from napari_ilat.cli.edit import read_sketch

    model = ILATModel.tiny(cond="sketch", resolution=32, seed=5)
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    unit = np.zeros((32, 32))
    unit[15:17, 4:28] = 1.0
    unit[14, 4:28] = unit[17, 4:28] = 100 / 255  # anti-aliased edges
    a = edit(img, mask, sketch=unit, model=model, seed=1)
    b = edit(img, mask, sketch=np.rint(unit * 255).astype(np.uint8), model=model, seed=1)
    c = edit(img, mask, sketch=np.rint(unit * 255), model=model, seed=1)
    assert np.array_equal(a, b) and np.array_equal(a, c)

    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        path = tmp_path / f"sketch_{dtype.__name__}.png"
        skimage.io.imsave(path, np.rint(unit * top).astype(dtype), check_contrast=False)
        np.testing.assert_allclose(read_sketch(path), unit, atol=1e-6)


# ---------------------------------------------------------------- skeleton


#: The 17 OpenPose/COCO limbs, written out by name here (not imported) so that a wrong bone
#: in the engine's SKELETON or in what the GUI draws fails this test.
EXPECTED_BONES = {
    frozenset(p)
    for p in (
        ("neck", "r_shoulder"),
        ("neck", "l_shoulder"),
        ("r_shoulder", "r_elbow"),
        ("r_elbow", "r_wrist"),
        ("l_shoulder", "l_elbow"),
        ("l_elbow", "l_wrist"),
        ("neck", "r_hip"),
        ("r_hip", "r_knee"),
        ("r_knee", "r_ankle"),
        ("neck", "l_hip"),
        ("l_hip", "l_knee"),
        ("l_knee", "l_ankle"),
        ("neck", "nose"),
        ("nose", "r_eye"),
        ("r_eye", "r_ear"),
        ("nose", "l_eye"),
        ("l_eye", "l_ear"),
    )
}


def _bones_by_name(lines, points_rc, names) -> set:
    """The keypoint names at the two ends of each drawn line."""
    out = set()
    for line in lines:
        ends = []
        for end in np.asarray(line)[[0, -1]]:
            d = np.hypot(*(points_rc - end).T)
            assert d.min() < 1e-6, f"a skeleton line ends at {end}, on no keypoint"
            ends.append(names[int(d.argmin())])
        out.add(frozenset(ends))
    return out


@pytest.mark.gui  # imports napari
def test_gui_skeleton_draws_the_right_bones():
    """Planted bug (c): a wrong bone in the skeleton the GUI draws (sample layer and the
    skeleton that follows dragged points) is caught by comparison with the named limbs."""
    from napari.layers import Points

    from napari_ilat.engine.skeleton import SKELETON
    from napari_ilat.plugin.sample_data import BONE_COLOURS, pose_layer_data, pose_sample, skeleton_lines

    assert {frozenset((KEYPOINT_NAMES[a], KEYPOINT_NAMES[b])) for a, b in SKELETON} == EXPECTED_BONES
    assert len(SKELETON) == len(EXPECTED_BONES) == len(BONE_COLOURS)

    # the sample's skeleton layer, over its keypoints (invisible ones are left out)
    sample = {t[1]["name"]: t for t in pose_sample()}
    points_rc, names = sample["pose"][0], list(sample["pose"][1]["features"]["name"])
    shown = {b for b in EXPECTED_BONES if b <= set(names)}
    assert len(shown) >= 10
    assert _bones_by_name(sample["skeleton"][0], points_rc, names) == shown

    # the skeleton that follows dragged points: every keypoint visible, all 17 bones
    pose = np.ones((18, 3))
    pose[:, :2] = np.random.default_rng(0).random((18, 2)) * 100  # distinct positions
    data, kwargs, _ = pose_layer_data(pose)
    followed, colours = skeleton_lines(Points(data, features=kwargs["features"]))
    assert _bones_by_name(followed, data, list(kwargs["features"]["name"])) == EXPECTED_BONES
    assert len(colours) == len(EXPECTED_BONES)


# ---------------------------------------------------------------- rasteriser


@pytest.mark.gui  # imports napari
def test_gui_sketch_strokes_are_the_training_rasteriser():
    from napari.layers import Shapes

    from napari_ilat.engine.sketch import rasterize_strokes
    from napari_ilat.plugin.layers import shapes_to_sketch

    path = np.array([[5.0, 4.0], [20.0, 30.0], [8.0, 35.0]])
    square = np.array([[25.0, 5.0], [25.0, 15.0], [35.0, 15.0], [35.0, 5.0]])
    shapes = Shapes([path, square], shape_type=["path", "polygon"])
    gui = shapes_to_sketch(shapes, (40, 40), width=3.0)
    train = rasterize_strokes([path, np.vstack([square, square[:1]])], (40, 40), 3.0)
    np.testing.assert_array_equal(gui, train)
    assert gui.max() == 1.0 and gui[30, 30] == 0


# ---------------------------------------------------------------- seeds


def test_edit_reports_the_seed_it_drew(tiny_model):
    from napari_ilat import edit, edit_with_info

    img = (np.random.default_rng(1).random((24, 24, 3)) * 255).astype(np.uint8)
    mask = np.zeros((24, 24), bool)
    mask[6:18, 6:18] = True
    first = edit_with_info(img, mask, model=tiny_model)
    assert isinstance(first.seed, int) and 0 <= first.seed < 2**31
    np.testing.assert_array_equal(edit(img, mask, model=tiny_model, seed=first.seed), first.image)
    assert first.model == tiny_model.config.name and first.mode == "ilat" and first.samples == 1


def test_cli_edit_without_seed_prints_it_and_stores_it(tmp_path, tiny_model_path, capsys):
    from napari_ilat.cli.edit import read_metadata

    rng = np.random.default_rng(0)
    img = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:25, 8:30] = 255
    skimage.io.imsave(tmp_path / "img.png", img, check_contrast=False)
    skimage.io.imsave(tmp_path / "mask.png", mask, check_contrast=False)
    args = ["edit", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"), "--model", str(tiny_model_path)]
    assert main([*args, "-o", str(tmp_path / "a.png")]) == 0
    printed = re.search(r"seed (\d+)", capsys.readouterr().err)
    assert printed, "the drawn seed is printed"
    seed = int(printed.group(1))
    assert read_metadata(tmp_path / "a.png")["seed"] == seed

    assert main([*args, "--seed", str(seed), "-o", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()

    assert main([*args, "--seed", str(seed), "-o", str(tmp_path / "c.tif")]) == 0
    assert read_metadata(tmp_path / "c.tif")["seed"] == seed
    np.testing.assert_array_equal(skimage.io.imread(tmp_path / "c.tif"), skimage.io.imread(tmp_path / "a.png"))


# ---------------------------------------------------------------- quality


def test_quality_is_scored_against_the_target_not_the_source():
    """Planted bug (a): an oracle that returns the target must score perfectly; scored
    against the source (which differs inside the mask) it would not."""
    from napari_ilat.evaluation.quality import evaluate

    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 10:24] = True
    cases, targets = [], {}
    for seed in (1, 2):
        source = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        target = source.copy()
        target[mask] = 255 - target[mask]  # the edit changes the masked region
        targets[seed] = target
        cases.append((seed, source, target, mask, {}))

    def oracle(source, mask, *, seed, **kw):
        return targets[seed]

    result = evaluate(cases, model=None, methods=("ilat",), classical=False, editor=oracle)
    scores = result["mean"]["ilat"]
    assert scores["mae"] == 0 and scores["mae_mask"] == 0
    assert scores["psnr_mask"] == float("inf") and scores["ssim"] == pytest.approx(1.0)
