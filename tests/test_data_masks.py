"""Random mask generators hit their target masked-area rate within RATE_TOLERANCE."""

import numpy as np
import pytest

from napari_ilat.data.masks import MASK_KINDS, RATE_TOLERANCE, box_mask, mask_from_arrival, random_mask


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mask_rate_within_tolerance(kind):
    assert RATE_TOLERANCE <= 0.01
    for i, shape in enumerate([(128, 128), (64, 64), (80, 144)]):
        for j, rate in enumerate([0.01, 0.066, 0.15, 0.3, 0.5, 0.8]):
            rng = np.random.default_rng(100 * i + j)
            m = random_mask(rng, shape, kind, rate)
            assert m.shape == shape and m.dtype == bool
            assert abs(m.mean() - rate) <= RATE_TOLERANCE, (kind, shape, rate, m.mean())


def test_masks_are_deterministic_and_varied():
    for kind in MASK_KINDS:
        a = random_mask(np.random.default_rng(7), (96, 96), kind, 0.25)
        b = random_mask(np.random.default_rng(7), (96, 96), kind, 0.25)
        c = random_mask(np.random.default_rng(8), (96, 96), kind, 0.25)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    kinds = {random_mask(np.random.default_rng(s), (32, 32), None, 0.2).sum() > 0 for s in range(3)}
    assert kinds == {True}


def test_single_box_is_a_rectangle():
    for s in range(20):
        rng = np.random.default_rng(s)
        rate = rng.uniform(0.02, 0.7)
        m = box_mask(rng, (64, 96), rate, n_boxes=1)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box = np.zeros_like(m)
        box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        assert np.array_equal(m, box)
        assert abs(m.mean() - rate) <= RATE_TOLERANCE


def test_mask_from_arrival_edge_cases():
    arr = np.arange(100, dtype=float).reshape(10, 10)
    assert mask_from_arrival(arr, 0).sum() == 0
    assert mask_from_arrival(arr, 1).all()
    assert mask_from_arrival(arr, 0.37).sum() == 37
    ties = np.zeros((10, 10))
    ties[5:] = 1
    assert mask_from_arrival(ties, 0.4).sum() == 50  # closest achievable to 40
