"""engine.stack.edit_stack: every 2D plane of a stack, each exactly the single edit of that
plane with seed + j."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_ilat import EditCancelled, edit
from napari_ilat.engine.stack import edit_stack


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return (rng.random((2, 3, 40, 48, 3)) * 255).astype(np.uint8)  # 2 x 3 planes, RGB


@pytest.fixture
def mask():
    m = np.zeros((40, 48), bool)
    m[10:22, 12:30] = True
    return m


def test_each_plane_is_the_single_edit_with_its_seed(frames, mask, tiny_model):
    calls, before = [], frames.copy()
    got = edit_stack(frames, mask, rgb=True, model=tiny_model, seed=7, progress=lambda d, t: calls.append((d, t)))
    assert got.image.shape == frames.shape and got.image.dtype == frames.dtype
    assert got.seeds == (7, 8, 9, 10, 11, 12) and got.edited == 6
    for j, index in enumerate(np.ndindex(2, 3)):
        np.testing.assert_array_equal(got.image[index], edit(frames[index], mask, model=tiny_model, seed=7 + j))
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] > 0  # tokens over the whole stack
    assert calls[0][1] == calls[-1][1]  # one shared mask: the total is known from the start
    np.testing.assert_array_equal(frames, before)  # the input is not modified


def test_a_mask_per_plane_and_planes_with_none_are_copied(frames, mask, tiny_model):
    masks = np.zeros((2, 3, 40, 48), np.uint8)
    masks[0, 1][mask] = 3  # a Labels stack: any label
    masks[1, 2, 5:9, 5:9] = 1
    got = edit_stack(frames, masks, rgb=True, model=tiny_model, seed=0)
    assert got.seeds == (None, 1, None, None, None, 5) and got.edited == 2
    for index in [(0, 0), (0, 2), (1, 0), (1, 1)]:
        np.testing.assert_array_equal(got.image[index], frames[index])
    np.testing.assert_array_equal(got.image[1, 2], edit(frames[1, 2], masks[1, 2], model=tiny_model, seed=5))


def test_greyscale_stack_and_seed_drawn_once(mask, tiny_model):
    stack = np.random.default_rng(1).random((3, 40, 48)).astype(np.float32)
    got = edit_stack(stack, mask, model=tiny_model)
    assert got.seeds == tuple(got.seed + j for j in range(3))
    np.testing.assert_array_equal(got.image[2], edit(stack[2], mask, model=tiny_model, seed=got.seed + 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mask=np.ones((40, 40), bool)), r"mask shape \(40, 40\) fits neither one plane \(40, 48\)"),
        (dict(mask=np.zeros((40, 48), bool)), "mask is empty"),
        (dict(mask=np.zeros((2, 3, 40, 48), bool)), "mask is empty on every plane"),
        (dict(samples=2), "one edit per plane"),
        (dict(seed=2**63 - 3), r"seed must be in \[0, 2\*\*63 - 6\] \(plane j uses seed \+ j"),
        (dict(seed=1.0), "seed must be an integer"),
        (dict(temperature=0), "temperature must be"),
    ],
)
def test_bad_input_is_a_clear_error(frames, mask, tiny_model, kwargs, message):
    args = dict(mask=mask, rgb=True, model=tiny_model, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        edit_stack(frames, args.pop("mask"), **args)


def test_a_single_image_is_not_a_stack(frames, mask, tiny_model):
    with pytest.raises(ValueError, match="needs leading axes"):
        edit_stack(frames[0, 0], mask, rgb=True, model=tiny_model)


def test_a_bad_plane_is_named(frames, mask, tiny_model):
    stack = frames.astype(np.float32) / 255
    stack[1, 2, 0, 0] = np.nan  # outside the mask
    with pytest.raises(ValueError, match="^plane 1, 2: .*NaN"):
        edit_stack(stack, mask, rgb=True, model=tiny_model, seed=0)


def test_cancel_stops_the_whole_stack(frames, mask, tiny_model):
    cancel, seen = threading.Event(), []

    def progress(done, total):
        seen.append((done, total))
        if done == total // 6 + 2:  # two tokens into the second of six planes
            cancel.set()

    with pytest.raises(EditCancelled):
        edit_stack(frames, mask, rgb=True, model=tiny_model, seed=0, progress=progress, cancel=cancel)
    done, total = seen[-1]
    assert done <= total // 6 + 3  # stopped within one token, not at the end of the plane or stack
