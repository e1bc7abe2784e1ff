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
    huge = pair.target_pose * np.array([100.0, 100.0, 1.0])  # sizes in whole numbers, not 1.3e+02
    assert f"the figure is about {100 * ratio / 4:.0f}x the size" in pm.figure_scale_warning(huge, 128)
    assert "the figure is about 0.011x the size" in pm.figure_scale_warning(pair.target_pose / (ratio / 4 / 0.011), 128)
    piled = np.tile([20.0, 20.0, 1.0], (18, 1))  # every keypoint on one pixel: no figure to measure
    assert pm.median_bone_length(piled) is None and pm.figure_scale_warning(piled, 128) is None
    assert pm.default_mask_radius((100, 100), piled) == 6.0

    # through edit(): the tiny 32 px model sees the 128 px scene's figure 4x too large
    mask = np.zeros((128, 128), bool)
    mask[40:60, 40:60] = True
    k = pm.median_bone_length(pair.target_pose) / (pm.FIGURE_BONE * tiny_pose_model.resolution)
    with pytest.warns(UserWarning, match=rf"about {k:.2g}x the size of the pose model's training figures"):
        edit(pair.source, mask, pose=pair.target_pose, model=tiny_pose_model, seed=0, resolution="native")
    small = pair.source[::4, ::4]
    pose = pair.target_pose.copy()
    pose[pose[:, 2] > 0, :2] /= 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edit(small, mask[::4, ::4], pose=pose, model=tiny_pose_model, seed=0)
        edit(pair.source, mask, pose=pair.target_pose, model=tiny_pose_model, seed=0, resolution="resize")
        # the default ("auto") edits the figure at its own scale instead of warning
        edit(pair.source, mask, pose=pair.target_pose, model=tiny_pose_model, seed=0)


@pytest.mark.slow
def test_auto_edits_a_large_figure_at_its_scale():
    """resolution="auto" (the default) edits a figure 4x the training figures' size at the
    figure's scale: the pose model then draws the moved limbs where they go, which "native" (the
    model's pixel scale, limbs drawn 4x too thin) does not; a figure at the training scale is
    edited exactly as "native" edits it. Validation scenes rendered larger, their truths known."""
    import warnings

    from napari_ilat import edit_with_info, load_model
    from napari_ilat.data.pose_scenes import make_edit_pair
    from napari_ilat.data.splits import split_seeds
    from napari_ilat.evaluation.metrics import psnr

    model = load_model("pose")
    seeds = split_seeds("validation", 6)
    gains = []
    # scene 5 at 512 px: a figure 3.7x the training size; scene 3 at 384 px: 3.3x, in an image
    # only 3 model windows wide (shrunk to one window: 3x)
    for i, size in ((5, 512), (3, 384)):
        p = make_edit_pair(int(seeds[i]), size)
        ratio = pm.figure_ratio(p.target_pose, model.resolution)
        assert pm.figure_off_scale(ratio)
        auto = edit_with_info(p.source, p.mask, pose=p.target_pose, model=model, seed=i, device="cpu")
        # the figure's bones now as long as the training ones, or the image shrunk to one model window
        assert auto.scale == pytest.approx(min(ratio, size / model.resolution), rel=0.05)
        with pytest.warns(UserWarning, match="the size of the pose model's training figures"):
            native = edit_with_info(
                p.source, p.mask, pose=p.target_pose, model=model, seed=i, device="cpu", resolution="native"
            )
        assert native.scale == 1.0
        gains.append(psnr(auto.image, p.target, p.mask) - psnr(native.image, p.target, p.mask))
    assert np.mean(gains) > 1.0, gains

    p = make_edit_pair(int(split_seeds("validation", 1)[0]), 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = edit_with_info(p.source, p.mask, pose=p.target_pose, model=model, seed=0, device="cpu")
    native = edit_with_info(
        p.source, p.mask, pose=p.target_pose, model=model, seed=0, device="cpu", resolution="native"
    )
    assert auto.scale == 1.0 and np.array_equal(auto.image, native.image)


def test_a_figure_scaled_edit_gives_each_window_the_keypoints_where_its_pixels_are(tiny_pose_model, monkeypatch):
    """At the figure's scale the image is resized and the keypoints mapped separately: each
    model window's condition must put every keypoint on the model pixel that shows the image
    point it marks. The image is a colour ramp (red = column, green = row), which resizing
    keeps exact, so the model input at a keypoint's position says which image point it is."""
    from napari_ilat.engine import editing

    h = w = 600
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([cols / (w - 1), rows / (h - 1), np.full((h, w), 0.5)], -1)
    mask = np.zeros((h, w), bool)
    mask[150:180, 150:180] = mask[420:450, 410:450] = True  # a grid of several model windows at ~6x
    # a figure of 26 px bones (6x the tiny model's training figures), grown from the neck
    from napari_ilat.engine.skeleton import NECK, SKELETON

    rng = np.random.default_rng(0)
    pose = np.zeros((18, 3))
    pose[:, 2] = 1
    pose[NECK, :2] = 300
    for a, b in SKELETON:  # (parents first)
        angle = rng.uniform(0, 2 * np.pi)
        pose[b, :2] = pose[a, :2] + 26 * np.array([np.cos(angle), np.sin(angle)])
    inputs, conds = [], []
    resize_masked, sample_grid = editing._resize_masked, editing.sample_grid

    def keep_input(x, m, size):
        out = resize_masked(x, m, size)
        inputs.append(out[0][0].double().numpy())  # (3, rows, cols) in [0, 1], masked pixels 0
        return out

    def keep_conditions(net, tokens, known, cond_at, **kw):
        def cond(tr0, tc0):  # the model window whose top-left token is (tr0, tc0) of the grid
            out = cond_at(tr0, tc0)
            conds.append((tr0, tc0, out[0].double().numpy()))
            return out

        return sample_grid(net, tokens, known, cond, **kw)

    monkeypatch.setattr(editing, "_resize_masked", keep_input)
    monkeypatch.setattr(editing, "sample_grid", keep_conditions)
    result = editing.edit_with_info(image, mask, pose=pose, model=tiny_pose_model, seed=0, device="cpu")
    f = tiny_pose_model.config.vqgan.factor
    assert 5 < result.scale < 7 and len(inputs) == 1 and len({c[:2] for c in conds}) >= 2  # several windows
    x = inputs[0]
    checked = set()
    for tr0, tc0, kp in conds:
        for (nx, ny, _), (px, py, _) in zip(kp, pose):
            # the model pixel (continuous index into the resized window) the condition puts it on
            i, j = tr0 * f + ny * 32 - 0.5, tc0 * f + nx * 32 - 0.5
            if not (1 <= i < x.shape[1] - 2 and 1 <= j < x.shape[2] - 2):
                continue
            i0, j0 = int(i), int(j)
            patch = x[:, i0 : i0 + 2, j0 : j0 + 2]
            if (patch == 0).all(axis=0).any():
                continue  # a masked model pixel: the input there is blank
            a, b = i - i0, j - j0
            value = (1 - a) * ((1 - b) * patch[:, 0, 0] + b * patch[:, 0, 1]) + a * (
                (1 - b) * patch[:, 1, 0] + b * patch[:, 1, 1]
            )
            assert value[0] == pytest.approx(px / (w - 1), abs=0.01) and value[1] == pytest.approx(
                py / (h - 1), abs=0.01
            )
            checked.add((tr0, tc0))
    assert len(checked) >= 2  # keypoints checked in more than one model window


def test_cli_edits_an_off_scale_figure_at_its_scale_and_says_so(tmp_path, tiny_pose_model_path, capsys):
    """The tiny 32 px pose model sees the 128 px scene's figure about 6x too large: by default
    (--resolution auto) the edit is made on the image shrunk to one model window (4x) and the
    line that names the output says so; --resolution native warns instead. Both are recorded."""
    from napari_ilat.cli.edit import read_metadata
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(151, 128)
    _pose_files(tmp_path, pair)
    base = ["edit", str(tmp_path / "scene.png"), "--pose", str(tmp_path / "new.json"), "--seed", "3"]
    base += ["--model", str(tiny_pose_model_path), "--mask-from-pose", str(tmp_path / "old.json")]
    assert main([*base, "-o", str(tmp_path / "auto.png")]) == 0
    out, err = capsys.readouterr()
    assert "edited at 1/4.0 of the image's size" in out + err and "training figures" not in err
    assert read_metadata(tmp_path / "auto.png")["resolution"] == "auto"
    assert read_metadata(tmp_path / "auto.png")["scale"] == 4.0
    assert main([*base, "--resolution", "native", "-o", str(tmp_path / "native.png")]) == 0
    out, err = capsys.readouterr()
    assert "the size of the pose model's training figures" in err and "edited at" not in out + err
    assert read_metadata(tmp_path / "native.png")["scale"] == 1.0
    assert not np.array_equal(skimage.io.imread(tmp_path / "auto.png"), skimage.io.imread(tmp_path / "native.png"))


def test_a_figure_the_image_cannot_shrink_enough_is_warned_about(tiny_pose_model):
    """A close-up: the figure fills so much of the image that shrinking the image to one model
    window leaves it still off scale. The edit is made at that limit, with a warning that says
    by how much and how large a padded image would have to be."""
    import warnings

    from napari_ilat import edit_with_info
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(151, 128)
    crop = (slice(24, 96), slice(24, 96))  # 72 px around the mask (keypoints outside: hidden)
    pose = pair.target_pose.copy()
    pose[:, :2] -= 24
    ratio, most = pm.figure_ratio(pose, 32), 72 / 32  # ~5.9x the tiny 32 px model's training figures
    assert ratio / most > pm.FIGURE_SCALE_WARN  # still larger than any figure it saw
    with pytest.warns(UserWarning, match=rf"this 72 px image shrinks only 2.2x .* about {ratio / most:.1f}x too thin"):
        r = edit_with_info(pair.source[crop], pair.mask[crop], pose=pose, model=tiny_pose_model, seed=0)
    assert r.scale == pytest.approx(most)
    assert f"pad the image to about {int(np.ceil(ratio * 32))} px a side" in pm.figure_scale_limit_warning(
        ratio, most, 32, (72, 72)
    )
    # 1.75-2.5x left: scaled as far as it goes, within the sizes the model saw, no warning
    assert pm.figure_scale_limit_warning(2.2 * most, most, 32, (72, 72)) is None
    with warnings.catch_warnings():  # the full 128 px scene shrinks 4x: 1.6x left, within the band
        warnings.simplefilter("error")
        assert edit_with_info(pair.source, pair.mask, pose=pair.target_pose, model=tiny_pose_model, seed=0).scale == 4.0


def test_a_tiny_figure_is_enlarged_only_while_the_masks_box_holds_the_token_budget(tiny_pose_model):
    """A figure whose bones are a fraction of a pixel (a slip of the mouse, or a crowd seen from
    far) would ask "auto" for an image hundreds of times larger, and an edit that never ends. It
    is enlarged only until the mask's box holds FIGURE_ENLARGE_MAX_TOKENS tokens, with a warning
    that says what is left, and not at all when that would leave it below
    FIGURE_ENLARGE_MIN_SIZE of the training size (part of the way measured worse than none); a
    small figure within the budget's reach is enlarged to the training figures' size, without
    a warning."""
    import warnings

    from napari_ilat import edit_with_info
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(151, 128)
    image, mask = pair.source[32:96, 32:96], np.zeros((64, 64), bool)
    mask[12:52, 14:50] = True  # 40 x 36 px
    f = tiny_pose_model.config.vqgan.factor
    most = np.sqrt(40 * 36 / pm.FIGURE_ENLARGE_MAX_TOKENS) / f  # ~0.15: 64 x 64 tokens of 4 px

    def shrunk(k):  # the 128 px figure drawn k times smaller around the mask's centre
        pose = pair.target_pose.copy()
        pose[:, :2] = (pose[:, :2] - 64) * k + 32
        return pose

    unit = pm.figure_ratio(shrunk(0.01), 32) / 0.01  # (the whole figure lies inside the image)
    # 200x smaller: the budget's enlargement would leave it far below the training size
    pose = shrunk(0.005)
    ratio = pm.figure_ratio(pose, 32)
    assert ratio / most < pm.FIGURE_ENLARGE_MIN_SIZE
    with pytest.warns(UserWarning, match=rf"could enlarge the image only {1 / most:.1f}x.* own scale.* about"):
        r = edit_with_info(image, mask, pose=pose, model=tiny_pose_model, seed=0)
    assert r.scale == 1.0
    assert r.image.shape == image.shape and np.array_equal(r.image[~mask], image[~mask])
    # small enough to stay unlike the training figures, large enough to be worth enlarging
    pose = shrunk(0.35 * most / unit)
    ratio = pm.figure_ratio(pose, 32)
    assert pm.FIGURE_ENLARGE_MIN_SIZE < ratio / most < 1 / pm.FIGURE_SCALE_WARN
    with pytest.warns(UserWarning, match=rf"enlarges the image only {1 / most:.1f}x .* enlarge the crop about"):
        r = edit_with_info(image, mask, pose=pose, model=tiny_pose_model, seed=0)
    assert r.scale == pytest.approx(most, rel=0.05)  # whole tokens round the window
    assert np.array_equal(r.image[~mask], image[~mask])
    # 17x smaller: within the budget's reach, enlarged to the training size
    pose = shrunk(0.06)
    ratio = pm.figure_ratio(pose, 32)
    assert most < ratio < 1 / pm.FIGURE_SCALE_BAND
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = edit_with_info(image, mask, pose=pose, model=tiny_pose_model, seed=0)
    assert r.scale == pytest.approx(ratio, rel=0.05)
    assert np.array_equal(r.image[~mask], image[~mask])
    # a mask too large to enlarge at all (its box past 64 x 64 tokens at the image's scale)
    assert "the edit cannot enlarge the image" in pm.figure_scale_limit_warning(0.1, 1.0, 32, (600, 600))


def test_cli_refuses_a_pose_file_in_normalised_coordinates(tmp_path, tiny_pose_model_path, capsys):
    """A pose file from MediaPipe (keypoints as fractions of the image): exit status 2, the
    reason and the factors on stderr, no output file."""
    from napari_ilat.data.pose_scenes import make_edit_pair

    pair = make_edit_pair(151, 128)
    _pose_files(tmp_path, pair)
    (tmp_path / "norm.json").write_text(json.dumps({"keypoints": (pair.target_pose / [128, 128, 1]).tolist()}))
    args = ["edit", str(tmp_path / "scene.png"), "--pose", str(tmp_path / "norm.json"), "--seed", "0"]
    args += ["--mask-from-pose", str(tmp_path / "old.json"), "--model", str(tiny_pose_model_path)]
    assert main([*args, "-o", str(tmp_path / "out.png")]) == 2
    assert "normalised coordinates? Give keypoints in this image's pixels" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
