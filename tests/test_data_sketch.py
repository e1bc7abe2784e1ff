"""XDoG sketches (formula, valid-mask independence), stroke rasterisation, composition."""

import numpy as np
from scipy.ndimage import gaussian_filter

from napari_ilat.engine.sketch import compose_sketch, rasterize_strokes, thin_strokes, to_grey255, xdog


def _expected_edges(grey):
    g = np.asarray(grey, dtype=np.float64)
    d = gaussian_filter(g, 1.5) - 0.97 * gaussian_filter(g, 1.5 * 2.5)
    e = np.clip(1.0 + np.tanh(200.0 * (d - 0.1)), 0.0, 1.0)
    return 1.0 - e


def test_xdog_matches_the_formula_on_a_step():
    grey = np.full((12, 64), 50, np.uint8)
    grey[:, 32:] = 200
    out = xdog(grey)
    assert out.shape == (12, 64) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, _expected_edges(grey), atol=1e-6)
    # by hand: the dark side of the step is ink (G_sigma < 0.97 G_k.sigma there); the bright
    # side and the flat dark area far from the step (D = 0.03 * 50 = 1.5 > 0.1) are not
    assert np.all(out[:, 31] > 0.999)
    assert np.all(out[:, 32:] < 1e-6)
    assert np.all(out[:, :8] < 1e-6)
    # nearly black flat areas (grey < 0.1 / 0.03) are ink, per the formula
    assert np.all(xdog(np.zeros((8, 8), np.uint8)) > 0.999)
    assert np.all(xdog(np.full((8, 8), 10, np.uint8)) < 1e-6)


def test_xdog_colour_and_float_inputs_use_grey_0_255():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(to_grey255(rgb), grey, atol=1e-9)
    out = xdog(rgb)
    assert out.shape == (20, 24)
    np.testing.assert_allclose(out, _expected_edges(grey), atol=1e-6)
    np.testing.assert_allclose(xdog(rgb.astype(np.float32) / 255), out, atol=1e-4)


def test_xdog_valid_pixels_ignore_invalid_ones_bit_for_bit():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8).astype(np.float64) / 255
    valid = np.ones((48, 40), bool)
    valid[10:30, 5:22] = False
    valid[40:, 35:] = False
    a = xdog(img, valid=valid)
    other = img.copy()
    other[~valid] = rng.random((int((~valid).sum()), 3))
    b = xdog(other, valid=valid)
    nan = img.copy()
    nan[~valid] = np.nan
    c = xdog(nan, valid=valid)
    assert a.tobytes() == b.tobytes() == c.tobytes()
    assert np.all(a[~valid] == 0) and np.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1
    # all-valid is the plain XDoG
    assert xdog(img, valid=np.ones((48, 40), bool)).tobytes() == xdog(img).tobytes()


def test_rasterize_strokes():
    out = rasterize_strokes([np.array([[10.0, 2.0], [10.0, 28.0]]), np.array([[25.0, 15.0]])], (32, 32), width=4)
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert out.min() == 0 and out.max() == 1
    # coverage = clip(width/2 + 0.5 - distance, 0, 1): 1 at distance <= 1.5, 0.5 at 2, 0 at 2.5+
    assert np.all(out[9:12, 2:29] == 1)
    assert np.all(out[8, 2:29] == 0.5) and np.all(out[12, 2:29] == 0.5)
    assert np.all(out[7, :] == 0) and np.all(out[13, :] == 0) and out[10, 31] == 0
    assert out[25, 15] == 1 and out[25, 17] == 0.5 and out[25, 18] == 0  # the dot
    per_stroke = rasterize_strokes([np.array([[5.0, 5.0]]), np.array([[20.0, 20.0]])], (32, 32), width=[2, 6])
    assert per_stroke[5, 6] == 0.5 and per_stroke[5, 7] == 0 and per_stroke[20, 23] == 0.5


def test_compose_sketch_uses_strokes_inside_and_never_the_masked_pixels():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[12:28, 10:30] = True
    strokes = rasterize_strokes([np.array([[14.0, 12.0], [26.0, 28.0]])], (40, 40), width=2)
    s1 = compose_sketch(img, mask, strokes)
    img2 = img.copy()
    img2[mask] = 255 - img2[mask]
    s2 = compose_sketch(img2, mask, strokes)
    assert s1.tobytes() == s2.tobytes()
    assert np.array_equal(s1[mask], strokes[mask])
    assert np.array_equal(s1[~mask], xdog(img, valid=~mask)[~mask])
    assert s1.dtype == np.float32 and s1.min() >= 0 and s1.max() <= 1


def test_thin_strokes_are_the_inks_skeleton_inside_the_mask_without_short_pieces():
    edges = np.zeros((40, 40), np.float32)
    edges[10:15, 5:35] = 1  # a 5 px thick bar, 30 px long
    edges[30:33, 20:23] = 1  # a blob whose skeleton is a few pixels
    edges[20:25, 5:35] = 0.4  # below the ink threshold
    mask = np.zeros((40, 40), bool)
    mask[:, :30] = True
    one = thin_strokes(edges, mask, drop_up_to=4, width=1)
    assert one.dtype == np.float32 and set(np.unique(one)) <= {0.0, 1.0}
    assert not one[:, 30:].any() and not one[20:25].any()  # outside the mask / not ink: nothing
    assert not one[28:35].any()  # the blob's short skeleton is dropped
    rows = one[8:17, 8:26].sum(axis=0)
    assert np.all(rows == 1)  # the bar is one line, one pixel thick
    kept = thin_strokes(edges, mask, drop_up_to=0, width=1)
    assert kept[28:35].any()  # nothing dropped: the blob's skeleton stays
    two = thin_strokes(edges, mask, drop_up_to=4, width=2)
    assert np.all(two[8:17, 8:26].sum(axis=0) == 2) and not two[:, 31:].any()
