"""Synthetic pose scenes and edit pairs: determinism, splits, keypoints, exact edit masks."""

import numpy as np
import pytest

from napari_ilat.data import pose_scenes as ps
from napari_ilat.data.splits import SPLIT_SEED_RANGES, SPLITS, split_of_seed, split_seeds
from napari_ilat.engine import skeleton as sk

PAIR_SEEDS = list(range(0, 30)) + list(range(1_000_000, 1_000_020))  # 50 seeds, test + train


def test_keypoint_order_is_the_papers():
    assert sk.KEYPOINT_NAMES == (
        "nose",
        "neck",
        "r_shoulder",
        "r_elbow",
        "r_wrist",
        "l_shoulder",
        "l_elbow",
        "l_wrist",
        "r_hip",
        "r_knee",
        "r_ankle",
        "l_hip",
        "l_knee",
        "l_ankle",
        "r_eye",
        "l_eye",
        "r_ear",
        "l_ear",
    )
    assert len(sk.SKELETON) == len(sk.SKELETON_COLORS)


def test_split_seed_ranges_are_disjoint():
    ranges = [SPLIT_SEED_RANGES[s] for s in SPLITS]
    for i in range(len(ranges)):
        for j in range(i + 1, len(ranges)):
            a, b = ranges[i], ranges[j]
            assert a.stop <= b.start or b.stop <= a.start
    sets = {s: set(split_seeds(s, 1000).tolist()) for s in SPLITS}
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert not (sets["validation"] & sets["test"])
    for s in SPLITS:
        seeds = split_seeds(s, 5, offset=7)
        assert all(split_of_seed(int(x)) == s for x in seeds)
    assert split_seeds("val", 3).tolist() == split_seeds("validation", 3).tolist()
    with pytest.raises(ValueError):
        split_seeds("test", len(SPLIT_SEED_RANGES["test"]) + 1)


def test_same_seed_same_bytes():
    for seed in (3, 1_000_123):
        a, b = ps.make_edit_pair(seed), ps.make_edit_pair(seed)
        for name in ("source", "target", "source_pose", "target_pose", "mask"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
        assert a.moved_parts == b.moved_parts
    c = ps.make_edit_pair(4)
    assert c.source.tobytes() != ps.make_edit_pair(3).source.tobytes()


def test_scene_is_pair_source_and_types():
    for seed in (5, 100_001):
        scene = ps.make_scene(seed)
        pair = ps.make_edit_pair(seed)
        assert np.array_equal(scene.image, pair.source)
        assert np.array_equal(scene.pose, pair.source_pose)
        assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
        assert scene.pose.shape == (18, 3) and scene.pose.dtype == np.float32
        assert pair.mask.dtype == bool and pair.mask.shape == (128, 128)


@pytest.mark.parametrize("resolution", [128, 64, 96])
def test_visible_keypoints_lie_on_their_parts_and_outside_ones_are_invisible(resolution):
    n_vis = n_invis = 0
    n_seeds = 30 if resolution == 128 else 12
    for seed in range(n_seeds):
        scene = ps.make_scene(seed, resolution)
        pose = scene.pose
        h, w = scene.image.shape[:2]
        geo = ps.forward_kinematics(scene.figure, scene.articulation)
        # independently re-rendered footprints (coverage > 0) of every part
        _, _, _, feet = ps.render_figure(
            scene.figure, scene.articulation, np.zeros((h, w, 3), np.uint8), keep_coverage=sk.PART_NAMES
        )
        for k in range(sk.NUM_KEYPOINTS):
            x, y, v = pose[k]
            gx, gy = geo.keypoints[k]
            col, row = int(np.floor(gx + 0.5)), int(np.floor(gy + 0.5))
            if not (0 <= row < h and 0 <= col < w):
                assert v == 0, (seed, k)
            if v == 0:
                assert tuple(pose[k]) == (-1.0, -1.0, 0.0)
                n_invis += 1
                continue
            n_vis += 1
            assert (x, y) == (np.float32(gx), np.float32(gy))
            assert 0 <= row < h and 0 <= col < w
            # the footprint of one of the keypoint's own parts covers it ...
            assert any(feet[part][row, col] for part in sk.KEYPOINT_PARTS[k]), (seed, sk.KEYPOINT_NAMES[k])
            # ... and it is the front-most part there (not hidden behind another part)
            assert int(scene.labels[row, col]) in sk.KEYPOINT_PART_IDS[k]
    assert n_vis > n_seeds * 12 and n_invis > 0


def test_edit_pair_differences_are_inside_the_mask():
    n_changed = 0
    for seed in PAIR_SEEDS:
        p = ps.make_edit_pair(seed)
        diff = np.any(p.source != p.target, axis=-1)
        assert not np.any(diff & ~p.mask), f"seed {seed}: pixels changed outside the edit mask"
        assert diff.any(), f"seed {seed}: edit changed nothing"
        assert 1 <= len(p.moved_limbs) <= 3
        # the mask is not the whole image and contains every moved part's footprint
        assert 0 < p.mask.mean() < 0.6
        n_changed += int(diff.sum())
        # keypoints of joints that did not move keep their coordinates
        moved_kp = _moved_keypoints(p.moved_parts)
        for k in range(sk.NUM_KEYPOINTS):
            if k in moved_kp:
                continue
            if p.source_pose[k, 2] and p.target_pose[k, 2]:
                assert np.array_equal(p.source_pose[k], p.target_pose[k]), (seed, k)
    assert n_changed > 0


def _moved_keypoints(parts):
    """Keypoints whose position depends on a moved part (distal joints and the face)."""
    ends = {
        "r_upper_arm": (sk.R_ELBOW, sk.R_WRIST),
        "r_forearm": (sk.R_WRIST,),
        "l_upper_arm": (sk.L_ELBOW, sk.L_WRIST),
        "l_forearm": (sk.L_WRIST,),
        "r_thigh": (sk.R_KNEE, sk.R_ANKLE),
        "r_shin": (sk.R_ANKLE,),
        "l_thigh": (sk.L_KNEE, sk.L_ANKLE),
        "l_shin": (sk.L_ANKLE,),
        "head": (sk.NOSE, sk.R_EYE, sk.L_EYE, sk.R_EAR, sk.L_EAR),
    }
    out = set()
    for p in parts:
        out.update(ends.get(p, ()))
    return out


def test_edit_mask_exact_at_other_resolutions():
    for res in (64, 96):
        for seed in range(10):
            p = ps.make_edit_pair(seed, res)
            assert p.source.shape == (res, res, 3)
            diff = np.any(p.source != p.target, axis=-1)
            assert not np.any(diff & ~p.mask)
