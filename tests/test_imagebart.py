"""ImageBART, the second engine (issue 15): forward process, guided masked sampling, the
cached decoder, the model files, and the front ends (edit(), CLI, widget). Tiny random
models only: no network, a few seconds on a 2-core CPU."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

import napari_ilat.engine.imagebart as ib
from napari_ilat.engine.imagebart import (
    ImageBARTConfig,
    ImageBARTModel,
    geometric_betas,
    q_marginal,
    q_step,
    sample_imagebart,
    save_imagebart,
)
from napari_ilat.engine.sampler import EditCancelled, SamplingOptions


@pytest.fixture(scope="module")
def tiny_ib():
    return ImageBARTModel.tiny(resolution=32)


@pytest.fixture(scope="module")
def tiny_ib_path(tmp_path_factory, tiny_ib):
    return save_imagebart(tiny_ib, tmp_path_factory.mktemp("ib") / "tiny_ib")


def _case(model, seed=0):
    """Clean tokens and a known map with masked runs of several lengths (an edge, a middle
    run, single tokens, the last token)."""
    n = model.bart.config.n_tokens
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.bart.config.vocab_size, (n,), generator=g)
    known = torch.ones(n, dtype=torch.bool)
    known[0:3] = False
    known[20:31] = False
    known[[40, 42, 50, n - 1]] = False
    return tokens, known


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- forward process


def test_geometric_schedule_is_the_design_one():
    assert geometric_betas(4) == (0.25, 1 / 3, 0.5, 1.0)
    cfg = ImageBARTConfig(n_stages=4, vocab_size=8, grid=2)
    assert [round(cfg.keep_prob(t), 12) for t in range(5)] == [1, 0.75, 0.5, 0.25, 0]
    with pytest.raises(ValueError, match="last one 1"):
        ImageBARTConfig(n_stages=2, betas=(0.5, 0.5))
    assert ImageBARTConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("betas", [None, (0.1, 0.3, 1.0)])
def test_forward_marginals_match_the_schedule(betas):
    """Sequential q(x_t | x_{t-1}) steps and the closed form q(x_t | x_0) both give
    P(x_t = x_0) = abar_t + (1 - abar_t) / K, and the redrawn codes are uniform."""
    k, n = 16, 200_000
    cfg = ImageBARTConfig(vocab_size=k, grid=4, n_stages=3, betas=betas)
    g = _gen(0)
    x0 = torch.zeros(n, dtype=torch.long)  # code 0 everywhere: counts of every code are easy
    x = x0
    for t in range(1, cfg.n_stages + 1):
        x = q_step(x, t, cfg, g)
        closed = q_marginal(x0, t, cfg, g)
        abar = cfg.keep_prob(t)
        p_same = abar + (1 - abar) / k
        tol = 5 * np.sqrt(p_same * (1 - p_same) / n)  # 5 sigma: a fixed seed, never flaky
        for sample in (x, closed):
            counts = torch.bincount(sample, minlength=k).double() / n
            assert abs(counts[0].item() - p_same) < tol, (t, counts[0].item(), p_same)
            other = (1 - abar) / k  # every other code: only by a redraw
            tol_o = 5 * np.sqrt(other * (1 - other) / n) + 1e-12
            assert (counts[1:] - other).abs().max().item() < tol_o, (t, counts[1:])
    assert cfg.keep_prob(cfg.n_stages) == 0  # x_T is pure noise


def test_q_step_only_where_asked():
    cfg = ImageBARTConfig(vocab_size=32, grid=4, n_stages=2)
    x = torch.zeros(4, 16, dtype=torch.long)
    where = torch.zeros_like(x, dtype=torch.bool)
    where[:, :8] = True
    y = q_step(x, 2, cfg, _gen(0), where)  # beta_2 = 1: every asked token redrawn
    assert (y[:, 8:] == 0).all() and (y[:, :8] != 0).any()


# ---------------------------------------------------------------- guided sampling


def assert_known_kept_by_every_stage(model, tokens, known, **kw):
    """Every pass of every stage returns the known tokens unchanged."""
    out, chain = sample_imagebart(model.bart, tokens, known, return_chain=True, **kw)
    assert len(chain) >= model.bart.config.n_stages
    for t, x in chain:
        assert torch.equal(x[:, known], tokens[known].expand(x.shape[0], -1)), f"stage {t} changed known tokens"
    assert torch.equal(out, chain[-1][1])
    return out, chain


def test_known_tokens_come_out_of_every_stage_unchanged(tiny_ib):
    tokens, known = _case(tiny_ib)
    out, chain = assert_known_kept_by_every_stage(tiny_ib, tokens, known, samples=3, generator=_gen(1), repeats=2)
    assert [t for t, _ in chain] == [3, 2, 2, 1, 1]  # the noise stage once, the others twice
    assert not torch.equal(out[:, ~known], tokens[~known].expand(3, -1))  # masked ones are generated


def test_noisy_known_context_still_keeps_known_tokens(tiny_ib):
    tokens, known = _case(tiny_ib)
    out, _ = assert_known_kept_by_every_stage(tiny_ib, tokens, known, samples=2, generator=_gen(1), noisy_known=True)
    clean = sample_imagebart(tiny_ib.bart, tokens, known, samples=2, generator=_gen(1))
    assert not torch.equal(out, clean)  # the encoders did read other context


def test_a_decoder_that_ignores_the_guide_fails(tiny_ib, monkeypatch):
    """Planted bug: the guide is not added to the logits. The check above must catch it."""
    tokens, known = _case(tiny_ib)
    monkeypatch.setattr(ib, "apply_guide", lambda logits, guide: logits)
    with pytest.raises(AssertionError, match="changed known tokens"):
        assert_known_kept_by_every_stage(tiny_ib, tokens, known, samples=2, generator=_gen(1))


def test_guide_rows():
    tokens = torch.tensor([2, 0, 1])
    known = torch.tensor([True, False, True])
    g = ib.guide_logits(tokens, known, 3)
    assert g[1].eq(0).all()
    assert g[0].tolist() == [float("-inf"), float("-inf"), 0.0] and g[2].argmax() == 1


def test_same_seed_same_output_other_seed_other_output(tiny_ib):
    tokens, known = _case(tiny_ib)
    a = sample_imagebart(tiny_ib.bart, tokens, known, samples=2, generator=_gen(5))
    b = sample_imagebart(tiny_ib.bart, tokens, known, samples=2, generator=_gen(5))
    c = sample_imagebart(tiny_ib.bart, tokens, known, samples=2, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cached_decoder_equals_full_recomputation():
    """Chunks of any length against the cache give the logits of one full causal pass."""
    torch.manual_seed(0)
    model = ImageBARTModel.tiny(resolution=32).double()
    stage = model.bart.stage(1)  # an encoder-decoder stage
    n = model.bart.config.n_tokens
    x_t = torch.randint(0, 64, (2, n))
    x_prev = torch.randint(0, 64, (2, n))
    with torch.no_grad():
        full = stage(x_t, x_prev)
        memory = stage.memory(x_t)
        kv = ib.DecoderCache(stage.config, 2, stage.pos_emb)
        inputs = stage.decoder_inputs(x_prev)
        parts, start = [], 0
        for size in (1, 5, 1, 1, 17, 3, n):
            size = min(size, n - start)
            if size <= 0:
                break
            parts.append(stage.decode(inputs[:, start : start + size], start, memory, kv))
            start += size
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-10)


def test_cached_sampling_equals_uncached(tiny_ib):
    model = ImageBARTModel.tiny(resolution=32).double()
    tokens, known = _case(model)
    for opts in (SamplingOptions(), SamplingOptions(greedy=True), SamplingOptions(top_k=5, temperature=0.7)):
        a = sample_imagebart(model.bart, tokens, known, samples=2, generator=_gen(2), options=opts, repeats=2)
        b = sample_imagebart(
            model.bart, tokens, known, samples=2, generator=_gen(2), options=opts, repeats=2, cache=False
        )
        assert torch.equal(a, b)


def test_sequential_steps_grow_with_the_masked_tokens_only(tiny_ib, monkeypatch):
    """One decoder call per masked token per pass; known runs go in one chunk, and nothing
    after the last masked token is fed."""
    calls = []
    real = ib.ReverseStage.decode

    def counting(self, inputs, start, memory, cache=None, cells=None):
        calls.append(inputs.shape[1])
        return real(self, inputs, start, memory, cache, cells)

    monkeypatch.setattr(ib.ReverseStage, "decode", counting)
    n = tiny_ib.bart.config.n_tokens
    tokens = torch.zeros(n, dtype=torch.long)
    for n_masked in (1, 4, 12):
        calls.clear()
        known = torch.ones(n, dtype=torch.bool)
        known[10 : 10 + n_masked] = False
        sample_imagebart(tiny_ib.bart, tokens, known, generator=_gen(0))
        assert len(calls) == 3 * n_masked  # T = 3 stages, no repeats
        assert sum(calls) == 3 * (10 + n_masked)  # up to the last masked token only


def test_progress_counts_every_stage_and_cancel_stops_within_one_token(tiny_ib):
    tokens, known = _case(tiny_ib)
    m = int((~known).sum())
    seen = []
    sample_imagebart(
        tiny_ib.bart, tokens, known, generator=_gen(0), repeats=2, progress=lambda d, t: seen.append((d, t))
    )
    total = (1 + 2 + 2) * m
    assert seen == [(i, total) for i in range(1, total + 1)]

    stop = threading.Event()
    seen.clear()

    def progress(done, total):
        seen.append(done)
        if done == m + 3:  # inside the second stage
            stop.set()

    with pytest.raises(EditCancelled):
        sample_imagebart(tiny_ib.bart, tokens, known, generator=_gen(0), progress=progress, cancel=stop)
    assert seen[-1] == m + 3  # not one token more


def test_unconditional_only_and_bad_repeats(tiny_ib):
    tokens, known = _case(tiny_ib)
    with pytest.raises(ValueError, match="unconditional"):
        sample_imagebart(tiny_ib.bart, tokens, known, torch.zeros(1, 18, 3))
    with pytest.raises(ValueError, match="repeats"):
        sample_imagebart(tiny_ib.bart, tokens, known, repeats=0)


# ---------------------------------------------------------------- model files


def test_save_load_round_trip(tiny_ib, tiny_ib_path, tmp_path):
    import json

    from napari_ilat import load_model

    meta = json.loads(tiny_ib_path.read_text())
    assert meta["kind"] == "imagebart" and set(meta["files"]) == {"stage1", "bart1", "bart2", "bart3"}
    loaded = load_model(tiny_ib_path)
    assert isinstance(loaded, ImageBARTModel) and loaded.config.to_dict() == tiny_ib.config.to_dict()
    for k, v in tiny_ib.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # float16 storage loads back as float32; a modified file is refused
    p16 = save_imagebart(tiny_ib, tmp_path / "half", dtype=torch.float16)
    assert next(load_model(p16).parameters()).dtype == torch.float32
    f = tmp_path / "half.bart2.safetensors"
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="checksum"):
        load_model(p16)


# ---------------------------------------------------------------- edit(), CLI, widget


def _image_and_mask():
    rng = np.random.default_rng(0)
    img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    mask = np.zeros((40, 48), bool)
    mask[6:18, 10:30] = True
    return img, mask


def test_edit_in_imagebart_mode(tiny_ib):
    from scipy import ndimage

    from napari_ilat import edit, edit_with_info

    img, mask = _image_and_mask()
    res = edit_with_info(img, mask, model=tiny_ib, mode="imagebart", seed=4)
    again = edit(img, mask, model=tiny_ib, mode="imagebart", seed=4)
    assert res.mode == "imagebart" and np.array_equal(res.image, again)
    band = ndimage.binary_dilation(mask, np.ones((3, 3), bool), iterations=3)
    assert np.array_equal(res.image[~band], img[~band])  # outside the mask and feather band: as given
    assert not np.array_equal(res.image[mask], img[mask])
    two = edit(img, mask, model=tiny_ib, mode="imagebart", seed=4, samples=2)
    assert np.array_equal(two[0], res.image)  # candidate k = the single edit with seed + k


def test_sliding_windows_on_one_window_equal_the_plain_sampler(tiny_ib):
    """Greedy, block by block over one window gives what one pass gives: each block's
    decoder is forced on exactly the tokens the one pass had generated before it."""
    greedy = SamplingOptions(greedy=True)
    net = tiny_ib.bart
    g = net.config.grid
    for seed in range(3):
        tokens, known = _case(tiny_ib, seed)
        one = sample_imagebart(net, tokens, known, options=greedy, generator=torch.Generator().manual_seed(0))[0]
        slid = ib._sample_sliding(
            net, tokens.view(g, g), known.view(g, g), lambda r, c: None, g, greedy, torch.Generator(), True, None, None
        )
        assert torch.equal(slid.flatten(), one)


def test_a_mask_larger_than_one_window_is_edited_at_native_resolution(tiny_ib):
    from napari_ilat import edit

    rng = np.random.default_rng(1)
    img = (rng.random((80, 90, 3)) * 255).astype(np.uint8)
    mask = np.zeros((80, 90), bool)
    mask[8:70, 10:80] = True  # several 32 px windows at the model's scale
    seen = []
    out = edit(img, mask, model=tiny_ib, mode="imagebart", seed=0, progress=lambda d, t: seen.append((d, t)))
    assert out.shape == img.shape and not np.array_equal(out[mask], img[mask])
    assert np.array_equal(out[75:], img[75:])
    total = seen[-1][1]
    masked_tokens = (62 // 4 + 1) * (70 // 4 + 1)  # at least, f = 4
    assert total >= 3 * masked_tokens > 3 * 64  # every masked token of the grid, 3 stages
    assert [d for d, _ in seen] == list(range(1, total + 1))  # one report per sampled token
    assert np.array_equal(out, edit(img, mask, model=tiny_ib, mode="imagebart", seed=0))
    small = edit(
        img,
        mask,
        model=tiny_ib,
        mode="imagebart",
        seed=0,
        resolution="resize",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[-1][1] <= 3 * 64 and not np.array_equal(small, out)  # one window, resized
    stop = threading.Event()

    def cancel_at(done, total):
        if done == total // 2:
            stop.set()

    with pytest.raises(EditCancelled):
        edit(img, mask, model=tiny_ib, mode="imagebart", seed=0, progress=cancel_at, cancel=stop)


def test_sliding_windows_keep_known_tokens_and_use_each_windows_condition():
    model = ImageBARTModel.tiny(resolution=32, cond="sketch", seed=2)
    net = model.bart
    rng = np.random.default_rng(0)
    tokens = torch.from_numpy(rng.integers(0, net.config.vocab_size, (13, 19)))
    known = torch.from_numpy(rng.random((13, 19)) > 0.6)
    asked = []

    def cond_at(r0, c0):
        asked.append((r0, c0))
        return torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(r0 * 100 + c0))

    def run(cond_at):
        return ib.sample_imagebart_grid(
            net, tokens, known, cond_at, window=net.config.grid, generator=torch.Generator().manual_seed(3)
        )

    a = run(cond_at)
    assert torch.equal(a[known], tokens[known]) and len(set(asked)) > 1
    assert torch.equal(a, run(cond_at))  # same seed, same tokens
    assert not torch.equal(a, run(lambda r, c: None))  # the condition reaches the windows


def test_edit_progress_and_cancel_leave_nothing(tiny_ib):
    from napari_ilat import edit

    img, mask = _image_and_mask()
    stop = threading.Event()
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done == 2:
            stop.set()

    result = None
    with pytest.raises(EditCancelled):
        result = edit(img, mask, model=tiny_ib, mode="imagebart", seed=1, progress=progress, cancel=stop)
    assert result is None and seen[-1][0] == 2


def test_modes_and_models_must_match(tiny_ib, tiny_model, tmp_path, monkeypatch):
    import napari_ilat.engine.model as model_module
    from napari_ilat import edit

    img, mask = _image_and_mask()
    with pytest.raises(ValueError, match="needs an ImageBART model.*napari-ilat train imagebart"):
        edit(img, mask, model=tiny_model, mode="imagebart")
    with pytest.raises(ValueError, match="runs mode 'imagebart' only"):
        edit(img, mask, model=tiny_ib, mode="ilat")
    with monkeypatch.context() as m:  # no model given and none bundled
        m.setattr(model_module, "WEIGHTS_DIR", tmp_path)
        with pytest.raises(ValueError, match="none is bundled"):
            edit(img, mask, mode="imagebart")
    with pytest.raises(ValueError, match="not sketch-conditioned"):
        edit(img, mask, model=tiny_ib, mode="imagebart", sketch=np.zeros((40, 48)))


def test_cli_edit_imagebart(tiny_ib_path, tmp_path, capsys):
    import skimage.io

    from napari_ilat.cli import main

    img, mask = _image_and_mask()
    skimage.io.imsave(tmp_path / "img.png", img, check_contrast=False)
    skimage.io.imsave(tmp_path / "mask.png", (mask * 255).astype(np.uint8), check_contrast=False)
    args = ["edit", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"), "--model", str(tiny_ib_path)]
    assert main([*args, "--mode", "imagebart", "--seed", "2", "-o", str(tmp_path / "out.png")]) == 0
    out = skimage.io.imread(tmp_path / "out.png")
    assert out.shape == img.shape and np.array_equal(out[30:], img[30:])
    assert not np.array_equal(out[mask], img[mask])
    assert "wrote" in capsys.readouterr().err
    assert main([*args, "--mode", "ilat", "-o", str(tmp_path / "bad.png")]) != 0
    assert "runs mode 'imagebart' only" in capsys.readouterr().err
    # no --mode: the model's own (it was ilat, so an ImageBART model always needed --mode)
    assert main([*args, "--seed", "2", "-o", str(tmp_path / "own.png")]) == 0
    assert np.array_equal(skimage.io.imread(tmp_path / "own.png"), out)


# ---------------------------------------------------------------- training


def test_train_resume_export_load_edit(tiny_model_path, tmp_path):
    """`napari-ilat train imagebart` for a few steps (first stage taken from a model JSON),
    interrupted and resumed = uninterrupted; export; load_model; edit in mode imagebart."""
    import json

    from napari_ilat import edit, load_model
    from napari_ilat.cli import main
    from napari_ilat.train.imagebart import ImageBARTTrainConfig, train

    tiny = ["--n-embd", "32", "--n-head", "2", "--n-enc-layer", "1", "--n-dec-layer", "1", "--n-stages", "2"]
    common = ["--steps", "4", "--batch-size", "2", "--val-size", "4", "--val-every", "2", "--sample-every", "4"]
    common += ["--save-every", "2", "--device", "cpu", "--quiet", "--token-pool", "8"]
    out = tmp_path / "run"
    assert main(["train", "imagebart", "--out", str(out), "--steps", "1"]) == 2  # no --first-stage: refused
    assert (
        main(
            [
                "train",
                "imagebart",
                "--first-stage",
                str(tiny_model_path),
                "--out",
                str(out),
                *tiny,
                *common,
                "--stop-at",
                "2",
            ]
        )
        == 0
    )
    assert json.loads((out / "run.json").read_text())["step"] == 2
    assert main(["train", "imagebart", "--out", str(out), "--resume", *common[:2], "--device", "cpu", "--quiet"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["step"] == 4 and run["stage"] == "imagebart"
    assert [h["step"] for h in run["history"]] == [2, 4] and all(h["val_loss"] > 0 for h in run["history"])
    assert (out / "samples" / "step_0000004.png").exists()

    cfg = ImageBARTTrainConfig(steps=4, batch_size=2, val_size=4, val_every=2, sample_every=0, token_pool=8)
    arch = dict(n_embd=32, n_head=2, n_enc_layer=1, n_dec_layer=1, n_stages=2)
    straight = train(cfg, arch, tmp_path / "straight", first_stage=str(tiny_model_path), device="cpu", quiet=True)
    from napari_ilat.train.common import weights_digest
    from napari_ilat.train.imagebart import model_from_run

    assert weights_digest(model_from_run(out)[0].bart) == straight["weights_sha256"]
    # the pool filled by a data worker as first drawn (2.5 passes): the weights of the pool
    # encoded up front
    runs = [
        train(
            dataclasses.replace(cfg, steps=10, workers=w, val_every=0),
            arch,
            tmp_path / f"pool{w}",
            first_stage=str(tiny_model_path),
            device="cpu",
            quiet=True,
        )
        for w in (0, 1)
    ]
    assert runs[0]["weights_sha256"] == runs[1]["weights_sha256"]
    assert not (tmp_path / "pool1" / "token_pool.safetensors").exists()

    assert main(["train", "export", "--transformer", str(out), "--out", str(tmp_path / "ib")]) == 0
    model = load_model(tmp_path / "ib.json")
    assert model.config.imagebart.n_stages == 2 and model.config.name == "ib"
    assert model.vqgan.code_colours.shape == (model.config.vqgan.n_embed, 3)  # the palette's table, exported
    img, mask = _image_and_mask()
    res = edit(img, mask, model=str(tmp_path / "ib.json"), mode="imagebart", seed=0)
    assert res.shape == img.shape and not np.array_equal(res[mask], img[mask])


def test_train_init_continues_an_imagebart_model(tiny_ib, tiny_ib_path, tiny_model_path, tmp_path, capsys):
    """`train imagebart --init MODEL`: the model's stages and first stage are the starting
    point, its architecture is kept (a conflicting --n-embd is ignored); with a zero learning
    rate the run ends where it began; the export names what it continued. An iLAT model
    is refused with a message."""
    import json
    from pathlib import Path

    from napari_ilat import load_model
    from napari_ilat.cli import main
    from napari_ilat.train.common import load_weights

    out = tmp_path / "cont"
    args = ["train", "imagebart", "--out", str(out), "--steps", "2", "--batch-size", "2", "--val-size", "4"]
    args += ["--val-every", "2", "--sample-every", "0", "--device", "cpu", "--quiet", "--token-pool", "4"]
    args += ["--lr", "0", "--n-embd", "48", "--export", str(tmp_path / "cont_model")]
    assert main([*args, "--init", str(tiny_ib_path)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == tiny_ib.bart.config.to_dict()  # the architecture of --init
    start = tiny_ib.bart.state_dict()
    w = load_weights(out, "imagebart")
    assert w.keys() == start.keys()
    for k, v in start.items():
        assert torch.equal(w[k], v), k
    fs = load_weights(out, "first_stage")
    assert torch.equal(fs["quantize.embedding.weight"], tiny_ib.vqgan.state_dict()["quantize.embedding.weight"])
    meta = json.loads((tmp_path / "cont_model.json").read_text())
    src = json.loads(Path(tiny_ib_path).read_text())
    assert meta["training"]["started_from"]["model"] == Path(tiny_ib_path).name
    assert meta["training"]["started_from"]["sha256"] == {k: f["sha256"] for k, f in src["files"].items()}
    assert load_model(tmp_path / "cont_model.json").config.imagebart == tiny_ib.config.imagebart
    capsys.readouterr()
    args[args.index(str(out))] = str(tmp_path / "refused")
    assert main([*args, "--init", str(tiny_model_path)]) == 2
    assert "not an ImageBART model" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()  # nothing written for a refused start


def test_train_val_edits_keep_and_export_the_best_step(tiny_ib_path, tmp_path, monkeypatch):
    """`train imagebart --val-edits N`: upper-half completions of validation patches scored
    during training; --export writes the best step's stages (scripted scores: not the last)."""
    import json

    from napari_ilat import load_model
    from napari_ilat.cli import main
    from napari_ilat.train import common as C

    seen = []

    def scripted(model, cases, mode, device):
        assert mode == "imagebart" and len(cases) == 2 and cases[0][3][: cases[0][3].shape[0] // 2].all()
        seen.append({k: v.clone() for k, v in model.bart.state_dict().items()})
        return [9.0, 11.0, 10.0][len(seen) - 1]

    monkeypatch.setattr(C, "validation_edit_psnr", scripted)
    out = tmp_path / "run"
    args = ["train", "imagebart", "--out", str(out), "--init", str(tiny_ib_path), "--steps", "3"]
    args += ["--batch-size", "2", "--val-size", "4", "--val-every", "1", "--sample-every", "0", "--device", "cpu"]
    args += ["--quiet", "--token-pool", "4", "--lr", "1e-2", "--val-edits", "2", "--export", str(tmp_path / "m")]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert [h["edit_psnr"] for h in run["history"]] == [9.0, 11.0, 10.0] and run["best"]["step"] == 2
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["training"]["exported_step"] == 2
    exported = load_model(tmp_path / "m.json").bart.state_dict()
    assert all(torch.allclose(exported[k], v.half().float()) for k, v in seen[1].items())
    assert any(not torch.allclose(exported[k], v.half().float()) for k, v in seen[2].items())
    # unscripted: the live stages edit, and the exported best scores the same again
    monkeypatch.undo()
    args[args.index(str(out))] = str(tmp_path / "real")
    args[args.index(str(tmp_path / "m"))] = str(tmp_path / "real_m")
    assert main(args) == 0
    best = C.read_best(tmp_path / "real")
    from napari_ilat.evaluation.imagebart import natural_cases

    cases = list(natural_cases("upper_half", 2, 32, split="validation"))
    again = C.validation_edit_psnr(load_model(tmp_path / "real_m.json"), cases, "imagebart", "cpu")
    assert np.isfinite(best["edit_psnr"]) and again == pytest.approx(best["edit_psnr"], abs=0.05)
    with pytest.raises(ValueError, match="needs --data natural"):
        from napari_ilat.train.imagebart import ImageBARTTrainConfig, train

        train(ImageBARTTrainConfig(data="pose", val_edits=2), {}, tmp_path / "x", first_stage=str(tiny_ib_path))


# ---------------------------------------------------------------- widget (napari, under Xvfb)


def _needs_display():
    import os
    import sys

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("needs a display (run under xvfb-run)")


@pytest.fixture
def photo_widget(make_napari_viewer, tiny_ib, monkeypatch):
    """The photo sample, the dock widget (synchronous) with the tiny ImageBART model, and
    the notifications it sends."""
    _needs_display()
    import napari_ilat.plugin.widget as w

    got = {"error": [], "warning": [], "info": []}
    for kind in got:
        monkeypatch.setattr(w, f"show_{kind}", got[kind].append)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ilat", "photo")
    widget = w.ILATWidget(viewer, synchronous=True)
    viewer.window.add_dock_widget(widget)
    widget.add_model(tiny_ib, "tiny imagebart")
    widget.seed.value = 3
    return viewer, widget, got


@pytest.mark.gui
def test_widget_generates_in_imagebart_mode(photo_widget):
    viewer, widget, got = photo_widget
    assert "imagebart" in widget.mode.choices
    n = len(viewer.layers)
    assert widget.mode.value == "imagebart"  # picking an ImageBART model picks its mode
    assert widget.model.choices[-1] == "load file..."  # an added model goes before it
    widget.mode.value = "ilat"  # and an iLAT mode takes the model back to 'auto' (bundled iLAT)
    assert widget.model.value == "auto" and "does not run this mode" in widget.status.value
    widget.model.value = widget._models["tiny imagebart"]  # the ImageBART model picked again
    assert widget.mode.value == "imagebart" and "mode set to ImageBART" in widget.status.value
    widget.model.value = "natural"  # a bundled iLAT model: back to mode iLAT
    assert widget.mode.value == "ilat"
    widget.mode.value = "imagebart"
    assert widget.model.value == "auto"  # auto: the bundled ImageBART model for this mode
    widget.model.value = widget._models["tiny imagebart"]
    widget.generate()
    assert len(viewer.layers) == n + 1, got
    assert widget.last_result.name.endswith("[ImageBART seed 3]")
    assert widget.progress.value == widget.progress.max > 0


@pytest.mark.gui
def test_widget_cancel_in_imagebart_mode_adds_no_layer(photo_widget, monkeypatch):
    import napari_ilat.engine.editing as edit_mod

    viewer, widget, got = photo_widget
    real = edit_mod.edit_with_info
    seen = []

    def cancelling(*args, progress=None, cancel=None, **kw):
        def p(done, total):
            seen.append(done)
            progress(done, total)
            if done == 3:  # the user presses Cancel here
                cancel.set()

        return real(*args, progress=p, cancel=cancel, **kw)

    monkeypatch.setattr(edit_mod, "edit_with_info", cancelling)
    widget.mode.value = "imagebart"
    n = len(viewer.layers)
    widget.generate()
    assert len(viewer.layers) == n and seen[-1] == 3
    assert widget.status.value.startswith("cancelled") and got["error"] == []
    assert widget.generate_btn.enabled and not widget.cancel_btn.enabled


# ---------------------------------------------------------------- benchmarks


def test_bench_compare_hooks_and_speed(tiny_ib, tiny_model):
    from napari_ilat.evaluation import imagebart as ev

    mask = ev.upper_half_mask(32)
    assert mask[:16].all() and not mask[16:].any()
    res = ev.compare(tiny_ib, tiny_model, tasks=("upper_half", "box"), n=2, keep_examples=1)
    assert set(res) == {"upper_half", "box"}
    for r in res.values():
        assert r["n"] == 2 and {"imagebart", "ilat", "taming", "biharmonic"} <= set(r["mean"])
        assert all(np.isfinite(v) for v in r["mean"]["imagebart"].values())
    md = ev.compare_markdown(res, "tiny_ib", "tiny")
    assert "Upper-half completion" in md and "| imagebart |" in md
    with pytest.raises(ValueError, match="not an ImageBART model"):
        ev.compare(tiny_model, None, n=1)
    rows = ev.sampling_speed(tiny_ib, stages=(2, 3), fractions=(0.1, 0.5), repeats=1)
    assert [(r["stages"], r["masked_tokens"]) for r in rows] == [(2, 6), (2, 32), (3, 6), (3, 32)]
    assert "| 3 | 32 (50.0%)" in ev.speed_markdown(rows)


def test_cli_bench_imagebart(tiny_ib_path, tmp_path, capsys):
    from napari_ilat.cli import main

    out = tmp_path / "ib.md"
    args = ["bench", "imagebart", "--model", str(tiny_ib_path), "--ilat-model", "none", "--tasks", "upper_half"]
    assert main([*args, "--n", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Upper-half completion" in text and "| imagebart |" in text and "| biharmonic |" in text
    assert main([*args, "--n", "1", "--blend", "both", "--out", str(out)]) == 0
    assert "| imagebart (alpha) |" in out.read_text()


def test_train_eval_points_an_imagebart_model_to_its_bench(tiny_ib_path, capsys):
    from napari_ilat.cli import main

    assert main(["train", "eval", "--model", str(tiny_ib_path), "--n-recon", "1"]) == 2
    assert "bench imagebart" in capsys.readouterr().err


# ---------------------------------------------------------------- conditions (shared map encoders)


@pytest.mark.parametrize("cond", ["sketch", "pose"])
def test_conditional_stages_follow_their_condition(cond):
    torch.manual_seed(0)
    model = ImageBARTModel.tiny(resolution=32, cond=cond).double()
    tokens, known = _case(model)
    if cond == "sketch":
        a, b = torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)
    else:
        a = torch.rand(1, 18, 3)
        a[..., 2] = 1
        b = a.clone()
        b[..., :2] = 1 - b[..., :2]
    kw = dict(samples=2, repeats=2, options=SamplingOptions(greedy=True))  # random weights: near-uniform logits
    out_a, chain = sample_imagebart(model.bart, tokens, known, a, generator=_gen(0), return_chain=True, **kw)
    for _, x in chain:
        assert torch.equal(x[:, known], tokens[known].expand(2, -1))
    out_b = sample_imagebart(model.bart, tokens, known, b, generator=_gen(0), **kw)
    uncached = sample_imagebart(model.bart, tokens, known, a, generator=_gen(0), cache=False, **kw)
    plain = sample_imagebart(model.bart, tokens, known, None, generator=_gen(0), **kw)  # condition dropped
    assert torch.equal(out_a, uncached) and not torch.equal(out_a, out_b) and plain.shape == out_a.shape


def test_sketch_imagebart_edit_and_training(tiny_model_path, tmp_path):
    """A sketch-conditioned ImageBART: edit() with and without strokes; `train imagebart
    --cond sketch` on a sketch-capable first stage, exported and loaded."""
    from napari_ilat import ILATModel, edit, load_model, save_model
    from napari_ilat.cli import main

    model = ImageBARTModel.tiny(resolution=32, cond="sketch")
    img, mask = _image_and_mask()
    strokes = np.zeros(mask.shape, np.float32)
    strokes[10:12, 10:30] = 1
    with_strokes = edit(img, mask, sketch=strokes, model=model, mode="imagebart", seed=0)
    without = edit(img, mask, model=model, mode="imagebart", seed=0)
    assert with_strokes.shape == without.shape == img.shape and not np.array_equal(with_strokes, without)

    fs = save_model(ILATModel.tiny(resolution=32, cond="sketch"), tmp_path / "fs")
    out = tmp_path / "run"
    args = ["train", "imagebart", "--first-stage", str(fs), "--out", str(out), "--cond", "sketch", "--steps", "2"]
    args += ["--batch-size", "2", "--val-size", "2", "--val-every", "2", "--sample-every", "0", "--device", "cpu"]
    args += ["--n-embd", "32", "--n-head", "2", "--n-enc-layer", "1", "--n-dec-layer", "1", "--n-stages", "2"]
    assert main([*args, "--quiet", "--export", str(tmp_path / "skb")]) == 0
    loaded = load_model(tmp_path / "skb.json")
    assert loaded.cond == "sketch"
    assert edit(img, mask, sketch=strokes, model=loaded, mode="imagebart", seed=0).shape == img.shape


# ---------------------------------------------------------------- DDP


def _ddp_worker(rank, world, port, root, first_stage, results):
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from napari_ilat.train.imagebart import ImageBARTTrainConfig, train

    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # sketch-conditioned with condition dropout: some steps leave the map encoders unused
        cfg = ImageBARTTrainConfig(
            steps=3, batch_size=2, val_size=2, val_every=3, sample_every=0, cond="sketch", cond_dropout=0.5
        )
        arch = dict(n_embd=32, n_head=2, n_enc_layer=1, n_dec_layer=1, n_stages=2)
        rec = train(cfg, arch, root / "ib", first_stage=first_stage, device="cpu", quiet=True)
        results[rank] = rec["weights_sha256"]
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_two_process_ddp_ranks_stay_identical(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    from napari_ilat import ILATModel, save_model

    fs = save_model(ILATModel.tiny(resolution=32, cond="sketch"), tmp_path / "fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(2, port, tmp_path, str(fs), results), nprocs=2, join=True)
        results = dict(results)
    assert results[0] == results[1]  # bit-identical weights on both ranks
    run = json.loads((tmp_path / "ib" / "run.json").read_text())
    assert run["world_size"] == 2 and run["step"] == 3


def test_guidance_is_refused_where_there_is_no_unconditional_branch():
    """ImageBART samples without classifier-free guidance: 1 (off) works, another scale
    with a sketch is a clear error, and without a condition the scale changes nothing."""
    from napari_ilat import edit

    model = ImageBARTModel.tiny(resolution=32, cond="sketch", seed=2)
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    sketch = np.zeros((32, 32), np.float32)
    sketch[10:18, 12] = 1
    kw = dict(model=model, mode="imagebart", seed=1)
    assert np.array_equal(edit(img, mask, sketch=sketch, guidance=1.0, **kw), edit(img, mask, sketch=sketch, **kw))
    with pytest.raises(ValueError, match="guidance is not available for mode imagebart"):
        edit(img, mask, sketch=sketch, guidance=2.0, **kw)
    assert np.array_equal(edit(img, mask, guidance=3.0, **kw), edit(img, mask, **kw))
