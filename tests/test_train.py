"""Training: a few steps of each stage on tiny 32 px models, exact resume, two-process DDP
(gloo on CPU), taming checkpoints as first stage, and the exported two-file model format."""

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_ilat import edit, load_model
from napari_ilat.engine.palette import code_colours
from napari_ilat.engine.vqgan import VQGANConfig, VQModel
from napari_ilat.train import common as C
from napari_ilat.train.export import export
from napari_ilat.train.first_stage import load_first_stage_weights
from napari_ilat.train.stage1 import Stage1Config
from napari_ilat.train.stage1 import train as train1
from napari_ilat.train.stage2 import Stage2Config
from napari_ilat.train.stage2 import train as train2

TINY_VQ = VQGANConfig.tiny(32)
TINY_TF = dict(n_layer=2, n_head=2, n_embd=32)
QUIET = dict(log_every=1, val_every=0, sample_every=0, save_every=1000, val_size=4)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models on a shared CPU: one thread avoids OpenMP spin-waiting against other jobs
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def s1cfg(**kw):
    # disc_start 2 and restart_every 2: the adversarial and codebook-restart paths run too
    d = dict(data="pose", steps=4, batch_size=2, mask_prob=0.5, disc_start=2, restart_every=2, **QUIET)
    d.update(kw)
    return Stage1Config(**d)


def s2cfg(**kw):
    d = dict(data="pose", steps=4, batch_size=2, cond_dropout=0.5, causal_frac=0.3, **QUIET)
    d.update(kw)
    return Stage2Config(**d)


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vq")
    rec = train1(s1cfg(steps=2, val_every=2, sample_every=2), TINY_VQ, out, device="cpu", quiet=True)
    return out, rec


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_stage1_trains_and_writes_a_checkpoint(stage1_run):
    out, rec = stage1_run
    assert rec["step"] == 2 and C.has_checkpoint(out)
    run = json.loads((out / "run.json").read_text())
    assert run["stage"] == "vqgan" and VQGANConfig.from_dict(run["model"]) == TINY_VQ
    assert np.isfinite(run["history"][-1]["psnr"])
    assert (out / "samples" / "step_0000002.png").exists()
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    # nothing in a run directory is a pickle
    for f in out.iterdir():
        if f.is_file():
            assert f.read_bytes()[:2] not in (b"\x80\x04", b"\x80\x02") and f.read_bytes()[:2] != b"PK"


@pytest.mark.parametrize("reuse, decoder_only", [(1, False), (3, False), (1, True)])
def test_stage1_resume_matches_uninterrupted(tmp_path, reuse, decoder_only):
    """Also with batches reused (--reuse 3): the run stops inside a batch's cycle of steps;
    and a decoder-only run, whose optimiser holds the decoder's parameters only."""
    a, b = tmp_path / "a", tmp_path / "b"
    torch.manual_seed(5)
    init = {"init_weights": VQModel(TINY_VQ).state_dict()} if decoder_only else {}
    cfg = s1cfg(reuse=reuse, decoder_only=decoder_only)
    train1(cfg, TINY_VQ, a, device="cpu", quiet=True, **init)
    train1(cfg, TINY_VQ, b, device="cpu", quiet=True, stop_at=2, **init)
    assert json.loads((b / "run.json").read_text())["step"] == 2
    rec = train1(cfg, TINY_VQ, b, device="cpu", quiet=True, resume=True)
    assert rec["step"] == 4
    assert_same(weights(a), weights(b))  # vqgan and discriminator, bit for bit


def test_hue_loss_measures_the_chroma_direction_of_coloured_pixels():
    from skimage import data as skdata

    from napari_ilat.data.natural import rotate_hue
    from napari_ilat.train.losses import hue_loss

    img = skdata.astronaut()[::4, ::4]

    def t(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1

    x = t(img)
    assert hue_loss(x, x).item() < 1e-3
    # a darker copy keeps every pixel's chroma direction; a hue rotation of 30 degrees turns it
    # by about 30 degrees (a unit-vector distance of 2 sin 15 = 0.52), 90 degrees by about 1.41
    assert hue_loss(t((img * 0.8).astype(np.uint8)), x).item() < 0.05
    assert 0.4 < hue_loss(t(rotate_hue(img, 30)), x).item() < 0.6
    assert 1.2 < hue_loss(t(rotate_hue(img, 90)), x).item() < 1.5
    # only coloured reference pixels count: nothing to say about a grey reference
    grey = t(np.repeat(img.mean(-1, keepdims=True), 3, -1).astype(np.uint8))
    assert hue_loss(x, grey).item() == 0
    # the gradient stays finite where the decoded chroma is zero
    flat = grey.clone().requires_grad_(True)
    hue_loss(flat, x).backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0


def test_stage1_hue_weight_adds_the_hue_loss(tmp_path):
    runs = {}
    for w in (0.0, 1.0):
        out = tmp_path / f"h{w}"
        train1(s1cfg(steps=2, disc_start=100, hue_weight=w), TINY_VQ, out, device="cpu", quiet=True)
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        runs[w] = (weights(out), log)
    assert all(r["hue"] == 0 for r in runs[0.0][1]) and all(r["hue"] > 0 for r in runs[1.0][1])
    assert [r["loss"] > r["l1"] + r["structural"] for r in runs[1.0][1]] == [True, True]
    first = runs[0.0][1][0], runs[1.0][1][0]  # the same first batch and weights: the term alone differs
    assert first[1]["loss"] == pytest.approx(first[0]["loss"] + first[1]["hue"], rel=1e-5)
    assert any(not torch.equal(runs[0.0][0][k], runs[1.0][0][k]) for k in runs[0.0][0])


def test_cli_resume_without_steps_keeps_the_runs_schedule(tmp_path):
    """`--resume` without --steps goes on to the run's own step count with its own learning
    rate schedule (it used to take the default 20000 steps, stretching the cosine decay)."""
    from napari_ilat.cli import main

    tiny = ["--resolution", "32", "--ch", "32", "--ch-mult", "1,2,2", "--attn-resolutions", "8"]
    tiny += ["--z-channels", "16", "--embed-dim", "16", "--n-embed", "64", "--data", "pose"]
    common = tiny + ["--steps", "4", "--batch-size", "2", "--lr", "1e-3", "--warmup", "1", "--threads", "1"]
    common += ["--val-every", "0", "--sample-every", "0", "--disc-start", "100", "--log-every", "1", "--quiet"]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert main(["train", "vqgan", "--out", whole] + common) == 0
    assert main(["train", "vqgan", "--out", parts, "--stop-at", "2"] + common) == 0
    # --stop-at 4 stops a resumed run here whatever it believes its length to be
    assert main(["train", "vqgan", "--out", parts, "--resume", "--stop-at", "4", "--quiet"]) == 0
    run = json.loads((tmp_path / "parts" / "run.json").read_text())
    assert run["step"] == 4 and run["train"]["steps"] == 4
    lrs = [
        [json.loads(line)["lr"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        for d in ("whole", "parts")
    ]
    assert lrs[0] == lrs[1] and len(lrs[0]) == 4
    assert_same(weights(tmp_path / "whole"), weights(tmp_path / "parts"))


def test_decoder_only_steps_decode_as_an_edit_does(tmp_path, monkeypatch):
    """Masked steps feed the decoder the codes inside the token mask and the two-stream
    encoder's continuous latents outside it (what edit() decodes); unmasked steps the codes."""
    from napari_ilat.train import stage1

    torch.manual_seed(0)
    vq = VQModel(TINY_VQ).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[:, :, 4:14, 6:20] = True
    z, idx = stage1._frozen_codes(vq, x, mask)
    with torch.no_grad():
        z_hat = vq.encode(x, mask)
        z_q, idx_ref, _ = vq.quantize_latents(z_hat)
    inside = vq.token_mask(mask)[:, None].expand_as(z)
    assert torch.equal(idx, idx_ref) and torch.equal(z[inside], z_q[inside]) and torch.equal(z[~inside], z_hat[~inside])
    assert torch.equal(stage1._frozen_codes(vq, x, None)[0], vq.quantize_latents(vq.encode(x))[0])

    seen, frozen_codes = [], stage1._frozen_codes

    def spy(vq, x, mask):
        seen.append(mask is not None)
        return frozen_codes(vq, x, mask)

    monkeypatch.setattr(stage1, "_frozen_codes", spy)
    torch.manual_seed(1)
    init = VQModel(TINY_VQ).state_dict()
    train1(
        s1cfg(steps=2, decoder_only=True, mask_prob=1.0), TINY_VQ, tmp_path, device="cpu", quiet=True, init_weights=init
    )
    assert seen == [True, True]


def test_decoder_only_keeps_every_code_so_the_transformer_stays_valid(tmp_path, tiny_pose_model, capsys):
    from napari_ilat import save_model
    from napari_ilat.cli import main

    base = save_model(tiny_pose_model, tmp_path / "base", split=True)
    run, full = tmp_path / "dec", tmp_path / "full"
    common = ["--data", "pose", "--steps", "3", "--batch-size", "2", "--lr", "1e-2", "--warmup", "1"]
    common += ["--val-size", "2", "--val-every", "3", "--sample-every", "0", "--quiet"]
    assert main(["train", "vqgan", "--out", str(tmp_path / "x"), "--decoder-only"] + common) == 2
    assert "--init" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "vqgan",
                "--out",
                str(run),
                "--init",
                str(base),
                "--decoder-only",
                "--reuse",
                "2",
                "--hue-weight",
                "0.5",
            ]
            + common
        )
        == 0
    )
    recorded = json.loads((run / "run.json").read_text())["train"]
    assert recorded["decoder_only"] and recorded["reuse"] == 2 and recorded["restart_every"] == 0
    assert recorded["hue_weight"] == 0.5
    before, after = load_model(base).vqgan.state_dict(), C.load_weights(run, "vqgan")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("decoder.") for k in changed)
    assert all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), changed

    def export_with(first_stage, out):
        args = ["train", "export", "--transformer", str(base), "--first-stage", str(first_stage)]
        return main(args + ["--dtype", "float32", "--out", str(out)])

    new_path = tmp_path / "m" / "new"
    assert export_with(tmp_path / "nowhere", new_path) == 2
    assert "not a first-stage run directory" in capsys.readouterr().err
    assert export_with(run, new_path) == 0
    old, new = load_model(base), load_model(new_path.with_suffix(".json"))
    assert_same(new.transformer.state_dict(), old.transformer.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # the same codes, decoded otherwise
        codes = [m.vqgan.quantize_latents(m.vqgan.encode(x))[1] for m in (old, new)]
        assert torch.equal(*codes)
        assert not torch.equal(old.vqgan.decode_tokens(codes[0]), new.vqgan.decode_tokens(codes[0]))
    assert np.array_equal(new.vqgan.code_colours, code_colours(new.vqgan))  # decoded again
    training = json.loads(new_path.with_suffix(".json").read_text())["training"]
    assert training["decoder_only"] and training["steps"] == 3 and training["started_from"]["model"] == "base.json"

    # an ImageBART model on the same first stage takes the same decoder, its stages untouched
    from napari_ilat.engine.imagebart import ImageBARTModel, save_imagebart

    bart = ImageBARTModel.tiny(resolution=32)
    bart.vqgan.load_state_dict(tiny_pose_model.vqgan.state_dict())
    bart_path = save_imagebart(bart, tmp_path / "bart")
    args = ["train", "export", "--transformer", str(bart_path), "--first-stage", str(run), "--dtype", "float32"]
    assert main(args + ["--out", str(tmp_path / "m" / "bart")]) == 0
    new_bart = load_model(tmp_path / "m" / "bart.json")
    assert_same(new_bart.bart.state_dict(), load_model(bart_path).bart.state_dict())
    assert_same(new_bart.vqgan.state_dict(), new.vqgan.state_dict())

    # a first stage whose encoder trained too gives other codes: refused
    assert main(["train", "vqgan", "--out", str(full), "--init", str(base)] + common) == 0
    assert export_with(full, tmp_path / "m" / "bad") == 2
    assert "encoder or codebook differ" in capsys.readouterr().err
    assert not (tmp_path / "m" / "bad.json").exists()


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_stage2_resume_matches_uninterrupted(stage1_run, tmp_path):
    vq_dir, _ = stage1_run
    a, b = tmp_path / "a", tmp_path / "b"
    rec = train2(s2cfg(val_every=4), TINY_TF, a, first_stage=vq_dir, device="cpu", quiet=True)
    assert rec["history"][-1]["perplexity"] > 1 and "perplexity_uncond" in rec["history"][-1]
    train2(s2cfg(val_every=4), TINY_TF, b, first_stage=vq_dir, device="cpu", quiet=True, stop_at=3)
    train2(s2cfg(val_every=4), TINY_TF, b, device="cpu", quiet=True, resume=True)
    assert_same(weights(a), weights(b))


def test_stop_on_signal_sets_the_flag_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with C.stop_on_signal() as request:
        assert not C.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)  # handled, not fatal
        assert C.stop_requested()
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert request.stopped and not C.stop_requested()  # a stop never leaks into later runs
    with C.stop_on_signal() as request:
        pass
    assert not request.stopped


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_ctrl_c_checkpoints_and_resumes(stage1_run, tmp_path):
    """Ctrl-C at the terminal (SIGINT to the whole process group, data workers included):
    the step finishes, a checkpoint is written although no periodic save was due, the
    command exits 130 and --resume goes on from that step."""
    from napari_ilat.cli import main

    vq_dir, _ = stage1_run
    out = tmp_path / "tf"
    cmd = [sys.executable, "-m", "napari_ilat.cli", "train", "transformer", "--out", str(out)]
    cmd += ["--first-stage", str(vq_dir), "--data", "pose", "--steps", "100000", "--batch-size", "2"]
    cmd += ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--val-every", "0", "--sample-every", "0"]
    cmd += ["--save-every", "100000", "--log-every", "1", "--workers", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the run did not stop after Ctrl-C") from None
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    step = json.loads((out / "run.json").read_text())["step"]
    assert step >= 3 and step == len(log.read_text().splitlines())  # saved at the step it stopped
    assert main(["train", "transformer", "--out", str(out), "--resume", "--steps", str(step + 2), "--quiet"]) == 0
    assert json.loads((out / "run.json").read_text())["step"] == step + 2


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_stage2_token_pool_and_sketch(stage1_run, tmp_path):
    vq_dir, _ = stage1_run
    out = tmp_path / "nat"
    rec = train2(
        s2cfg(data="natural", token_pool=4, sample_every=2), TINY_TF, out, first_stage=vq_dir, device="cpu", quiet=True
    )
    assert rec["step"] == 4 and (out / "token_pool.safetensors").exists()
    assert json.loads((out / "run.json").read_text())["model"]["cond"] == "sketch"
    assert (out / "samples" / "step_0000002.png").exists()


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_stage2_pool_filled_by_workers_trains_as_the_pool_made_up_front(stage1_run, tmp_path):
    """token_pool with workers: the items are made by a worker process as first drawn, not up
    front; the same batches, so the same weights (3 passes over a pool of 4)."""
    vq_dir, _ = stage1_run
    recs = [
        train2(s2cfg(token_pool=4, steps=6, workers=w), TINY_TF, tmp_path / f"w{w}", first_stage=vq_dir, device="cpu")
        for w in (0, 1)
    ]
    assert (tmp_path / "w0" / "token_pool.safetensors").exists()
    assert not (tmp_path / "w1" / "token_pool.safetensors").exists()
    assert recs[0]["weights_sha256"] == recs[1]["weights_sha256"]
    assert_same(weights(tmp_path / "w0"), weights(tmp_path / "w1"))


def test_images_folder_source(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    rec = train1(s1cfg(data=str(folder), steps=1), TINY_VQ, tmp_path / "run", device="cpu", quiet=True)
    assert rec["step"] == 1


def test_images_folder_reads_16_bit_and_float_images_by_their_range(tmp_path):
    """Microscopy-style files: 12-bit data in 16-bit TIFF / PNG and a float TIFF train as
    what they show (scaled from their own min..max), not clipped to white by PIL."""
    import tifffile
    from PIL import Image

    from napari_ilat.train.data import ImageFolder

    rng = np.random.default_rng(0)
    data = {"a16.tif": (rng.random((30, 40)) * 4000 + 500).astype(np.uint16)}
    data["b16.png"] = data["a16.tif"][::-1].copy()
    data["cf.tif"] = rng.random((30, 40)).astype(np.float32) * 7 - 2
    tifffile.imwrite(tmp_path / "a16.tif", data["a16.tif"])
    Image.fromarray(data["b16.png"]).save(tmp_path / "b16.png")
    tifffile.imwrite(tmp_path / "cf.tif", data["cf.tif"])
    folder = ImageFolder(tmp_path, "train")
    for i, f in enumerate(folder.files):
        rgb = folder.image(i)
        assert rgb.dtype == np.uint8 and rgb.shape == (30, 40, 3), f.name
        assert rgb.min() == 0 and rgb.max() == 255, f.name  # the whole range, not clipped white
        assert np.corrcoef(rgb[..., 0].ravel(), data[f.name].ravel())[0, 1] > 0.999, f.name


def test_images_folder_takes_every_page_of_a_stack_and_skips_unreadable_files(tmp_path):
    import tifffile
    from PIL import Image

    from napari_ilat.train.data import ImageFolder

    stack = np.stack([np.full((20, 24), v, np.uint16) for v in (100, 900, 4000)])
    stack[:, :, :5] = 0  # each page spans 0..its value
    tifffile.imwrite(tmp_path / "zstack.tif", stack, photometric="minisblack")  # 3 pages (z-slices)
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "flat.png")
    (tmp_path / "notes.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match=r"1 files under .* cannot be read and are left out: notes.png"):
        folder = ImageFolder(tmp_path, "train")
    assert [(p.name, k) for p, k in folder.items] == [
        ("flat.png", 0),
        ("zstack.tif", 0),
        ("zstack.tif", 1),
        ("zstack.tif", 2),
    ]
    assert [f.name for f in folder.files] == ["flat.png", "zstack.tif"]
    for i in (1, 2, 3):  # every page read, each scaled by its own range
        page = folder.image(i)
        assert page.shape == (20, 24, 3) and page[0, 0, 0] == 0 and page[0, -1, 0] == 255
    for f in ("flat.png", "zstack.tif"):
        (tmp_path / f).unlink()
    with pytest.raises(ValueError, match="no readable images"), pytest.warns(UserWarning):
        ImageFolder(tmp_path, "train")


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_export_two_files_half_precision_and_checks(stage1_run, tmp_path):
    vq_dir, _ = stage1_run
    run = tmp_path / "tf"
    train2(s2cfg(steps=1), TINY_TF, run, first_stage=vq_dir, device="cpu", quiet=True)
    paths = export(run, tmp_path / "m" / "tiny")
    cfg_path, s1, s2 = paths
    assert s1.name == "tiny.stage1.safetensors" and s2.name == "tiny.stage2.safetensors"
    assert load_file(str(s1))["quantize.embedding.weight"].dtype == torch.float16
    model = load_model(cfg_path)
    assert next(model.parameters()).dtype == torch.float32
    # the context palette's colour table is exported in the JSON, computed before the float16
    # cast: within a level or two of the loaded first stage's own colours
    table = model.vqgan.code_colours
    assert table.shape == (64, 3) and table.dtype == np.uint8
    assert np.abs(table.astype(int) - code_colours(model.vqgan).astype(int)).max() <= 2
    ref = C.load_weights(run, "transformer")
    for k, v in model.transformer.state_dict().items():
        assert torch.equal(v, ref[k].half().float()), k
    img = np.random.default_rng(0).random((32, 32, 3))
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    pose = np.full((18, 3), -1.0)
    out = edit(img, mask, pose=pose, model=cfg_path, seed=0)
    assert out.shape == img.shape and np.array_equal(
        out[~mask & (np.arange(32)[:, None] < 4)], img[~mask & (np.arange(32)[:, None] < 4)]
    )

    # a truncated, a modified, and a pickled stage file: clear errors, no code runs
    good = s2.read_bytes()
    s2.write_bytes(good[:500])
    with pytest.raises(ValueError, match="checksum"):
        load_model(cfg_path)
    data = bytearray(good)
    data[-1] ^= 0xFF
    s2.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_model(cfg_path)
    s2.write_bytes(good)
    s1.write_bytes(pickle.dumps({"x": Boom()}, protocol=4))
    with pytest.raises(ValueError, match="pickle"):
        load_model(cfg_path)
    meta = json.loads(cfg_path.read_text())
    meta["files"]["stage1"]["file"] = "../elsewhere.safetensors"
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="directory"):
        load_model(cfg_path)


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle code ran')",))


def test_taming_checkpoint_as_first_stage(tmp_path):
    torch.manual_seed(0)
    vq = VQModel(TINY_VQ)
    sd = {k: v.clone() for k, v in vq.state_dict().items()}
    sd["loss.discriminator.main.0.weight"] = torch.zeros(2)  # taming ckpts carry the loss nets
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": sd, "global_step": 5}, ckpt)
    cfg, loaded = load_first_stage_weights(ckpt, {"resolution": 32})
    assert cfg == TINY_VQ
    assert_same(loaded, vq.state_dict())
    st = tmp_path / "vq.safetensors"
    from safetensors.torch import save_file

    save_file(vq.state_dict(), str(st))
    assert load_first_stage_weights(st, {"resolution": 32})[0] == TINY_VQ
    rec = train2(
        s2cfg(steps=1),
        TINY_TF,
        tmp_path / "tf",
        first_stage=ckpt,
        first_stage_config={"resolution": 32},
        device="cpu",
        quiet=True,
    )
    assert rec["step"] == 1

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Boom()}))
    with pytest.raises(ValueError, match="weights_only"):
        load_first_stage_weights(evil)


def test_the_colour_table_a_first_stage_source_carries(tmp_path):
    """A run on a model's first stage takes that model's colour table (the same weights):
    an iLAT JSON's, an ImageBART JSON's, a stage-1 run's once stored; bare weights none."""
    from safetensors.torch import save_file

    from napari_ilat.train.first_stage import source_colours, store_colour_table

    for name in ("natural", "natural-imagebart"):
        assert np.array_equal(source_colours(name, 512), load_model(name).vqgan.code_colours), name
    with pytest.raises(ValueError, match="holds 512 colours, the codebook has 64"):
        source_colours("natural", 64)  # a table that is not this codebook's is refused
    train1(s1cfg(steps=1), TINY_VQ, tmp_path / "vq", device="cpu", quiet=True)
    assert source_colours(tmp_path / "vq", TINY_VQ.n_embed) is None
    store_colour_table(tmp_path / "vq")
    cfg, sd = load_first_stage_weights(tmp_path / "vq")
    vq = VQModel(cfg)
    vq.load_taming_state_dict(sd)
    assert np.array_equal(source_colours(tmp_path / "vq", TINY_VQ.n_embed), code_colours(vq.eval()))
    train1(s1cfg(steps=2), TINY_VQ, tmp_path / "vq", resume=True, device="cpu", quiet=True)
    assert source_colours(tmp_path / "vq", TINY_VQ.n_embed) is None  # trained on: the stale table is gone
    save_file(vq.state_dict(), str(tmp_path / "vq.safetensors"))
    assert source_colours(tmp_path / "vq.safetensors", TINY_VQ.n_embed) is None


def test_cli_train_and_eval(tmp_path, capsys):
    from napari_ilat.cli import main

    vq, tf = str(tmp_path / "vq"), str(tmp_path / "tf")
    common = [
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--val-size",
        "2",
        "--val-every",
        "1",
        "--sample-every",
        "0",
        "--quiet",
    ]
    assert (
        main(
            [
                "train",
                "vqgan",
                "--out",
                vq,
                "--data",
                "natural",
                "--resolution",
                "32",
                "--ch",
                "32",
                "--ch-mult",
                "1,2,2",
                "--attn-resolutions",
                "8",
                "--z-channels",
                "16",
                "--embed-dim",
                "16",
                "--n-embed",
                "64",
                "--plain",
            ]
            + common
        )
        == 0
    )
    assert json.loads((tmp_path / "vq" / "run.json").read_text())["train"]["plain"] is True
    # an existing run is never silently overwritten
    assert main(["train", "vqgan", "--out", vq] + common) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "transformer",
                "--out",
                tf,
                "--data",
                "natural",
                "--first-stage",
                vq,
                "--n-layer",
                "1",
                "--n-head",
                "2",
                "--n-embd",
                "32",
                "--thin-strokes",
                "0.5",
            ]
            + common
        )
        == 0
    )
    assert json.loads((tmp_path / "tf" / "run.json").read_text())["train"]["thin_strokes"] == 0.5
    assert main(["train", "transformer", "--out", tf, "--resume", "--steps", "2", "--quiet"]) == 0
    assert json.loads((tmp_path / "tf" / "run.json").read_text())["step"] == 2
    assert main(["train", "export", "--transformer", tf, "--out", str(tmp_path / "nat")]) == 0
    res_path = tmp_path / "res.json"
    assert (
        main(
            [
                "train",
                "eval",
                "--model",
                str(tmp_path / "nat.json"),
                "--n-recon",
                "2",
                "--n-ppl",
                "2",
                "--n-speed",
                "1",
                "--json",
                str(res_path),
            ]
        )
        == 0
    )
    res = json.loads(res_path.read_text())
    assert res["perplexity"]["masked_tokens"] > 1 and np.isfinite(res["reconstruction"]["psnr"])
    assert 5 < res["reconstruction"]["thumbnail_psnr"] < 60
    assert res["mode"] == "ilat"
    # the iLAT* ablation's model is evaluated on plain-encoder tokens, editing in mode ilat*
    assert (
        main(
            [
                "train",
                "eval",
                "--model",
                str(tmp_path / "nat.json"),
                "--n-recon",
                "0",
                "--n-ppl",
                "2",
                "--n-speed",
                "1",
                "--plain",
                "--json",
                str(res_path),
            ]
        )
        == 0
    )
    plain = json.loads(res_path.read_text())
    assert plain["mode"] == "ilat*"
    # a first-stage run directory: its reconstruction only, on the run's own data
    assert main(["train", "eval", "--model", vq, "--n-recon", "2", "--json", str(res_path)]) == 0
    first = json.loads(res_path.read_text())
    assert first["stage"] == "vqgan" and first["data"] == "natural" and "perplexity" not in first
    assert np.isfinite(first["reconstruction"]["psnr"]) and first["reconstruction"]["thumbnail_psnr"] > 5
    # a transformer run must be exported first: a message, not a traceback
    assert main(["train", "eval", "--model", tf, "--n-recon", "2"]) == 2
    assert "export it first" in capsys.readouterr().err
    assert plain["perplexity"]["masked_tokens"] != res["perplexity"]["masked_tokens"]


def test_cli_eval_pose_following(tmp_path, monkeypatch):
    from napari_ilat import save_model
    from napari_ilat.cli import main
    from napari_ilat.engine.model import ILATModel
    from napari_ilat.train.evaluate import pose_following

    model = ILATModel.tiny(cond="pose", resolution=32)
    path = save_model(model, tmp_path / "pose")
    res_path = tmp_path / "res.json"
    # the default compares the true target pose against both wrong poses
    assert (
        main(
            [
                "train",
                "eval",
                "--model",
                str(path),
                "--n-recon",
                "0",
                "--n-ppl",
                "0",
                "--n-pose",
                "3",
                "--n-speed",
                "0",
                "--json",
                str(res_path),
            ]
        )
        == 0
    )
    res = json.loads(res_path.read_text())["pose_following"]
    assert res["n"] == 3
    for wrong in ("source", "other"):
        wins, ties = res[f"true_beats_{wrong}_pose"], res[f"ties_{wrong}_pose"]
        assert wins in (0, 1 / 3, 2 / 3, 1) and ties in (0, 1 / 3, 2 / 3, 1) and wins + ties <= 1
        assert res[f"true_beats_{wrong}_pose_se"] == pytest.approx(np.sqrt(wins * (1 - wins) / 3))
    assert res["psnr_mask_true_pose_se"] > 0  # three pairs, three different PSNRs
    assert (
        main(
            [
                "train",
                "eval",
                "--model",
                str(path),
                "--n-recon",
                "0",
                "--n-ppl",
                "0",
                "--n-pose",
                "2",
                "--n-speed",
                "0",
                "--wrong-pose",
                "source",
                "--json",
                str(res_path),
            ]
        )
        == 0
    )
    res = json.loads(res_path.read_text())["pose_following"]
    assert "true_beats_source_pose" in res and "true_beats_other_pose" not in res
    # the counting, with stand-ins for edit(): a pose-blind editor (the same pixels whatever
    # the pose) ties every pair; an oracle that paints the target for the true pose wins all
    import napari_ilat.train.evaluate as ev
    from napari_ilat.data import make_edit_pair, split_seeds

    targets = {
        p.target_pose.tobytes(): p.target
        for p in (make_edit_pair(int(s), model.resolution) for s in split_seeds("test", 3))
    }

    def blind(source, mask, pose, **kw):
        return source.copy()

    def oracle(source, mask, pose, **kw):
        return targets.get(np.asarray(pose).tobytes(), source).copy()

    monkeypatch.setattr(ev, "edit", blind)
    res = pose_following(model, 3)
    assert res["ties_source_pose"] == res["ties_other_pose"] == 1.0
    assert res["true_beats_source_pose"] == res["true_beats_other_pose"] == 0.0
    monkeypatch.setattr(ev, "edit", oracle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact edits (infinite PSNR): no numpy warning either
        res = pose_following(model, 3)
    assert res["ties_source_pose"] == res["ties_other_pose"] == 0.0
    assert res["true_beats_source_pose"] == res["true_beats_other_pose"] == 1.0
    assert res["true_beats_source_pose_se"] == 0.0  # every pair won: no spread
    assert res["psnr_mask_true_pose"] == np.inf and np.isnan(res["psnr_mask_true_pose_se"])  # exact edits
    # one pair of two won: the binomial standard error of 1/2 over 2 pairs
    calls = iter(range(100))

    def every_other(source, mask, pose, **kw):  # the true pose wins pair 0 only
        i = next(calls)
        return targets.get(np.asarray(pose).tobytes(), source).copy() if i == 0 else source.copy()

    monkeypatch.setattr(ev, "edit", every_other)
    res = pose_following(model, 2, wrong=("source",))
    assert res["true_beats_source_pose"] == 0.5 and res["true_beats_source_pose_se"] == pytest.approx(0.5 / np.sqrt(2))
    # a wrong-pose name that is not understood is an error, not a silently empty check
    with pytest.raises(ValueError, match="wrong poses"):
        pose_following(model, 2, wrong=("both",))


# --------------------------------------------------------------------------- DDP


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, root, results):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        r1 = train1(s1cfg(steps=3), TINY_VQ, root / "vq", device="cpu", quiet=True)
        r2 = train2(s2cfg(steps=3), TINY_TF, root / "tf", first_stage=root / "vq", device="cpu", quiet=True)
        # a decoder-only run: the DDP module is the decoder; every rank sees other images
        init = C.load_weights(root / "vq", "vqgan")
        r3 = train1(
            s1cfg(steps=2, decoder_only=True), TINY_VQ, root / "dec", device="cpu", quiet=True, init_weights=init
        )
        results[rank] = (r1["weights_sha256"], r2["weights_sha256"], r3["weights_sha256"])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_two_process_ddp_ranks_stay_identical(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path, results), nprocs=2, join=True)
        results = dict(results)
    assert results[0] == results[1]  # bit-identical weights on both ranks, both stages, the decoder
    assert results[0][2] != results[0][0]  # which trained
    run = json.loads((tmp_path / "vq" / "run.json").read_text())
    assert run["world_size"] == 2 and run["step"] == 3
    ckpt = C.load_weights(tmp_path / "tf", "transformer")
    from napari_ilat.engine.transformer import LATransformer, TransformerConfig

    tf = LATransformer(TransformerConfig.from_dict(json.loads((tmp_path / "tf" / "run.json").read_text())["model"]))
    tf.load_state_dict(ckpt)
    assert C.weights_digest(tf) == results[0][1]  # and the checkpoint is what they hold


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_stage2_init_from_a_model_continues_its_transformer(stage1_run, tmp_path):
    """--init: a (GPU-trained) model's transformer and first stage are the starting point;
    with a zero learning rate the run ends where it began."""
    vq_dir, _ = stage1_run
    train2(s2cfg(steps=1), dict(TINY_TF, cond_map=True), tmp_path / "tf", first_stage=vq_dir, device="cpu", quiet=True)
    src = export(tmp_path / "tf", tmp_path / "m" / "start", dtype="float32")[0]
    start = load_model(src)
    rec = train2(s2cfg(steps=2, lr=0.0), {"n_layer": 5}, tmp_path / "cont", init=src, device="cpu", quiet=True)
    assert rec["model"]["cond_map"] and rec["model"]["n_layer"] == TINY_TF["n_layer"]  # arch from --init
    w = C.load_weights(tmp_path / "cont", "transformer")
    assert w.keys() == start.transformer.state_dict().keys()
    for k, v in start.transformer.state_dict().items():
        assert torch.equal(w[k], v), k
    meta = json.loads(export(tmp_path / "cont", tmp_path / "m" / "cont")[0].read_text())
    assert meta["training"]["started_from"]["model"] == "start.json"  # provenance kept
    assert meta["training"]["started_from"]["training"]["steps"] == 1
    fs = C.load_weights(tmp_path / "cont", "first_stage")
    assert torch.equal(fs["quantize.embedding.weight"], start.vqgan.state_dict()["quantize.embedding.weight"])


@pytest.mark.slow  # the module's stage1_run fixture trains a VQGAN
def test_stage2_val_edits_keep_the_best_step_and_export_it(stage1_run, tmp_path, capsys, monkeypatch):
    """--val-edits: whole edits of validation cases scored during training; the best step's
    weights are kept, `train export --best` writes them (scored again: the same PSNR), and a
    plain export is the last step. Folder data has no validation edits: refused up front."""
    from napari_ilat.cli import main
    from napari_ilat.train.common import BEST, read_best, validation_edit_psnr
    from napari_ilat.train.stage2 import validation_edit_cases

    vq_dir, _ = stage1_run
    out = tmp_path / "tf"
    cfg = s2cfg(steps=6, lr=3e-3, val_every=2, val_edits=3, val_edits_every=2)
    rec = train2(cfg, TINY_TF, out, first_stage=vq_dir, device="cpu", quiet=True)
    curve = [(h["step"], h["edit_psnr"]) for h in rec["history"]]
    assert [s for s, _ in curve] == [2, 4, 6] and all(np.isfinite(v) for _, v in curve)
    best = max(curve, key=lambda c: c[1])
    assert read_best(out) == {"step": best[0], "edit_psnr": best[1]} == rec["best"]
    assert load_file(str(out / BEST)).keys() == C.load_weights(out, "transformer").keys()

    assert main(["train", "export", "--transformer", str(out), "--out", str(tmp_path / "b"), "--best"]) == 0
    assert main(["train", "export", "--transformer", str(out), "--out", str(tmp_path / "l")]) == 0
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["training"]["exported_step"] == best[0] and meta["training"]["steps"] == 6
    cases = validation_edit_cases("pose", 3, 32)
    again = validation_edit_psnr(load_model(tmp_path / "b.json"), cases, "ilat", "cpu")
    assert again == pytest.approx(best[1], abs=0.05)  # float16 export, same cases and seeds
    assert "exported_step" not in json.loads((tmp_path / "l.json").read_text())["training"]
    # with no validation interval at all the edits are scored once, at the end; a sketch
    # model (natural data) also reports the sketch's gain, guided minus unguided brush edits
    rec = train2(s2cfg(steps=2, val_every=0, val_edits=2), TINY_TF, tmp_path / "end", first_stage=vq_dir, device="cpu")
    assert [h["step"] for h in rec["history"]] == [2] and rec["best"]["step"] == 2
    assert "edit_sketch_gain" not in rec["history"][0]  # a pose model
    nat = s2cfg(data="natural", steps=2, val_every=0, val_edits=2, token_pool=4)
    (h,) = train2(nat, TINY_TF, tmp_path / "nat", first_stage=vq_dir, device="cpu")["history"]
    assert np.isfinite(h["edit_psnr"]) and np.isfinite(h["edit_sketch_gain"]) and h["edit_sketch_gain"] != 0
    # its box holes (no sketch) ran with the context palette, as the export's edits do; the
    # run keeps the table in run.json, and the export takes it from there (no code decoded again)
    import napari_ilat.engine.palette as palette_mod

    def decoded_again(*args, **kwargs):
        raise AssertionError("the export decoded every code again")

    monkeypatch.setattr(palette_mod, "code_colours", decoded_again)
    assert main(["train", "export", "--transformer", str(tmp_path / "nat"), "--out", str(tmp_path / "n")]) == 0
    monkeypatch.undo()
    kept = palette_mod.colours_from_json(C.read_run(tmp_path / "nat")["first_stage"]["code_colours"], 64, "run.json")
    assert np.array_equal(load_model(tmp_path / "n.json").vqgan.code_colours, kept)
    again = validation_edit_psnr(
        load_model(tmp_path / "n.json"), validation_edit_cases("natural", 2, 32), "ilat", "cpu"
    )
    assert again == pytest.approx(h["edit_psnr"], abs=0.05)

    # scores scripted so that the best step is not the last: its weights, not the last ones
    seen = {}

    def scripted(model, cases, mode, device):
        seen[len(seen)] = {k: v.clone() for k, v in model.transformer.state_dict().items()}
        return [10.0, 12.0, 11.0][len(seen) - 1]

    monkeypatch.setattr(C, "validation_edit_psnr", scripted)
    out2 = tmp_path / "tf2"
    rec = train2(cfg, TINY_TF, out2, first_stage=vq_dir, device="cpu", quiet=True)
    assert rec["best"] == {"step": 4, "edit_psnr": 12.0} and len(seen) == 3
    kept = load_file(str(out2 / BEST))
    assert all(torch.equal(kept[k], v) for k, v in seen[1].items())
    assert any(not torch.equal(kept[k], v) for k, v in seen[2].items())  # the last step differs
    assert main(["train", "export", "--transformer", str(out2), "--out", str(tmp_path / "b2"), "--best"]) == 0
    exported = load_model(tmp_path / "b2.json").transformer.state_dict()
    assert all(torch.allclose(exported[k], v.half().float()) for k, v in seen[1].items())

    capsys.readouterr()
    assert main(["train", "export", "--transformer", str(tmp_path / "tf_none"), "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(ValueError, match="val_edits needs --data pose or natural"):
        train2(s2cfg(data=str(tmp_path), val_edits=2), TINY_TF, tmp_path / "folder", first_stage=vq_dir, device="cpu")
    assert not (tmp_path / "folder").exists()


def test_cli_eval_blend_reaches_every_edit(tmp_path, monkeypatch):
    """`train eval --blend alpha` measures pose following and speed on edits pasted as decoded."""
    from napari_ilat import save_model
    from napari_ilat.cli import main
    from napari_ilat.engine.model import ILATModel
    from napari_ilat.train import evaluate as ev

    path = save_model(ILATModel.tiny(cond="pose", resolution=32), tmp_path / "pose")
    seen = []
    real_edit = ev.edit
    monkeypatch.setattr(ev, "edit", lambda *a, **kw: seen.append(kw.get("blend")) or real_edit(*a, **kw))
    args = ["train", "eval", "--model", str(path), "--n-recon", "0", "--n-ppl", "0", "--n-pose", "2"]
    assert main([*args, "--n-speed", "1", "--blend", "alpha", "--json", str(tmp_path / "r.json")]) == 0
    assert seen and set(seen) == {"alpha"}  # 2 pairs x 3 poses + speed warm-up + 1 timed
    assert len(seen) == 8 and json.loads((tmp_path / "r.json").read_text())["blend"] == "alpha"
    seen.clear()
    assert main([*args, "--n-speed", "0"]) == 0
    assert set(seen) == {"seamless"}


class _Counted(torch.utils.data.Dataset):
    def __getitem__(self, i):
        return {"x": torch.tensor(i)}

    def __len__(self):
        return 10**6


@pytest.mark.parametrize("workers", [0, 2])
def test_pool_filled_by_workers_makes_only_batches_with_new_items(workers):
    from napari_ilat.train import common as C
    from napari_ilat.train.data import pool_filled_by_workers

    size, batch, steps = 10, 3, 15  # 3 batches a pass (one index left out each pass), 5 passes
    encoded = []

    def encode(b):  # runs in this process, on what the workers made
        encoded.append(b["x"].tolist())
        return {"tokens": b["x"] * 7, "f": b["x"].float() / 2, "flag": b["x"] % 2 == 0}

    def make():
        return C.batch_indices(size, batch, 5, 0, 1, 0)

    got = pool_filled_by_workers(_Counted(), make, size, workers, encode)
    seen, expect_made = set(), []
    ref = make()
    for b in [next(ref) for _ in range(steps)]:
        out = next(got)
        x = torch.tensor(b)
        assert torch.equal(out["tokens"], x * 7) and out["tokens"].dtype == torch.long
        assert torch.equal(out["f"], x.float() / 2) and torch.equal(out["flag"], x % 2 == 0)
        if not seen.issuperset(b):
            expect_made.append(list(b))
        seen.update(b)
    assert encoded == expect_made and len(encoded) < steps
