"""Edits whose cost follows the mask (issue 16): the known-only encode, the first-stage cache,
the region decoder, the sliding-window sampler and edit(resolution=, decode=)."""

import threading

import numpy as np
import pytest
import torch

from napari_ilat import EditCancelled, edit
from napari_ilat.engine import editing, reuse, vqgan
from napari_ilat.engine.editing import edit_window, native_window
from napari_ilat.engine.model import ILATModel
from napari_ilat.engine.region_decode import Box, decode_region, receptive_field, record_reference, region_plan
from napari_ilat.engine.reuse import FIRST_STAGE_CACHE, FirstStageCache
from napari_ilat.engine.sampler import sample_tokens
from napari_ilat.engine.sliding import grid_blocks, sample_grid
from napari_ilat.engine.vqgan import VQGANConfig


@pytest.fixture(scope="module")
def tiny():
    return ILATModel.tiny(resolution=32, seed=3).double()


@pytest.fixture(scope="module")
def tiny128():
    """f = 4, a 32 x 32 latent: a decoder whose receptive field (13 tokens) is smaller than
    the map, so a crop is a real crop."""
    return ILATModel.tiny(resolution=128, seed=5).double()


@pytest.fixture(autouse=True)
def fresh_cache():
    FIRST_STAGE_CACHE.clear()
    yield
    FIRST_STAGE_CACHE.clear()


def photo(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
    base = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy), xx * yy], -1) * 0.35 + 0.5
    return np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)


# --------------------------------------------------------------------------- receptive field


def test_receptive_field_from_the_config():
    # bundled layout: 9 tokens at the token level + 2.5 + 1.25 + 0.75 above it
    assert receptive_field(VQGANConfig()) == 13.5
    assert receptive_field(VQGANConfig.taming_f16()) == 17.625
    # the exact crop (margin None) reaches exactly that far, in whole tokens
    cfg = VQGANConfig()
    plan = region_plan(cfg, (64, 64), Box(256, 264, 256, 264), None)
    assert plan.first == Box(32 - 14, 33 + 14, 32 - 14, 33 + 14)


# --------------------------------------------------------------------------- known-only encode


@pytest.mark.parametrize("box", [(10, 40, 20, 50), (0, 128, 0, 3), (60, 61, 70, 71)])
def test_known_only_encode_is_bit_identical_at_known_tokens(tiny128, box):
    vq = tiny128.vqgan
    x = torch.rand(1, 3, 128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 1, 128, 128, dtype=torch.bool)
    mask[..., box[0] : box[1], box[2] : box[3]] = True
    with torch.inference_mode():
        full, fast = vq.encode(x, mask), vq.encode(x, mask, known_only=True)
    known = ~vq.token_mask(mask)[:, None].expand_as(full)
    assert torch.equal(full[known], fast[known])
    assert not torch.equal(full[~known], fast[~known])  # the masked stream there, not the target


def test_chunked_attention_equals_one_chunk(tiny, monkeypatch):
    block = tiny.vqgan.encoder.mid.attn_1
    x = torch.randn(2, block.q.in_channels, 8, 8, dtype=torch.float64)
    mask = torch.rand(2, 1, 8, 8) > 0.6
    with torch.inference_mode():
        ref = [block(x), block(x, mask)]
        monkeypatch.setattr(vqgan, "ATTN_CHUNK", 7)  # 64 positions in 10 chunks
        got = [block(x), block(x, mask)]
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- region decode


def test_region_decode_is_exact_with_the_maps_own_statistics(tiny128):
    """With the statistics and attention keys/values of the same latent and a crop as wide
    as the receptive field, the ROI comes out as from the whole map up to float64 rounding
    (the convolution kernels sum in an order that depends on the map's size: ~4e-15 here):
    only the convolutions' reach matters, and it is computed right."""
    vq = tiny128.vqgan
    z = torch.randn(1, 16, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    roi = Box(90, 101, 3, 17)
    plan = region_plan(vq.config, (32, 32), roi, None)
    assert plan.first.area < 32 * 32  # a real crop
    with torch.inference_mode():
        ref = record_reference(vq, z, plan)
        whole = vq.decode(z)
        got = decode_region(vq, z, ref, correct=False)
        corrected = decode_region(vq, z, ref)
    want = ref.image[..., roi.r0 : roi.r1, roi.c0 : roi.c1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(corrected, want, rtol=0, atol=1e-12)
    # the recording pass is the decoder (its own normalisation code, same values)
    torch.testing.assert_close(ref.image, whole, rtol=0, atol=1e-10)


def test_region_decode_misses_without_the_receptive_field(tiny128):
    """A crop narrower than the receptive field is not exact (the test above can fail)."""
    vq = tiny128.vqgan
    z = torch.randn(1, 16, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    roi = Box(60, 68, 60, 68)
    with torch.inference_mode():
        ref = record_reference(vq, z, region_plan(vq.config, (32, 32), roi, 1))
        got = decode_region(vq, z, ref, correct=False)
    assert (got - ref.image[..., roi.r0 : roi.r1, roi.c0 : roi.c1]).abs().max() > 1e-6


#: the stated tolerance of decode="auto" against decode="full" on the bundled models, in grey
#: levels of an 8-bit image inside the mask and its feather band (measured: max 4-8, mean
#: 1-2 on photographs, random tokens included)
REGION_MAX, REGION_MEAN = 16, 3.0


def test_region_decode_within_the_stated_tolerance_on_a_bundled_model():
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.astronaut()[:256, 100:356]
    worst_max, means = 0, []
    for seed, (r, c, s) in enumerate([(40, 60, 32), (100, 20, 24), (10, 150, 40), (180, 180, 16)]):
        mask = np.zeros(img.shape[:2], bool)
        mask[r : r + s, c : c + s] = True
        a = edit(img, mask, model="natural", seed=seed, decode="full").astype(int)
        b = edit(img, mask, model="natural", seed=seed, decode="auto").astype(int)
        touched = editing.feather_alpha(mask, 2.0) > 0
        assert np.array_equal(a[~touched], b[~touched])  # outside: the input bytes, both
        d = np.abs(a - b)[touched]
        worst_max, means = max(worst_max, d.max()), means + [d.mean()]
    assert worst_max <= REGION_MAX and np.mean(means) <= REGION_MEAN, (worst_max, means)


# --------------------------------------------------------------------------- the cache


def cache_consistent(model, img, mask, prime=None, **kw):
    """An edit made after ``prime`` (image, mask) filled the cache equals the same edit
    computed from an empty cache."""
    FIRST_STAGE_CACHE.clear()
    if prime is not None:
        edit(*prime, model=model, **kw)
    warm = edit(img, mask, model=model, **kw)
    FIRST_STAGE_CACHE.clear()
    cold = edit(img, mask, model=model, **kw)
    assert np.array_equal(warm, cold)


def test_cache_hits_for_new_seeds_and_equals_recomputation(tiny):
    img = photo((32, 32))
    mask = np.zeros((32, 32), bool)
    mask[8:18, 10:20] = True
    first = edit(img, mask, model=tiny, seed=1)
    assert FIRST_STAGE_CACHE.misses == 1 and FIRST_STAGE_CACHE.hits == 0
    again = edit(img, mask, model=tiny, seed=1)
    edit(img, mask, model=tiny, seed=2, samples=2)
    assert FIRST_STAGE_CACHE.hits == 2 and len(FIRST_STAGE_CACHE) == 1
    assert np.array_equal(first, again)
    cache_consistent(tiny, img, mask, seed=3)


def check_invalidation(model):
    img = photo((32, 32))
    mask = np.zeros((32, 32), bool)
    mask[8:18, 10:20] = True
    other_mask = mask.copy()
    other_mask[20:24, 4:8] = True
    cache_consistent(model, img, other_mask, prime=(img, mask), seed=1)  # changed mask
    other_img = img.copy()
    other_img[0, 0] = 0.123  # changed pixel outside the mask
    cache_consistent(model, other_img, mask, prime=(img, mask), seed=1)
    cache_consistent(model, img, mask, prime=(img, mask), seed=1, mode="ilat*")  # other encoder
    cache_consistent(model, img, mask, prime=(img, mask), seed=2)  # a hit: the same


def test_cache_is_invalidated_when_image_mask_or_encoder_change(tiny):
    check_invalidation(tiny)
    # weights changed in place: a miss, not the old encoding
    model = ILATModel.tiny(resolution=32, seed=3).double()
    img, mask = photo((32, 32)), np.zeros((32, 32), bool)
    mask[4:12, 4:12] = True
    before = edit(img, mask, model=model, seed=0)
    with torch.no_grad():
        model.vqgan.encoder.conv_in.weight.mul_(1.5)
    misses = FIRST_STAGE_CACHE.misses
    after = edit(img, mask, model=model, seed=0)
    assert FIRST_STAGE_CACHE.misses == misses + 1 and not np.array_equal(before, after)


def test_a_key_without_the_mask_is_caught(tiny, monkeypatch):
    """Plant the bug: a key that ignores the mask. The invalidation check must fail."""
    real = reuse.first_stage_key

    def key_without_mask(*args, mask_win, **kw):
        return real(*args, mask_win=np.zeros((1, 1), bool), **kw)

    monkeypatch.setattr(editing, "first_stage_key", key_without_mask)
    with pytest.raises(AssertionError):
        check_invalidation(tiny)


def test_cache_is_bounded():
    cache = FirstStageCache(max_entries=3, max_bytes=10_000)
    owner = torch.nn.Linear(1, 1)
    for i in range(5):
        cache.put(("k", i), owner, {"z": torch.zeros(100)})  # 400 bytes each
    assert len(cache) == 3 and cache.get(("k", 0), owner) is None and cache.get(("k", 4), owner) is not None
    cache.put(("big",), owner, {"z": torch.zeros(5000)})  # 20 kB: over the byte bound, dropped
    assert cache.nbytes <= 10_000 and cache.get(("big",), owner) is None
    other = torch.nn.Linear(1, 1)
    assert cache.get(("k", 4), other) is None  # another model: never a hit


# --------------------------------------------------------------------------- sliding windows


@pytest.mark.parametrize("seed", range(6))
def test_blocks_cover_every_masked_token_once(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(16, 40, 2)
    todo = torch.from_numpy(rng.random((h, w)) < rng.uniform(0.05, 0.9))
    seen = torch.zeros(h, w, dtype=torch.int64)
    for r, r_end, c, c_end, r0, c0 in grid_blocks(todo, 16):
        assert 0 <= r0 <= h - 16 and 0 <= c0 <= w - 16
        assert r0 <= r and r_end <= r0 + 16 and c0 <= c and c_end <= c0 + 16  # the block is in its window
        seen[r:r_end, c:c_end] += todo[r:r_end, c:c_end]
    assert torch.equal(seen, todo.long())


def test_one_window_grid_is_the_plain_sampler(tiny):
    t = tiny.transformer
    g = t.config.grid
    tokens = torch.randint(0, 64, (g, g), generator=torch.Generator().manual_seed(0))
    known = torch.rand(g, g, generator=torch.Generator().manual_seed(1)) > 0.3
    for mode in ("ilat", "taming"):
        a = sample_grid(t, tokens, known, window=g, mode=mode, generator=torch.Generator().manual_seed(5))
        b = sample_tokens(t, tokens.flatten(), known.flatten(), mode=mode, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a.flatten(), b[0])


@pytest.mark.parametrize("mode", ["ilat", "taming"])
def test_sliding_windows_keep_known_tokens_and_count_every_token(tiny, mode):
    t = tiny.transformer
    g = t.config.grid  # 8
    tokens = torch.randint(0, 64, (21, 30), generator=torch.Generator().manual_seed(0))
    known = torch.ones(21, 30, dtype=torch.bool)
    known[3:18, 2:27] = False
    known[7, 9] = True  # a known token inside the masked area
    calls = []
    kw = dict(window=g, mode=mode, progress=lambda d, n: calls.append((d, n)))
    a = sample_grid(t, tokens, known, generator=torch.Generator().manual_seed(2), **kw)
    b = sample_grid(t, tokens, known, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a[known], tokens[known])
    assert torch.equal(a, b)  # same seed, same tokens
    total = int((~known).sum())
    done = [d for d, _ in calls[: len(calls) // 2]]
    assert all(n == total for _, n in calls) and done[-1] == total
    assert done == sorted(done) and len(done) >= total // 4  # a report per step, in order
    c = sample_grid(t, tokens, known, generator=torch.Generator().manual_seed(3), window=g, mode=mode)
    assert not torch.equal(a, c)
    calls.clear()  # one by one: exactly one report per generated token
    sample_grid(t, tokens, known, generator=torch.Generator().manual_seed(2), parallel=False, **kw)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == total == done[-1]


def _random_grid(seed, h, w):
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, 64, (h, w)))
    known = torch.ones(h, w, dtype=torch.bool)
    for _ in range(rng.integers(1, 4)):  # a few overlapping boxes, some known holes inside
        r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
        known[r : r + rng.integers(3, h), c : c + rng.integers(3, w)] = False
    known |= torch.from_numpy(rng.random((h, w)) < 0.1)
    return tokens, known


@pytest.mark.parametrize("seed", [0, 2, 3, 5])  # masks wide enough for several windows at once
def test_parallel_blocks_give_the_sequential_result(tiny, seed):
    """Blocks run in wavefront batches read the grid exactly as the one-by-one order leaves
    it: with greedy picks (no random draws to reorder) the tokens are the same."""
    from napari_ilat.engine.sampler import SamplingOptions
    from napari_ilat.engine.sliding import wavefront_levels

    t = tiny.transformer
    tokens, known = _random_grid(seed, 26 + seed % 4, 33 - seed % 4)
    levels = wavefront_levels(grid_blocks(~known, 8), 8)
    assert max(np.bincount(levels)) > 1  # some level really runs several windows
    greedy = SamplingOptions(greedy=True)
    kw = dict(window=8, options=greedy)
    a = sample_grid(t, tokens, known, parallel=True, **kw)
    b = sample_grid(t, tokens, known, parallel=False, **kw)
    assert torch.equal(a, b)
    assert torch.equal(a[known], tokens[known])


@pytest.mark.parametrize("seed", [9, 14])
def test_parallel_blocks_on_scattered_masks(tiny, seed):
    """Scattered masks, where a block may lie in an earlier block's window without that
    block lying in its own (seed 14 catches a wavefront that forgets the second rule)."""
    from napari_ilat.engine.sampler import SamplingOptions

    rng = np.random.default_rng(seed)
    known = torch.from_numpy(rng.random((20, 26)) > rng.uniform(0.1, 0.5))
    tokens = torch.from_numpy(rng.integers(0, 64, (20, 26)))
    kw = dict(window=8, options=SamplingOptions(greedy=True))
    assert torch.equal(
        sample_grid(tiny.transformer, tokens, known, **kw),
        sample_grid(tiny.transformer, tokens, known, parallel=False, **kw),
    )


def test_parallel_blocks_with_a_condition_map():
    """The same with per-token condition cells and condition tokens (each window its own)."""
    from napari_ilat.engine.sampler import SamplingOptions

    t = ILATModel.tiny(cond="pose", cond_map=True, resolution=32, seed=6).double().transformer
    tokens, known = _random_grid(7, 24, 24)
    poses = {}

    def cond_at(r0, c0):
        g = torch.Generator().manual_seed(100 * r0 + c0)
        return poses.setdefault((r0, c0), torch.rand(1, 18, 3, generator=g, dtype=torch.float64))

    kw = dict(window=8, options=SamplingOptions(greedy=True))
    a = sample_grid(t, tokens, known, cond_at, parallel=True, **kw)
    b = sample_grid(t, tokens, known, cond_at, parallel=False, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_grid(t, tokens, known, parallel=True, **kw))  # the pose matters


def test_sliding_windows_use_each_windows_condition(tiny):
    """cond_at is asked for the window of every block (a pose / sketch is per window)."""
    t = ILATModel.tiny(cond="pose", resolution=32, seed=4).double().transformer
    tokens = torch.randint(0, 64, (16, 16), generator=torch.Generator().manual_seed(0))
    known = torch.ones(16, 16, dtype=torch.bool)
    known[2:14, 2:14] = False
    asked = []

    def cond_at(r0, c0):
        asked.append((r0, c0))
        return torch.rand(1, 18, 3, dtype=torch.float64)

    sample_grid(t, tokens, known, cond_at, window=8, generator=torch.Generator().manual_seed(0))
    assert len(set(asked)) > 1 and all(0 <= r <= 8 and 0 <= c <= 8 for r, c in asked)


def test_sliding_windows_cancel(tiny):
    t = tiny.transformer
    tokens = torch.zeros(24, 24, dtype=torch.long)
    known = torch.zeros(24, 24, dtype=torch.bool)
    stop = threading.Event()

    def progress(done, total):
        if done >= 20:
            stop.set()

    with pytest.raises(EditCancelled):
        sample_grid(t, tokens, known, window=8, progress=progress, cancel=stop)


# --------------------------------------------------------------------------- edit(resolution=)


def test_native_window_matches_edit_window_when_the_mask_fits():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(rng.integers(40, 120, 2))
        mask = np.zeros(shape, bool)
        r, c = rng.integers(0, shape[0] - 10), rng.integers(0, shape[1] - 10)
        mask[r : r + rng.integers(1, 10), c : c + rng.integers(1, 10)] = True
        assert native_window(mask, 32, 4, 4) == edit_window(mask, 32, 4)
    big = np.zeros((90, 70), bool)
    big[10:80, 5:60] = True
    r0, c0, h, w = native_window(big, 32, 4, 4)
    assert h % 4 == 0 and w % 4 == 0 and r0 <= 10 and r0 + h >= 80 and c0 <= 5 and c0 + w >= 60
    assert native_window(np.ones((20, 90), bool), 32, 4, 4) is None  # image smaller than a window


def test_scaled_window_holds_the_mask_at_the_figures_scale():
    """The window of a figure-scaled edit: whole tokens of at least one model window at model
    scale, holding the mask (plus the context where the image allows) in image pixels, inside
    the image, about ``scale`` image pixels per model pixel; at scale 1 the native window."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(100, 700, 2))
        mask = np.zeros(shape, bool)
        r, c = rng.integers(0, shape[0] - 30), rng.integers(0, shape[1] - 30)
        mask[r : r + rng.integers(1, 30), c : c + rng.integers(1, 30)] = True
        assert editing.scaled_window(mask, 32, 4, 4, 1.0) == (
            native_window(mask, 32, 4, 4),
            native_window(mask, 32, 4, 4)[2:],
        )
        scale = float(rng.uniform(0.3, 4.0))
        found = editing.scaled_window(mask, 32, 4, 4, scale)
        if min(shape) / scale < 32:
            assert found is None  # the shrunk image is smaller than a window
            continue
        (r0, c0, h, w), (sh, sw) = found
        assert sh % 4 == 0 and sw % 4 == 0 and sh >= 32 and sw >= 32
        assert 0 <= r0 and r0 + h <= shape[0] and 0 <= c0 and c0 + w <= shape[1]
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert r0 <= rows[0] and rows[-1] < r0 + h and c0 <= cols[0] and cols[-1] < c0 + w
        assert h / sh == pytest.approx(scale, abs=1 / sh) and w / sw == pytest.approx(scale, abs=1 / sw)
    assert editing.scaled_window(np.ones((512, 512), bool), 128, 8, 16, 4.0) == ((0, 0, 512, 512), (128, 128))


def test_native_edit_of_a_large_mask(tiny):
    img = photo((90, 100), 1)
    mask = np.zeros(img.shape[:2], bool)
    mask[15:75, 10:85] = True
    calls = []
    a = edit(img, mask, model=tiny, seed=4, progress=lambda d, n: calls.append((d, n)))
    assert a.shape == img.shape
    touched = editing.feather_alpha(mask, 2.0) > 0
    assert np.array_equal(a[~touched], img[~touched])
    total = calls[-1][1]
    assert calls[-1][0] == total and total >= (60 // 4) * (75 // 4)  # every masked token of the grid
    assert np.array_equal(a, edit(img, mask, model=tiny, seed=4))
    b = edit(img, mask, model=tiny, seed=4, resolution="resize")
    assert not np.array_equal(a, b) and np.array_equal(b[~touched], img[~touched])
    stop = threading.Event()
    stop.set()
    with pytest.raises(EditCancelled):
        edit(img, mask, model=tiny, seed=4, cancel=stop)


def test_small_masks_are_the_same_with_either_resolution(tiny):
    img = photo((60, 60), 2)
    mask = np.zeros((60, 60), bool)
    mask[20:30, 25:33] = True
    assert np.array_equal(edit(img, mask, model=tiny, seed=1), edit(img, mask, model=tiny, seed=1, resolution="resize"))


def test_bad_resolution_and_decode(tiny):
    img, mask = photo((32, 32)), np.zeros((32, 32), bool)
    mask[4:8, 4:8] = True
    with pytest.raises(ValueError, match="resolution must be one of auto, native, resize"):
        edit(img, mask, model=tiny, resolution="big")
    with pytest.raises(ValueError, match="decode must be one of"):
        edit(img, mask, model=tiny, decode="some")


def test_cli_resolution_flag(tmp_path, tiny_model_path):
    skimage_io = pytest.importorskip("skimage.io")
    from napari_ilat.cli.main import main

    img = (photo((70, 80), 3) * 255).astype(np.uint8)
    mask = np.zeros((70, 80), np.uint8)
    mask[10:60, 8:70] = 255
    skimage_io.imsave(tmp_path / "img.png", img, check_contrast=False)
    skimage_io.imsave(tmp_path / "mask.png", mask, check_contrast=False)
    outs = {}
    for res in ("native", "resize"):
        args = ["edit", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png")]
        args += ["--model", str(tiny_model_path), "--seed", "1", "-q", "--resolution", res]
        assert main(args + ["-o", str(tmp_path / f"{res}.png")]) == 0
        outs[res] = skimage_io.imread(tmp_path / f"{res}.png")
    assert not np.array_equal(outs["native"], outs["resize"])
    with pytest.raises(SystemExit):
        main(["edit", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"), "--resolution", "x", "-o", "o"])


# --------------------------------------------------------------------------- prompt reuse


def test_prompt_store_hits_and_equals_recomputation(tiny):
    """Repeated sampling with the same prompt reuses its keys/values: same tokens bit for
    bit; another condition, mode, known set or changed weights is a miss."""
    from napari_ilat.engine.sampler import PROMPTS_KEPT

    t = ILATModel.tiny(cond="pose", cond_map=True, resolution=32, seed=8).double().transformer
    g = t.config.grid
    tokens = torch.randint(0, 64, (g * g,), generator=torch.Generator().manual_seed(0))
    known = torch.rand(g * g, generator=torch.Generator().manual_seed(1)) > 0.3
    pose = torch.rand(1, 18, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    store = {}

    def run(seed, cond=pose, mode="ilat", k=known, samples=1, prompts=store):
        return sample_tokens(
            t,
            tokens,
            k,
            cond,
            mode=mode,
            samples=samples,
            generator=torch.Generator().manual_seed(seed),
            prompts=prompts,
        )

    for mode in ("ilat", "taming"):
        for seed in (3, 4):
            fresh = run(seed, mode=mode, prompts=None)
            assert torch.equal(run(seed, mode=mode), fresh)  # computes and stores
            assert torch.equal(run(seed, mode=mode), fresh)  # a hit
        assert torch.equal(run(5, mode=mode, samples=3), run(5, mode=mode, samples=3, prompts=None))
    assert len(store) == 2  # one prompt per mode
    with torch.no_grad():
        t.blocks[0].attn.c_attn.weight.mul_(1.3)  # every key/value of the prompt changes

    def logits(prompts):  # (a random model's picks barely move: compare what they come from)
        g = torch.Generator().manual_seed(8)
        return sample_tokens(t, tokens, known, pose, return_logits=True, generator=g, prompts=prompts)[1]

    assert torch.equal(logits(store), logits(None))
    store.clear()
    run(8)
    moved = pose.clone()
    moved[0, 3, 0] += 0.2
    assert torch.equal(run(6, cond=moved), run(6, cond=moved, prompts=None)) and len(store) == 2
    other = known.clone()
    other[int((~known).nonzero()[0])] = True
    assert torch.equal(run(6, k=other), run(6, k=other, prompts=None)) and len(store) == 3
    run(7, mode="taming")
    assert len(store) == PROMPTS_KEPT
    run(7, cond=None)
    assert len(store) == PROMPTS_KEPT  # bounded: the oldest went


def test_repeated_generate_reuses_the_prompt(tiny, monkeypatch):
    """edit(): the second Generate on the same image and mask runs no prompt forward."""
    img = photo((32, 32))
    mask = np.zeros((32, 32), bool)
    mask[8:18, 10:20] = True
    first = edit(img, mask, model=tiny, seed=1)
    real, lengths = tiny.transformer.run, []

    def counting(x, mask=None, cache=None):
        lengths.append(x.shape[1])
        return real(x, mask, cache)

    monkeypatch.setattr(tiny.transformer, "run", counting)
    assert np.array_equal(edit(img, mask, model=tiny, seed=1), first)
    assert lengths and max(lengths) == 1  # single-token steps only
    FIRST_STAGE_CACHE.clear()
    lengths.clear()
    assert np.array_equal(edit(img, mask, model=tiny, seed=1), first)
    assert max(lengths) > 1  # cold: the prompt is computed again


def test_wavefront_levels_equal_the_all_pairs_rule():
    """The scheduler stops looking back once bands are out of reach; the levels are those of
    comparing every pair of blocks."""
    from napari_ilat.engine.sliding import wavefront_levels

    def overlaps(a, b):
        return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]

    def all_pairs(blocks, window):
        levels = []
        for j, bj in enumerate(blocks):
            wj, level = (bj[4], bj[4] + window, bj[5], bj[5] + window), 0
            for i, bi in enumerate(blocks[:j]):
                if overlaps(bi[:4], wj):
                    level = max(level, levels[i] + 1)
                elif overlaps((bi[4], bi[4] + window, bi[5], bi[5] + window), bj[:4]):
                    level = max(level, levels[i])
            levels.append(level)
        return levels

    for seed in range(40):
        rng = np.random.default_rng(seed)
        window = int(rng.choice([4, 8, 16]))
        h, w = rng.integers(window, 70, 2)
        blocks = grid_blocks(torch.from_numpy(rng.random((h, w)) < rng.uniform(0.02, 0.9)), window)
        assert wavefront_levels(blocks, window) == all_pairs(blocks, window), seed


def test_parallel_blocks_with_guidance():
    """Guidance in the batched windows (the unconditional branch as extra rows) gives what
    the one-by-one sampler gives, and scale 0 is the unconditional model."""
    from napari_ilat.engine.sampler import SamplingOptions

    t = ILATModel.tiny(cond="pose", cond_map=True, resolution=32, seed=6).double().transformer
    tokens, known = _random_grid(7, 24, 24)

    def cond_at(r0, c0):
        return torch.rand(1, 18, 3, generator=torch.Generator().manual_seed(100 * r0 + c0), dtype=torch.float64)

    def run(guidance, parallel=True, cond=cond_at):
        opts = SamplingOptions(greedy=True, guidance=guidance)
        return sample_grid(t, tokens, known, cond, window=8, options=opts, parallel=parallel)

    guided = run(3.0)
    assert torch.equal(guided, run(3.0, parallel=False))
    assert not torch.equal(guided, run(1.0))
    assert torch.equal(run(0.0), run(1.0, cond=None))
    assert torch.equal(guided[known], tokens[known])
