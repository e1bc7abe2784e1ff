"""``napari-ilat train recipe``: the whole pipeline in a budget of seconds on the CPU, and the
time-budgeted schedule both stages use."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from napari_ilat import load_model
from napari_ilat.cli import main
from napari_ilat.train import common as C
from napari_ilat.train.recipe import POOL_ITEMS_PER_S, RecipeConfig, plan, pool_setup_seconds
from napari_ilat.train.recipe import run as run_recipe

TINY = dict(
    resolution=32,
    ch=32,
    ch_mult=(1, 2, 2),
    z_channels=16,
    embed_dim=16,
    n_embed=64,
    n_layer=1,
    n_head=2,
    n_embd=32,
    n_eval=2,
    workers=0,
)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def decodes(monkeypatch):
    """Counts the first stages whose every code is decoded for a colour table."""
    from napari_ilat.engine import palette

    calls, real = [], palette.code_colours

    def counted(vqgan, *a, **k):
        calls.append(vqgan)
        return real(vqgan, *a, **k)

    monkeypatch.setattr(palette, "code_colours", counted)
    return calls


def _table(meta: dict):
    return bytes.fromhex(meta["code_colours"]["rgb_hex"])


@pytest.mark.slow
def test_recipe_runs_every_phase_and_exports_a_loadable_model(tmp_path, decodes):
    rec = run_recipe(RecipeConfig(data="pose", minutes=0.12, **TINY), tmp_path / "r", device="cpu", quiet=True)
    # the colour table is decoded once, inside the budget, after stage 1; stage 2 and the
    # export take it from there (the export used to decode every code again, after --minutes)
    assert len(decodes) == 1 and rec["phases"]["colour_table"]["seconds"] >= 0
    table = _table(json.loads((tmp_path / "r" / "stage1" / "run.json").read_text()))
    assert _table(json.loads((tmp_path / "r" / "stage2" / "run.json").read_text())["first_stage"]) == table
    assert _table(json.loads((tmp_path / "r" / "pose.json").read_text())) == table
    assert rec["device"] == "cpu" and rec["precision"] == "fp32"
    for phase in ("stage1", "stage2"):
        assert rec["phases"][phase]["steps"] > 0, phase
        assert rec["phases"][phase]["validation"] is not None
    model = load_model(tmp_path / "r" / "pose.json")  # checksums verified on load
    assert model.cond == "pose" and model.config.transformer.cond_map
    meta = json.loads((tmp_path / "r" / "pose.json").read_text())
    assert meta["training"]["recipe"]["device"] == "cpu"
    assert "train recipe --data pose" in meta["config"]["description"]
    ev = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert {"reconstruction", "perplexity", "pose_following"} <= set(ev)
    assert json.loads((tmp_path / "r" / "recipe.json").read_text())["eval"] == ev


@pytest.mark.slow
def test_recipe_on_a_folder_is_measured_on_its_own_held_out_images(tmp_path, capsys):
    """A folder of the user's images: the evaluation is on the folder's held-out tenth (by
    file name), not on our test photographs; with no held-out file it says so."""
    from PIL import Image

    from napari_ilat.train.data import ImageFolder

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):  # im19.png is the one whose name hashes into the held-out tenth
        Image.fromarray((rng.random((48, 40 + i, 3)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    assert [f.name for f in ImageFolder(folder, "validation").files] == ["im19.png"]
    assert ImageFolder(folder, "validation").held_out
    rec = run_recipe(RecipeConfig(data=str(folder), minutes=0.1, **TINY), tmp_path / "r", device="cpu", quiet=False)
    ev = rec["eval"]
    assert ev["data"] == str(folder) and ev["split"] == "validation" and ev["held_out"] is True
    assert load_model(tmp_path / "r" / "custom.json").cond == "sketch"
    assert "evaluation ran on a training image" not in capsys.readouterr().out

    (folder / "im19.png").unlink()  # no held-out file left: validation is a training image
    assert not ImageFolder(folder, "validation").held_out
    rec = run_recipe(RecipeConfig(data=str(folder), minutes=0.1, **TINY), tmp_path / "r2", device="cpu", quiet=False)
    assert rec["eval"]["held_out"] is False
    assert "the evaluation ran on a training image" in capsys.readouterr().out


@pytest.mark.slow
def test_recipe_trains_imagebart_alike_on_the_same_first_stage(tmp_path, decodes):
    from napari_ilat.engine.imagebart import is_imagebart

    ib = dict(ib_n_stages=2, ib_n_embd=32, ib_n_head=2, ib_n_enc_layer=1, ib_n_dec_layer=1, token_pool=16)
    cfg = RecipeConfig(data="natural", minutes=0.2, imagebart_share=0.3, thin_strokes=0.5, **TINY, **ib)
    rec = run_recipe(cfg, tmp_path / "r", device="cpu", quiet=True)
    assert json.loads((tmp_path / "r" / "stage2" / "run.json").read_text())["train"]["thin_strokes"] == 0.5
    assert rec["phases"]["imagebart"]["steps"] > 0 and rec["phases"]["imagebart"]["validation"] is not None
    ilat, bart = load_model(tmp_path / "r" / "natural.json"), load_model(tmp_path / "r" / "natural-imagebart.json")
    assert is_imagebart(bart) and bart.config.imagebart.n_stages == 2
    for a, b in zip(ilat.vqgan.state_dict().values(), bart.vqgan.state_dict().values()):
        assert torch.equal(a, b)  # one first stage for both engines
    assert len(decodes) == 1  # and one colour table, decoded once
    assert np.array_equal(ilat.vqgan.code_colours, bart.vqgan.code_colours)
    for task in ("upper_half", "box"):
        assert {"imagebart", "ilat", "taming", "biharmonic"} <= set(rec["eval_imagebart"][task])
    assert rec["eval_imagebart"] == json.loads((tmp_path / "r" / "recipe.json").read_text())["eval_imagebart"]
    with pytest.raises(ValueError, match="imagebart_share"):
        plan(RecipeConfig(imagebart_share=1.0), torch.device("cpu"))
    with pytest.raises(ValueError, match="thin-strokes"):
        plan(RecipeConfig(data="pose", thin_strokes=0.5), torch.device("cpu"))


@pytest.mark.slow
def test_recipe_warm_start_continues_both_stages_of_a_model(tmp_path, decodes):
    run_recipe(RecipeConfig(data="pose", minutes=0.1, **TINY), tmp_path / "a", device="cpu", quiet=True)
    first = json.loads((tmp_path / "a" / "pose.json").read_text())
    # a learning rate of ~0 leaves the weights where the warm start put them: the exported
    # weights then equal the start model's (a fresh init, a dropped transformer init or a
    # codebook restart of the start model's codes would all change them; the files' bytes
    # may differ in the sign of a float16 zero)
    args = ["train", "recipe", "--data", "pose", "--minutes", "0.05", "--out", str(tmp_path / "b")]
    args += ["--init", str(tmp_path / "a" / "pose.json"), "--stage1-lr", "1e-12", "--stage2-lr", "1e-12"]
    args += ["--n-eval", "2", "--workers", "0", "--seed", "1", "--quiet"]
    assert main(args) == 0
    second = json.loads((tmp_path / "b" / "pose.json").read_text())
    assert second["config"]["vqgan"] == first["config"]["vqgan"]  # the start model's architecture
    assert second["config"]["transformer"] == first["config"]["transformer"]
    a, b = load_model(tmp_path / "a" / "pose.json"), load_model(tmp_path / "b" / "pose.json")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    init = second["training"]["recipe"]["init"]
    assert init["stage1_sha256"] == first["files"]["stage1"]["sha256"]
    assert init["recipe"]["command"].startswith("napari-ilat train recipe --data pose")
    assert "--init" in second["config"]["description"]
    rec = json.loads((tmp_path / "b" / "recipe.json").read_text())
    assert rec["phases"]["stage1"]["steps"] > 0 and rec["phases"]["stage2"]["steps"] > 0
    # stage-1 share 0: the transformer alone trains (at a real learning rate) on the warm
    # start's first stage, kept bit for bit, and the budget holds (it once ran stage 1 forever)
    args = ["train", "recipe", "--data", "pose", "--minutes", "0.05", "--out", str(tmp_path / "c")]
    args += ["--init", str(tmp_path / "a" / "pose.json"), "--stage1-share", "0", "--stage2-lr", "1e-2"]
    args += ["--n-eval", "2", "--workers", "0", "--seed", "1", "--quiet", "--val-edits", "2", "--cond-dropout", "0.7"]
    decodes.clear()
    assert main(args) == 0
    # its first stage is the warm start's, bit for bit: so is the colour table the validation
    # edits and the export use, taken from the start model's JSON, not decoded again
    assert decodes == [] and _table(json.loads((tmp_path / "c" / "pose.json").read_text())) == _table(first)
    assert json.loads((tmp_path / "c" / "stage2" / "run.json").read_text())["train"]["cond_dropout"] == 0.7
    c = load_model(tmp_path / "c" / "pose.json")
    # --val-edits: validation edits scored at the end of stage 2 (on a CPU only there) and
    # the export names the step its transformer comes from
    curve = json.loads((tmp_path / "c" / "recipe.json").read_text())["phases"]["stage2"]["curve"]
    assert curve and all(np.isfinite(h["edit_psnr"]) for h in curve)
    meta = json.loads((tmp_path / "c" / "pose.json").read_text())
    assert meta["training"]["exported_step"] == max(curve, key=lambda h: h["edit_psnr"])["step"]
    for (k, va), vc in zip(a.vqgan.state_dict().items(), c.vqgan.state_dict().values()):
        assert torch.equal(va, vc), k
    assert not all(torch.equal(x, y) for x, y in zip(a.transformer.parameters(), c.transformer.parameters()))
    rec = json.loads((tmp_path / "c" / "recipe.json").read_text())
    assert rec["phases"]["stage1"]["steps"] == 0 and rec["phases"]["stage2"]["steps"] > 0
    assert rec["wall_seconds"] < 120


@pytest.mark.slow
def test_sigterm_ends_training_early_and_still_exports(tmp_path):
    """`timeout` (SIGTERM) hitting a recipe in stage 2, as on a lent GPU: the transformer
    stops after its step, and what it learnt is exported and evaluated, exit status 130.
    The signal goes to the whole process group, as `timeout` and batch schedulers send it,
    so the data worker gets it too; and it comes before the first validation edits, so the
    last step is exported."""
    run_recipe(RecipeConfig(data="pose", minutes=0.05, **TINY), tmp_path / "a", device="cpu", quiet=True)
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "napari_ilat.cli", "train", "recipe", "--data", "pose", "--minutes", "5"]
    cmd += ["--out", str(out), "--init", str(tmp_path / "a" / "pose.json"), "--stage1-share", "0"]
    cmd += ["--token-pool", "4096", "--n-eval", "2", "--workers", "1", "--threads", "1", "--quiet", "--val-edits", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "stage2" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    t = time.time()
    os.killpg(proc.pid, signal.SIGTERM)  # the recipe and its data worker
    try:
        stdout, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the recipe did not stop after SIGTERM") from None
    assert proc.returncode == 130, err[-2000:]
    assert time.time() - t < 90 and "Traceback" not in err
    rec = json.loads((out / "recipe.json").read_text())
    assert rec["stopped"] == "stage 2" and json.loads(stdout)["stopped"] == "stage 2"
    assert rec["exported"] == "last step (stopped before any validation edits)"
    assert rec["phases"]["stage2"]["steps"] >= 2 and rec["wall_seconds"] < 5 * 60 * 0.5
    model = load_model(out / "pose.json")  # exported, checksums verified on load
    assert json.loads((out / "pose.json").read_text())["training"]["recipe"]["stopped"] == "stage 2"
    assert model.cond == "pose" and "pose_following" in rec["eval"]


def test_recipe_json_names_the_model_before_the_evaluation(tmp_path, monkeypatch):
    """An evaluation that never ends (killed by a lease's hard limit) still leaves recipe.json
    saying which model was exported."""
    import napari_ilat.train.evaluate as E

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(E, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(RecipeConfig(data="pose", minutes=0.05, **TINY), tmp_path, device="cpu", quiet=True)
    rec = json.loads((tmp_path / "recipe.json").read_text())
    assert rec["model"] == str(tmp_path / "pose.json") and load_model(rec["model"]).cond == "pose"
    assert "eval" not in rec


def test_a_stop_in_stage_1_exports_nothing_and_leaves_it_resumable(tmp_path):
    with C.stop_on_signal():
        os.kill(os.getpid(), signal.SIGTERM)  # asked to stop before the first step ends
        rec = run_recipe(RecipeConfig(data="pose", minutes=1, **TINY), tmp_path, device="cpu", quiet=True)
    assert rec["stopped"] == "stage 1" and rec["phases"]["stage1"]["steps"] == 1
    assert "stage2" not in rec["phases"] and not (tmp_path / "pose.json").exists()
    assert C.has_checkpoint(tmp_path / "stage1")
    assert not C.stop_requested()  # later runs in this process train to their end


def test_plan_sizes_to_the_device():
    cpu = plan(RecipeConfig(minutes=10), torch.device("cpu"))
    gpu = plan(RecipeConfig(minutes=10), torch.device("cuda", 0))
    assert cpu["workers"] == 0 and cpu["token_pool"] > 0  # CPU: in-process data, token pool
    assert gpu["token_pool"] == 0 and gpu["workers"] >= 1  # GPU: fresh batches from workers
    # a pool costs time up front only without workers (with them it fills as they go)
    assert pool_setup_seconds(cpu) == pytest.approx(cpu["token_pool"] / POOL_ITEMS_PER_S + 5)
    gpu_pool = plan(RecipeConfig(minutes=10, token_pool=120_000), torch.device("cuda", 0))
    assert gpu_pool["token_pool"] == 120_000 and pool_setup_seconds(gpu_pool) == 0
    assert gpu["reuse1"] > 1 and cpu["reuse1"] == 1
    assert gpu["batch1"] > cpu["batch1"] and gpu["batch2"] > cpu["batch2"]
    total = cpu["stage1_minutes"] + cpu["stage2_minutes"]
    assert total == pytest.approx(10 * (1 - RecipeConfig.eval_share)) and cpu["imagebart_minutes"] == 0
    ib = plan(RecipeConfig(minutes=10, imagebart_share=0.25), torch.device("cpu"))
    assert ib["imagebart_minutes"] == pytest.approx(0.25 * total)
    assert ib["stage1_minutes"] + ib["stage2_minutes"] == pytest.approx(0.75 * total)
    with pytest.raises(ValueError, match="stage1_share must be"):
        plan(RecipeConfig(stage1_share=1.0), torch.device("cpu"))  # stage 2 would get no time
    with pytest.raises(ValueError, match="--init"):
        plan(RecipeConfig(stage1_share=0.0), torch.device("cpu"))  # no first stage to keep
    with pytest.raises(ValueError, match="--val-edits needs"):
        plan(RecipeConfig(data="my_photos", val_edits=8), torch.device("cpu"))  # no validation cases
    kept = plan(RecipeConfig(minutes=10, stage1_share=0.0, init="pose"), torch.device("cpu"))
    assert kept["stage1_minutes"] == 0 and kept["stage2_minutes"] == pytest.approx(total)


def test_budget_schedule():
    # step-based without a budget; over the budget's time fraction with one
    assert C.lr_at(500, 1.0, 100, 1000) > C.lr_at(900, 1.0, 100, 1000)
    assert C.lr_at(500, 1.0, 100, 10**9, progress=1.0) == pytest.approx(0.1)
    assert C.lr_at(500, 1.0, 100, 10**9, progress=0.0) == pytest.approx(1.0)
    assert C.lr_at(5, 1.0, 100, 10**9, progress=0.9) == pytest.approx(0.06)  # warm-up first
    assert C.budget_progress(0.0, 0.0, 0.0) is None


def test_cli_recipe_refuses_bad_budget_and_an_existing_run(tmp_path, capsys):
    assert main(["train", "recipe", "--minutes", "0", "--out", str(tmp_path)]) == 2
    assert "--minutes" in capsys.readouterr().err
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "run.json").write_text("{}")
    for f in ("model.safetensors", "state.safetensors"):
        (tmp_path / "stage1" / f).write_text("")
    assert main(["train", "recipe", "--minutes", "1", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_resume_may_change_the_time_budget(tmp_path):
    from napari_ilat.train.stage1 import Stage1Config

    run = {"stage": "vqgan", "train": {"steps": 10, "budget_minutes": 75.0}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    _, cfg = C.read_resume(tmp_path, "vqgan", Stage1Config, Stage1Config(steps=20, budget_minutes=30.0))
    assert (cfg.steps, cfg.budget_minutes) == (20, 30.0)
    _, cfg = C.read_resume(tmp_path, "vqgan", Stage1Config, Stage1Config(steps=20))  # no --budget: kept
    assert cfg.budget_minutes == 75.0


def test_training_progress_plain_lines_in_logs_and_tqdm_on_a_terminal(capsys, monkeypatch):
    import sys

    p = C.Progress(20, every=10)
    for s in range(1, 21):
        p.update(s, loss=1.0)
    p.message("validation 1")
    p.close()
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(" |")[0] for ln in lines] == ["step 10/20 loss 1.0000", "step 20/20 loss 1.0000", "validation 1"]

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    p = C.Progress(20, every=10)
    assert p.bar is not None  # tqdm's
    for s in range(1, 21):
        p.update(s, loss=0.5)
    p.message("validation 2")
    p.close()
    err = capsys.readouterr().err
    assert "20/20" in err and "loss=0.5000" in err and "validation 2" in err and "step 10/20" not in err


def test_token_pool_reports_its_progress(capsys):
    """A CPU pool of thousands of items takes many minutes: progress lines, not silence."""
    import time

    report = C.pool_reporter(time.time() - 100.0, every_s=0.0)
    report(50, 100)  # 0.5 items/s, 50 left: ~1.7 min
    report(100, 100)  # the end is reported by the caller ("encoded in N s")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["token pool: 50/100 items, 0.5 items/s, ~2 min left"]
    quiet = C.pool_reporter(time.time(), every_s=3600.0)
    quiet(5, 20)
    assert capsys.readouterr().out == ""


def test_encode_items_batches_concatenates_and_reports():
    from napari_ilat.train.data import encode_items

    ds = [{"x": torch.tensor([float(i)])} for i in range(5)]
    calls = []
    out = encode_items(lambda b: {"y": b["x"] * 2}, ds, [4, 0, 1, 3, 2], batch=2, report=lambda *a: calls.append(a))
    assert out["y"].flatten().tolist() == [8.0, 0.0, 2.0, 6.0, 4.0]
    assert calls == [(2, 5), (4, 5), (5, 5)]
