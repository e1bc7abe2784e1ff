"""The mask of a pose edit (``engine/pose_mask.py``): what the widget's auto mask paints and
``napari-ilat edit --mask-from-pose`` uses. No display needed."""

import json

import numpy as np
import pytest
import skimage.io

from napari_ilat.cli import main
from napari_ilat.engine import pose_mask as pm


@pytest.mark.parametrize("scene", [5, 151])  # a small figure; the pose sample, a close-up
def test_moved_joint_mask_covers_the_edit_pair(scene):
    from napari_ilat.data.pose_scenes import make_edit_pair
    from napari_ilat.engine.skeleton import PART_NAMES

    pair = make_edit_pair(scene, 128)
    auto = pm.moved_joint_mask(pair.source_pose, pair.target_pose, pair.mask.shape)
    moved = [PART_NAMES.index(name) for name in pair.moved_parts]
    limb = np.isin(pair.source_labels, moved) | np.isin(pair.target_labels, moved)  # old and new, as drawn
    assert (auto & limb).sum() / limb.sum() > 0.95
    assert auto.mean() < 2.5 * pair.mask.mean()
    assert not pm.moved_joint_mask(pair.source_pose, pair.source_pose, pair.mask.shape).any()


def test_auto_mask_capsules_follow_the_figure_not_the_image():
    """The same figure in a larger photograph gets the same auto mask; a figure 4x larger gets
    capsules about 4x wider (less the fixed margin); a pose without a bone falls back to the
    image's size."""
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(5, 128)
    small = pm.moved_joint_mask(pair.source_pose, pair.target_pose, (128, 128))
    large = pm.moved_joint_mask(pair.source_pose, pair.target_pose, (1024, 1024))
    assert np.array_equal(large[:128, :128], small) and large.sum() < 1.05 * small.sum()  # (capsules past the edge)
    big = [p * np.array([4.0, 4.0, 1.0]) for p in (pair.source_pose, pair.target_pose)]
    assert pm.default_mask_radius((512, 512), *big) - pm.RADIUS_MARGIN == pytest.approx(
        4 * (pm.default_mask_radius((128, 128), pair.source_pose, pair.target_pose) - pm.RADIUS_MARGIN)
    )
    area = pm.moved_joint_mask(*big, (512, 512)).sum()
    assert 10 * small.sum() < area < 16 * small.sum()
    lone = np.full((18, 3), -1.0)
    lone[1] = (50, 50, 1)  # a neck alone: no bone to measure
    assert pm.default_mask_radius((1000, 400), lone) == pytest.approx(24.0)


def test_any_pose_layout_and_the_public_name():
    """COCO-17 rows are read as check_pose reads them; ``napari_ilat.moved_joint_mask`` is this one."""
    import napari_ilat
    from napari_ilat.data.pose_scenes import make_edit_pair
    from napari_ilat.engine.skeleton import to_coco18

    assert napari_ilat.moved_joint_mask is pm.moved_joint_mask
    pair = make_edit_pair(151, 128)
    coco = np.full((17, 3), -1.0)
    coco17 = [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]  # COCO index -> ours
    for c, k in enumerate(coco17):
        coco[c] = pair.target_pose[k]
    assert np.array_equal(to_coco18(coco)[2:14], pair.target_pose[2:14])  # limbs as ours (no neck in COCO)
    assert (
        pm.moved_joint_mask(pair.source_pose, coco, (128, 128)).sum()
        > 0.8 * pm.moved_joint_mask(pair.source_pose, pair.target_pose, (128, 128)).sum()
    )
    with pytest.raises(ValueError, match="pose must be an array of shape"):
        pm.moved_joint_mask(pair.source_pose, np.zeros((5, 3)), (128, 128))


def _pose_files(tmp_path, pair):
    skimage.io.imsave(tmp_path / "scene.png", pair.source, check_contrast=False)
    for name, pose in (("old.json", pair.source_pose), ("new.json", pair.target_pose)):
        (tmp_path / name).write_text(json.dumps({"keypoints": pose.tolist(), "image_size": [128, 128]}))


def test_cli_edit_masks_what_moved_between_two_poses(tmp_path, tiny_pose_model_path):
    """`napari-ilat edit scene.png --pose new.json --mask-from-pose old.json`: the pixels it changes
    are those of moved_joint_mask(old, new, hidden_moved=False) (and its 2 px blend band), the
    same bytes as edit() with that mask; --limb-radius sets the capsules."""
    from napari_ilat import edit, load_model
    from napari_ilat.cli.edit import read_metadata
    from napari_ilat.data.pose_scenes import make_edit_pair
    from napari_ilat.engine.inputs import grow_mask

    pair = make_edit_pair(151, 128)
    _pose_files(tmp_path, pair)
    base = [
        "edit",
        str(tmp_path / "scene.png"),
        "--pose",
        str(tmp_path / "new.json"),
        "--model",
        str(tiny_pose_model_path),
    ]
    base += ["--seed", "3", "-q"]
    assert main([*base, "--mask-from-pose", str(tmp_path / "old.json"), "-o", str(tmp_path / "out.png")]) == 0
    out = skimage.io.imread(tmp_path / "out.png")
    mask = pm.moved_joint_mask(pair.source_pose, pair.target_pose, (128, 128), hidden_moved=False)
    # the new arm hides a hip: taken as unmoved (not its torso line and thigh masked too)
    assert mask.sum() < 0.8 * pm.moved_joint_mask(pair.source_pose, pair.target_pose, (128, 128)).sum()
    changed = (out != pair.source).any(-1)
    assert changed.any() and not (changed & ~grow_mask(mask, 2)).any()
    model = load_model(str(tiny_pose_model_path))
    assert np.array_equal(out, edit(pair.source, mask, pose=pair.target_pose, model=model, seed=3))
    meta = read_metadata(tmp_path / "out.png")
    assert meta["mask"] is None and meta["mask_from_pose"] == "old.json" and meta["limb_radius"] == 0

    thin = ["--mask-from-pose", str(tmp_path / "old.json"), "--limb-radius", "3", "-o", str(tmp_path / "thin.png")]
    assert main([*base, *thin]) == 0
    changed_thin = (skimage.io.imread(tmp_path / "thin.png") != pair.source).any(-1)
    assert changed_thin.sum() < changed.sum()


def test_cli_mask_from_pose_refuses_what_it_cannot_do(tmp_path, tiny_pose_model_path, capsys):
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(151, 128)
    _pose_files(tmp_path, pair)
    img, old, new = (str(tmp_path / n) for n in ("scene.png", "old.json", "new.json"))
    out = ["-o", str(tmp_path / "o.png"), "--model", str(tiny_pose_model_path)]
    cases = [
        (["edit", img, *out], "say what to regenerate: --mask MASK.png, or --mask-from-pose"),
        (["edit", img, "--mask-from-pose", old, *out], "give --pose"),
        (["edit", str(tmp_path), "--pose", new, "--mask-from-pose", old, *out], "takes one IMAGE file"),
        (["edit", img, "--pose", new, "--mask-from-pose", old, "--label", "2", *out], "--label picks labels"),
        (["edit", img, "--pose", new, "--mask-from-pose", old, "--limb-radius", "-1", *out], "--limb-radius must"),
        (
            ["edit", img, "--pose", old, "--mask-from-pose", old, *out],
            "no keypoint moved between old.json and old.json",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "o.png").exists()


def test_a_figure_far_from_the_training_scale_is_warned_about(tiny_pose_model):
    """A pose model draws limbs at its training figures' scale: a figure 4x larger than the
    pose sample's (a person hundreds of px tall in a photograph) gets a warning naming the
    factor; the sample's own figure, and the same figure resized to the model, none."""
    import warnings

    from napari_ilat import edit
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(151, 128)
    assert pm.figure_scale_warning(pair.target_pose, 128) is None  # the sample, for a 128 px model
    big = pair.target_pose * np.array([4.0, 4.0, 1.0])
    ratio = 4 * pm.median_bone_length(pair.target_pose) / (pm.FIGURE_BONE * 128)
    assert f"downscale the image about {ratio:.1f}x" in pm.figure_scale_warning(big, 128)
    assert "upscale the image about" in pm.figure_scale_warning(pair.target_pose / 4, 128)
    piled = np.tile([20.0, 20.0, 1.0], (18, 1))  # every keypoint on one pixel: no figure to measure
    assert pm.median_bone_length(piled) is None and pm.figure_scale_warning(piled, 128) is None
    assert pm.default_mask_radius((100, 100), piled) == 6.0

    # through edit(): the tiny 32 px model sees the 128 px scene's figure 4x too large
    mask = np.zeros((128, 128), bool)
    mask[40:60, 40:60] = True
    k = pm.median_bone_length(pair.target_pose) / (pm.FIGURE_BONE * tiny_pose_model.resolution)
    with pytest.warns(UserWarning, match=rf"about {k:.1f}x the size of the pose model's training figures"):
        edit(pair.source, mask, pose=pair.target_pose, model=tiny_pose_model, seed=0)
    small = pair.source[::4, ::4]
    pose = pair.target_pose.copy()
    pose[pose[:, 2] > 0, :2] /= 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edit(small, mask[::4, ::4], pose=pose, model=tiny_pose_model, seed=0)
        edit(pair.source, mask, pose=pair.target_pose, model=tiny_pose_model, seed=0, resolution="resize")
