"""Layer <-> array conversions used by the widget and the console (no viewer, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels, Points, Shapes

from napari_ilat.engine.skeleton import KEYPOINT_NAMES
from napari_ilat.plugin import layers as _layers
from napari_ilat.plugin.layers import InputError

pytestmark = pytest.mark.gui  # napari layers (no display needed)


def test_points_to_pose_through_world_coordinates():
    image = Image(np.zeros((100, 80)), scale=(0.5, 0.5), translate=(10, 20))
    xy = np.stack([np.arange(18) * 4.0, np.arange(18) * 2.0 + 1], 1)  # image px (x=col, y=row)
    world = np.stack([xy[:, 1] * 0.5 + 10, xy[:, 0] * 0.5 + 20], 1)  # napari (row, col) world
    points = Points(world / 2.0, scale=(2, 2))  # another scale: same world positions
    pose = _layers.points_to_pose(points, image)
    np.testing.assert_allclose(pose[:, :2], xy, atol=1e-9)
    assert (pose[:, 2] == 1).all()


def test_named_points_any_order_missing_invisible():
    names = ["l_wrist", "nose", "neck"]
    pts = Points(np.array([[5.0, 7.0], [1.0, 2.0], [3.0, 4.0]]), features={"name": names})
    pose = _layers.points_to_pose(pts)
    np.testing.assert_allclose(pose[KEYPOINT_NAMES.index("l_wrist")], (7, 5, 1))
    np.testing.assert_allclose(pose[0], (2, 1, 1))
    assert (pose[KEYPOINT_NAMES.index("r_knee")] == (-1, -1, 0)).all()


@pytest.mark.parametrize(
    "data, features, message",
    [
        (np.zeros((5, 2)), None, "5 points"),
        (np.zeros((2, 2)), {"name": ["nose", "nose"]}, "twice"),
        (np.zeros((2, 2)), {"name": ["nose", "tail"]}, "'tail'"),
    ],
)
def test_bad_pose_layers(data, features, message):
    with pytest.raises(InputError, match=message):
        _layers.points_to_pose(Points(data, features=features))


def test_shapes_to_sketch_lines_and_outlines():
    shapes = Shapes([np.array([[10.0, 5.0], [10.0, 35.0]])], shape_type="line")
    shapes.add_rectangles(np.array([[20.0, 20.0], [30.0, 30.0]]))
    sk = _layers.shapes_to_sketch(shapes, (40, 40), width=3)
    assert sk.shape == (40, 40) and sk.max() == 1.0
    assert sk[10, 5:36].min() == 1.0 and sk[0, 0] == 0
    assert sk[20, 25] == 1.0 and sk[25, 25] == 0  # outline, not filled


def test_moved_joint_mask_covers_the_edit_pair():
    from napari_ilat.plugin.sample_data import pose_sample_pair

    pair = pose_sample_pair()
    auto = _layers.moved_joint_mask(pair.source_pose, pair.target_pose, pair.mask.shape)
    assert (auto & pair.mask).sum() / pair.mask.sum() > 0.95
    assert auto.mean() < 2.5 * pair.mask.mean()
    assert not _layers.moved_joint_mask(pair.source_pose, pair.source_pose, pair.mask.shape).any()


def test_gather_inputs_checks():
    img = Image(np.zeros((32, 32, 3), np.uint8))
    mask = np.zeros((32, 32), np.uint8)
    with pytest.raises(InputError, match="empty"):
        _layers.gather_inputs(img, Labels(mask))
    with pytest.raises(InputError, match="no mask"):
        _layers.gather_inputs(img, None)
    mask[4:8, 4:8] = 2
    got = _layers.gather_inputs(img, Labels(mask))
    assert got.mask.dtype == bool and got.mask.sum() == 16 and got.image.shape == (32, 32, 3)


def test_result_placement_with_candidates_and_slices():
    src = Image(np.zeros((5, 20, 30)), scale=(3, 2, 2), translate=(1, 2, 3))
    inputs = _layers.EditInputs(image=np.zeros((20, 30)), mask=np.ones((20, 30), bool), index=(4,))
    data, kw = _layers.result_layer_data(np.zeros((2, 20, 30)), src, inputs, "r", candidates=True)
    assert data.shape == (2, 1, 20, 30)
    np.testing.assert_allclose(kw["scale"], (1, 3, 2, 2))
    np.testing.assert_allclose(kw["translate"], (0, 13, 2, 3))
    layer = Image(data, **kw)
    np.testing.assert_allclose(layer.data_to_world((0, 0, 0, 0))[1:], src.data_to_world((4, 0, 0)))


def test_pose_file_layers_are_sized_to_the_figure(tmp_path):
    """A pose file of a 2000 px tall person gets points and bones in proportion (the sample's
    3 px points would be specks); a sample-sized figure keeps the sample's sizes."""
    import json

    from napari_ilat.plugin.pose_files import read_pose_layers
    from napari_ilat.plugin.sample_data import pose_sample_pair

    pose = pose_sample_pair().source_pose
    sizes = []
    for factor in (1, 20):
        big = pose.copy()
        big[big[:, 2] > 0, :2] *= factor
        path = tmp_path / f"p{factor}.json"
        path.write_text(json.dumps(big.tolist()))
        (lines, skel_kw, _), (points, pts_kw, _) = read_pose_layers(str(path))
        np.testing.assert_allclose(points[:, ::-1], big[big[:, 2] > 0, :2])
        sizes.append((pts_kw["size"], skel_kw["edge_width"]))
    assert sizes[0] == (3.0, 1.2)
    assert sizes[1][0] > 40 and sizes[1][1] > 15
