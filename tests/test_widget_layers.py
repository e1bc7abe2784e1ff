"""Layer <-> array conversions used by the widget and the console (no viewer, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels, Points, Shapes

from napari_ilat.engine.skeleton import KEYPOINT_NAMES
from napari_ilat.plugin import layers as _layers
from napari_ilat.plugin import results as _results
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


def test_nd_shapes_and_points_count_on_their_own_slice_only():
    """napari draws an nD layer's shapes and points on the slice they lie on; the sketch and
    the pose of an edit are those of the slice shown, not every slice's (once, strokes drawn
    on slice 3 steered the edit of slice 1)."""
    image = Image(np.zeros((5, 40, 40)))
    strokes = Shapes(
        [np.array([[1.0, 10.0, 5.0], [1.0, 10.0, 35.0]]), np.array([[3.0, 30.0, 5.0], [3.0, 30.0, 35.0]])],
        shape_type="line",
    )
    at1 = _layers.shapes_to_sketch(strokes, (40, 40), 3, image, np.array([1.0, 0, 0]))
    assert at1[10, 5:36].min() == 1.0 and not at1[25:].any()
    at3 = _layers.shapes_to_sketch(strokes, (40, 40), 3, image, np.array([3.0, 0, 0]))
    assert at3[30, 5:36].min() == 1.0 and not at3[:25].any()
    assert not _layers.shapes_to_sketch(strokes, (40, 40), 3, image, np.array([2.0, 0, 0])).any()

    xy = np.stack([np.arange(18.0), np.arange(18.0) + 1], 1)  # (x, y) per keypoint
    rows = [np.c_[np.full(18, z), xy[:, ::-1] + z] for z in (0.0, 2.0)]  # two poses, slices 0 and 2
    points = Points(np.vstack(rows))
    pose = _layers.points_to_pose(points, image, np.array([2.0, 0, 0]))
    np.testing.assert_allclose(pose[:, :2], xy + 2)
    with pytest.raises(InputError, match="0 points on this slice"):
        _layers.points_to_pose(points, image, np.array([1.0, 0, 0]))


def test_shapes_mask_filled_stroked_and_placed():
    """A Shapes layer as the mask: closed shapes filled exactly as napari's own *Convert to
    labels* fills them, lines and paths at the edge width napari draws, in the image's
    pixels (through world coordinates)."""
    plain = Image(np.zeros((64, 64)))
    closed = Shapes([np.array([[10.0, 20.0], [10.0, 40.0], [30.0, 40.0], [30.0, 20.0]])], shape_type="rectangle")
    closed.add_polygons([np.array([[40.0, 5.0], [60.0, 10.0], [45.0, 30.0]])])
    mask = _layers.shapes_to_mask(closed, (64, 64), plain)
    np.testing.assert_array_equal(mask, closed.to_labels((64, 64)) > 0)
    # the same shapes over an image at scale 2, translated: half the pixels, shifted
    coarse = Image(np.zeros((64, 64)), scale=(2, 2), translate=(-4, 0))
    rows, cols = np.nonzero(_layers.shapes_to_mask(Shapes([closed.data[0]]), (64, 64), coarse))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 17, 10, 20)
    path = Shapes([np.array([[5.0, 5.0], [5.0, 60.0]])], shape_type="path", edge_width=6)
    assert np.unique(np.nonzero(_layers.shapes_to_mask(path, (64, 64), plain))[0]).tolist() == list(range(2, 9))
    assert np.unique(np.nonzero(_layers.shapes_to_mask(path, (64, 64), coarse))[0]).tolist() == [3, 4, 5, 6]


def test_gather_inputs_with_a_shapes_mask():
    img = Image(np.zeros((32, 32, 3), np.uint8))
    box = Shapes([np.array([[4.0, 4.0], [12.0, 12.0]])], shape_type="rectangle")
    got = _layers.gather_inputs(img, box)
    np.testing.assert_array_equal(got.mask, box.to_labels((32, 32)) > 0)
    with pytest.raises(InputError, match="both the mask and the sketch"):
        _layers.gather_inputs(img, box, sketch=box)
    with pytest.raises(InputError, match="covers no pixel"):
        _layers.gather_inputs(img, Shapes([np.array([[40.0, 40.0], [50.0, 50.0]])], shape_type="rectangle"))
    with pytest.raises(InputError, match="not a Labels or Shapes layer"):
        _layers.gather_inputs(img, Points(np.zeros((1, 2))))


def test_every_slice_with_a_shapes_mask():
    """Every slice: a 2D Shapes layer masks every slice alike; an nD one gives each slice the
    shapes drawn on it (slices with none are copied by edit_stack)."""
    stack = Image(np.zeros((4, 32, 32), np.uint8))
    flat = Shapes([np.array([[4.0, 4.0], [12.0, 12.0]])], shape_type="rectangle")
    got = _layers.gather_stack_inputs(stack, flat)
    np.testing.assert_array_equal(got.mask, flat.to_labels((32, 32)) > 0)

    def box(*lead, r0, c0, r1, c1):  # an nD rectangle: its four corners
        return np.array([[*lead, r, c] for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0))], float)

    per_slice = Shapes([box(1, r0=4, c0=4, r1=12, c1=12), box(3, r0=20, c0=4, r1=30, c1=12)], shape_type="rectangle")
    got = _layers.gather_stack_inputs(stack, per_slice)
    assert got.mask.shape == (4, 32, 32)
    assert [int(m.sum()) for m in got.mask] == [0, 81, 0, 99]
    assert got.mask[3, 20:31, 4:13].all()
    with pytest.raises(InputError, match="4D and the image"):
        _layers.gather_stack_inputs(stack, Shapes([box(0, 1, r0=4, c0=4, r1=12, c1=12)], shape_type="rectangle"))


def test_a_labels_mask_on_other_pixels_is_placed_as_napari_draws_it():
    """A Labels mask of another size, scale or position than the image (a segmentation made
    at a coarser level, a layer of the whole scene) counts where napari draws it: each image
    pixel takes the mask pixel its centre falls in; pixels it does not reach are not masked."""
    img = Image(np.zeros((64, 64, 3), np.uint8))
    coarse = np.zeros((32, 32), np.uint8)
    coarse[10:15, 4:6] = 1
    got = _layers.gather_inputs(img, Labels(coarse, scale=(2, 2)))
    # mask pixel j is drawn over [2j - 1, 2j + 1): image rows 19..28, columns 7..10
    expect = np.zeros((64, 64), bool)
    expect[19:29, 7:11] = True
    np.testing.assert_array_equal(got.mask, expect)
    assert any("mapped onto the image's pixels" in n for n in got.notes)
    # the image at scale 2 too: the same pixels again, no note
    same = _layers.gather_inputs(Image(np.zeros((32, 32, 3), np.uint8), scale=(2, 2)), Labels(coarse, scale=(2, 2)))
    np.testing.assert_array_equal(same.mask, coarse > 0)
    assert not any("mapped" in n for n in same.notes)
    # a smaller layer moved to the image's lower right: only where it lies
    patch = np.ones((8, 8), np.uint8)
    got = _layers.gather_inputs(img, Labels(patch, translate=(60, 50)))
    assert got.mask.sum() == 4 * 8 and got.mask[60:64, 50:58].all()
    with pytest.raises(InputError, match="covers no pixel"):
        _layers.gather_inputs(img, Labels(patch, translate=(100, 0)))
    # its edge pixels too: a 4x4 layer at scale 2 is drawn over 8x8 image pixels
    got = _layers.gather_inputs(img, Labels(np.ones((4, 4), np.uint8), scale=(2, 2), translate=(10, 10)))
    assert got.mask.sum() == 64 and got.mask[9:17, 9:17].all()
    # a Labels layer turned a quarter turn: its pixel (r, c) drawn at row 63 - c, column r
    turned = np.zeros((64, 64), np.uint8)
    turned[2:4, 10:12] = 1
    got = _layers.gather_inputs(img, Labels(turned, rotate=90, translate=(63, 0)))
    assert got.mask.sum() == 4 and got.mask[52:54, 2:4].all()
    # every slice: a 2D layer of other pixels masks every slice alike, mapped the same way
    stack = _layers.gather_stack_inputs(Image(np.zeros((3, 64, 64), np.uint8)), Labels(coarse, scale=(2, 2)))
    np.testing.assert_array_equal(stack.mask, expect)
    # one label of it, on the layer's own values
    coarse[20:22, 20:22] = 7
    got = _layers.gather_inputs(img, Labels(coarse, scale=(2, 2)), label=7)
    assert got.mask.sum() == 16 and got.mask[39:43, 39:43].all()
    with pytest.raises(InputError, match="label 3"):
        _layers.gather_inputs(img, Labels(coarse, scale=(2, 2)), label=3)
    # a Labels stack must lie on the image's own pixels (each slice its own mask)
    with pytest.raises(InputError, match="image's size"):
        _layers.gather_stack_inputs(
            Image(np.zeros((3, 32, 32), np.uint8)), Labels(np.ones((3, 32, 32), np.uint8), scale=(1, 2, 2))
        )


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
    tiny = Image(np.zeros((16, 16, 3), np.uint8))  # napari's guess: 16 slices of 16x3, not RGB
    with pytest.raises(InputError, match=r"as 16 slices of 16x3 pixels, not in colour.*rgb=True"):
        _layers.gather_inputs(tiny, Labels(np.ones((16, 16, 3), np.uint8)))
    with pytest.raises(InputError, match="not in colour"):
        _layers.gather_stack_inputs(tiny, Labels(np.ones((16, 16, 3), np.uint8)))
    got = _layers.gather_inputs(Image(np.zeros((16, 16, 3), np.uint8), rgb=True), Labels(mask[:16, :16]))
    assert got.image.shape == (16, 16, 3)


def test_result_placement_with_candidates_and_slices():
    src = Image(np.zeros((5, 20, 30)), scale=(3, 2, 2), translate=(1, 2, 3))
    inputs = _layers.EditInputs(image=np.zeros((20, 30)), mask=np.ones((20, 30), bool), index=(4,))
    data, kw = _results.result_layer_data(np.zeros((2, 20, 30)), src, inputs, "r", candidates=True)
    assert data.shape == (2, 1, 20, 30)
    np.testing.assert_allclose(kw["scale"], (1, 3, 2, 2))
    np.testing.assert_allclose(kw["translate"], (0, 13, 2, 3))
    layer = Image(data, **kw)
    np.testing.assert_allclose(layer.data_to_world((0, 0, 0, 0))[1:], src.data_to_world((4, 0, 0)))


def test_pose_file_layers_are_sized_to_the_figure(tmp_path):
    """A pose file of a 2000 px tall person gets points and bones in proportion (the sample's
    3 px points would be specks); a sample-sized figure keeps the sample's sizes."""
    import json

    from napari_ilat.data.pose_scenes import make_edit_pair
    from napari_ilat.plugin.pose_files import read_pose_layers

    pose = make_edit_pair(5, 128).source_pose  # a ~95 px figure (the pose sample until the 21st session)
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


def test_a_large_image_is_read_and_edited_around_the_mask_only(tiny_model, monkeypatch, tmp_path):
    """A lazy (dask) or multiscale image may be far larger than memory: only the chunks around
    the mask are read (REGION_MARGIN around its bounding box), the mask, sketch and pose
    come in that region's pixels, and the result layer holds the pixels the edit changed,
    placed exactly over them: the same pixels as the edit of the whole image."""
    import dask.array as da

    from napari_ilat import edit, edit_with_info

    monkeypatch.setattr(_layers, "REGION_MARGIN", 48)  # > the tiny model's 32 px window and context
    whole = (np.random.default_rng(0).random((1024, 768, 3)) * 255).astype(np.uint8)
    read = set()

    def record(block, block_info=None):
        read.add(tuple(block_info[None]["chunk-location"][:2]))
        return block

    lazy = da.from_array(whole, chunks=(128, 128, 3)).map_blocks(record, dtype=np.uint8)
    image = Image(lazy, rgb=True, scale=(0.5, 0.5), translate=(100, 50))
    corners = np.array([[600.0, 300.0], [600.0, 340.0], [630.0, 340.0], [630.0, 300.0]])  # image pixels
    box = Shapes([corners * 0.5 + (100, 50)], shape_type="rectangle")  # drawn in world coordinates
    strokes = Shapes([np.array([[605.0, 305.0], [625.0, 335.0]]) * 0.5 + (100, 50)], shape_type="line")
    xy = np.c_[np.linspace(300, 340, 18), np.linspace(600, 630, 18)]  # (x, y) image pixels
    points = Points(xy[:, ::-1] * 0.5 + (100, 50))
    read.clear()
    got = _layers.gather_inputs(image, box, pose=points, sketch=strokes)
    assert not read  # nothing read yet: the widget reads in its worker thread, not napari's
    got.read()

    # the rectangle covers rows 600..630, columns 300..340 (its box: one pixel more each side)
    assert got.origin == (599 - 48, 299 - 48) and got.image.shape == (632 + 48 - 551, 342 + 48 - 251, 3)
    assert read == {(r, c) for r in (4, 5) for c in (1, 2, 3)}  # 128-px chunks: rows 551..679, cols 251..389
    assert any("large image" in note for note in got.notes)
    (r0, c0), (r1, c1) = got.origin, (680, 390)
    full_mask = _layers.shapes_to_mask(box, whole.shape[:2], image)
    np.testing.assert_array_equal(got.mask, full_mask[r0:r1, c0:c1])
    full_sketch = _layers.shapes_to_sketch(strokes, whole.shape[:2], 3.0, image)
    np.testing.assert_array_equal(got.sketch, full_sketch[r0:r1, c0:c1])
    np.testing.assert_allclose(got.pose[:, :2], xy - (c0, r0))

    result = edit_with_info(got.image, got.mask, model=tiny_model, seed=4)
    data, kwargs = _results.add_edit_result(None, image, got, result, {}, mask_name="box", add=False)
    r, c, h, w = kwargs["metadata"]["napari_ilat"]["region"]
    assert (r, c, h, w) == (600, 300) + data.shape[:2] and kwargs["name"] == "lazy [iLAT seed 4, region]"
    np.testing.assert_array_equal(data, edit(whole, full_mask, model=tiny_model, seed=4)[r : r + h, c : c + w])
    layer = Image(data, **{k: v for k, v in kwargs.items() if k not in ("name", "metadata")})
    np.testing.assert_allclose(layer.data_to_world((0, 0)), image.data_to_world((r, c)))
    # a coarse segmentation as the mask (one label pixel per 8x8 image pixels, as napari draws
    # it): the region around its pixels only
    coarse = np.zeros((128, 96), np.uint8)
    coarse[75:79, 38:42] = 1  # label pixel j drawn over image rows 8j - 4 .. 8j + 3
    read.clear()
    got = _layers.gather_inputs(image, Labels(coarse, scale=(4, 4), translate=(100, 50))).read()
    assert read and read <= {(r, c) for r in (4, 5) for c in (1, 2, 3)}
    full_mask = np.zeros(whole.shape[:2], bool)
    full_mask[596:628, 300:332] = True
    (r0, c0), (h, w) = got.origin, got.mask.shape
    np.testing.assert_array_equal(got.mask, full_mask[r0 : r0 + h, c0 : c0 + w])
    assert not _layers.reads_by_region(Image(whole, rgb=True))  # in memory: the whole slice, as before
    np.save(tmp_path / "big.npy", whole)
    assert _layers.reads_by_region(Image(np.load(tmp_path / "big.npy", mmap_mode="r"), rgb=True))  # on disk


def test_every_slice_of_a_large_stack_reads_the_region_around_the_mask(tiny_model, monkeypatch):
    """Every slice of a lazy stack (a long time-lapse): the same region of each slice is read
    and edited, and the result is a stack of that region, equal to editing every whole slice."""
    import dask.array as da

    from napari_ilat.engine.stack import edit_stack

    monkeypatch.setattr(_layers, "REGION_MARGIN", 40)
    whole = (np.random.default_rng(1).random((3, 512, 384)) * 65535).astype(np.uint16)
    read = set()

    def record(block, block_info=None):
        read.add(tuple(block_info[None]["chunk-location"]))
        return block

    lazy = da.from_array(whole, chunks=(1, 128, 128)).map_blocks(record, dtype=np.uint16)
    image = Image(lazy, scale=(1, 2, 2))
    mask = np.zeros((512, 384), np.uint8)
    mask[300:330, 200:240] = 1
    read.clear()
    got = _layers.gather_stack_inputs(image, Labels(mask, scale=(2, 2)))
    assert not read  # (read in the widget's worker)
    got.read()
    assert got.origin == (260, 160) and got.image.shape == (3, 110, 120)
    assert read == {(t, 2, c) for t in range(3) for c in (1, 2)}  # 128-px chunks: rows 260..369, cols 160..279

    # uint16: the value range is the region's (not the unread whole's), so compare with that
    result = edit_stack(got.image, got.mask, model=tiny_model, seed=2)
    data, kwargs = _results.add_edit_result(None, image, got, result, {}, mask_name="m", add=False)
    r, c, h, w = kwargs["metadata"]["napari_ilat"]["region"]
    assert (r, c) == (300, 200) and data.shape == (3, h, w) and kwargs["metadata"]["napari_ilat"]["slice"] == "every"
    np.testing.assert_array_equal(data, result.image[:, r - 260 : r - 260 + h, c - 160 : c - 160 + w])
    layer = Image(data, **{k: v for k, v in kwargs.items() if k not in ("name", "metadata")})
    np.testing.assert_allclose(layer.data_to_world((2, 0, 0)), image.data_to_world((2, r, c)))


def test_a_region_too_big_for_memory_is_refused_before_it_is_read(monkeypatch):
    """A shape drawn over most of a slide would read all of it: refused before any read."""
    import dask.array as da

    import napari_ilat.engine.editing as editing

    read = []
    lazy = da.zeros((4096, 4096), dtype=np.uint16, chunks=512).map_blocks(lambda b: read.append(1) or b)
    image = Image(lazy, contrast_limits=(0, 1))
    monkeypatch.setattr(editing, "free_memory", lambda *a, **k: 2**20)  # 1 MiB free
    read.clear()
    with pytest.raises(InputError, match="the region of 'lazy' around the mask .* would need"):
        _layers.gather_inputs(image, Shapes([np.array([[0.0, 0.0], [4000.0, 4000.0]])], shape_type="rectangle"))
    assert not read
