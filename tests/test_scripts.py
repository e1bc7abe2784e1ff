"""The measurement scripts under scripts/ (their numbers are quoted in docs/benchmarks.md):
each runs on a few cases, and the per-pair script agrees with `train eval`'s pose following."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from napari_ilat import load_model
from napari_ilat.train.evaluate import pose_following

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name, *args, cwd=None):
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_pose_cases_reproduces_train_eval(tmp_path):
    out = tmp_path / "cases.json"
    text = run_script("pose_cases.py", "--n", "4", "--split", "validation", "--out", str(out))
    rows = json.loads(out.read_text())
    ref = pose_following(load_model("pose"), 4, split="validation", wrong=("source",))
    wins = sum(r["true"] > r["source"] for r in rows) / len(rows)
    assert wins == ref["true_beats_source_pose"]
    assert sum(r["true"] for r in rows) / 4 == pytest.approx(ref["psnr_mask_true_pose"], abs=1e-9)
    assert f"true pose beats the source pose in {wins:.1%} of 4" in text
    assert {"max_move_px", "mask_frac", "source_vs_target", "moved"} <= set(rows[0])


@pytest.mark.slow
def test_pose_cases_with_one_sampling_seed_ranks_the_shown_scenes(tmp_path):
    from napari_ilat import edit
    from napari_ilat.data.pose_scenes import make_edit_pair
    from napari_ilat.evaluation.metrics import psnr

    out = tmp_path / "cases.json"
    text = run_script("pose_cases.py", "--n", "3", "--sampling-seed", "7", "--show", "2", "--out", str(out))
    rows = json.loads(out.read_text())
    p = make_edit_pair(2, 128)  # test scene 2, sampled with seed 7 (not its index 2)
    true = psnr(edit(p.source, p.mask, pose=p.target_pose, model=load_model("pose"), seed=7), p.target, p.mask)
    assert rows[2]["seed"] == 2 and rows[2]["true"] == pytest.approx(true, abs=1e-9)
    above = sum(r["true"] < rows[2]["true"] for r in rows) / 3
    assert f"scene 2 ({', '.join(p.moved_limbs)}): {true:.2f} dB, above {above:.0%} of the 3" in text


@pytest.mark.slow
def test_auto_mask_radius_scores_each_rule_on_one_region():
    rows = [
        json.loads(line)
        for line in run_script("auto_mask_radius.py", "--n", "2", "--rules", "image,0.15+2,0.4+2").splitlines()
    ]
    assert [r["rule"] for r in rows] == ["image", "0.15+2", "0.4+2"] and all(r["n"] == 2 for r in rows)
    assert rows[0]["vs_first"] == 0 and rows[0]["psnr_region"] + rows[1]["vs_first"] == pytest.approx(
        rows[1]["psnr_region"], abs=0.011
    )
    assert rows[1]["masked"] < rows[2]["masked"]  # the capsules follow the rule
    assert rows[1]["limb_covered_95"] <= rows[2]["limb_covered_95"]


@pytest.mark.slow
def test_sweep_sampling_prints_one_line_per_set_and_setting():
    text = run_script("sweep_sampling.py", "--n", "2", "--sets", "pose,box", "--temperature", "1,0.8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [(r["set"], r["temperature"]) for r in rows] == [("pose", 1.0), ("pose", 0.8), ("box", 1.0), ("box", 0.8)]
    assert all(r["split"] == "validation" and r["n"] == 2 and r["palette"] == "auto" for r in rows)
    # --palette reaches the edits: forced on, the pose edits differ from the default's (auto: off there)
    (on,) = [
        json.loads(line)
        for line in run_script("sweep_sampling.py", "--n", "2", "--sets", "pose", "--palette", "on").splitlines()
    ]
    assert on["palette"] == "on" and on["psnr_mask_true_pose"] != rows[0]["psnr_mask_true_pose"]


@pytest.mark.slow
def test_first_stage_bound_puts_exact_codes_above_the_model():
    (row,) = [json.loads(line) for line in run_script("first_stage_bound.py", "--n", "2", "--sets", "box").splitlines()]
    assert (row["set"], row["split"], row["n"]) == ("box", "test", 2)
    # the ground truth's own codes decode closer to the truth than any sampled edit
    assert row["code_bound_seamless"] > row["model_edit"] and row["code_bound_pasted"] > row["model_edit"]


@pytest.mark.slow
def test_first_stage_bound_demo_writes_the_readme_edit_with_exact_codes(tmp_path):
    png = tmp_path / "demo.png"
    (row,) = [
        json.loads(x) for x in run_script("first_stage_bound.py", "--sets", "none", "--demo", str(png)).splitlines()
    ]
    assert row["set"] == "demo" and row["code_bound_pasted"] > row["model_edit"]
    from napari_ilat.plugin.sample_data import pose_sample_pair

    img = imread(png)  # truth | code bound seamless | pasted | the model's edit, 3x
    assert img.shape == (3 * 128, 3 * (4 * 128 + 3 * 2), 3)
    truth, seamless, pasted, own = (img[::3, ::3][:, i * 130 : i * 130 + 128] for i in range(4))
    pair = pose_sample_pair()
    assert np.array_equal(truth, pair.target)
    for panel in (seamless, pasted, own):  # the source outside the mask, new pixels inside
        assert np.array_equal(panel[~pair.mask], pair.source[~pair.mask])
        assert not np.array_equal(panel[pair.mask], pair.source[pair.mask])

    (row5,) = [
        json.loads(x)
        for x in run_script("first_stage_bound.py", "--sets", "none", "--demo", str(png), "--scene", "5").splitlines()
    ]
    assert row["scene"] == pair.seed and row5["scene"] == 5 != pair.seed  # the pose sample of the twentieth session
    assert np.array_equal(imread(png)[::3, ::3][:, :128], pose_sample_pair(5).target)


@pytest.mark.slow
def test_hue_breakdown_splits_the_coloured_pixels_by_saturation_and_hue():
    rows = [json.loads(x) for x in run_script("hue_breakdown.py", "--model", "natural", "--n", "4").splitlines()]
    decodes = {r["decode"]: r for r in rows if r["row"] == "decode"}
    assert list(decodes) == ["quantised", "continuous", "patch_mean"] and all(r["n"] == 4 for r in rows)
    assert decodes["patch_mean"]["psnr"] > 15 and decodes["quantised"]["hue_error"] >= 0
    for kind, count in (("saturation", 4), ("hue_sector", 6)):  # each a partition of the coloured pixels
        part = [r for r in rows if r["row"] == kind]
        assert len(part) == count and sum(r["share"] for r in part) == pytest.approx(1, abs=0.01)


@pytest.mark.slow
def test_sweep_topk_prints_one_line_per_setting():
    rows = [
        json.loads(line)
        for line in run_script("sweep_topk.py", "--n", "2", "--top-k", "0,20", "--sets", "box").splitlines()
    ]
    assert [(r["set"], r["top_k"], r["n"]) for r in rows] == [("box", None, 2), ("box", 20, 2)]


@pytest.mark.slow
def test_imagebart_chain_rates_and_variants():
    from napari_ilat import edit
    from napari_ilat.evaluation.imagebart import natural_cases
    from napari_ilat.evaluation.metrics import PSNR_CAP, psnr

    text = run_script("imagebart_chain.py", "--n", "2", "--chain", "--top-k", "20", "--variants", "noisy")
    rows = [json.loads(line) for line in text.splitlines()]
    chain, (default, noisy) = rows[:3], rows[3:]
    assert [(r["stage"], r["top_k"]) for r in chain] == [(3, 20), (2, 20), (1, 20)]
    assert chain[0]["copied"] is None and all(0 <= r["copied"] <= 1 for r in chain[1:])
    assert all(0 <= r["equal_x0"] <= 1 for r in chain)
    # the default row is edit() as shipped; the variant is patched in and changes the edits
    model = load_model("natural-imagebart")
    cases = list(natural_cases("upper_half", 2, 128, split="validation"))
    ref = np.mean(
        [psnr(edit(s, m, seed=seed, mode="imagebart", model=model), t, m, cap=PSNR_CAP) for seed, s, t, m, _ in cases]
    )
    assert default["variant"] == "default" and default["psnr_mask"] == pytest.approx(ref, abs=1e-3)
    assert noisy["variant"] == "noisy" and noisy["psnr_mask"] != default["psnr_mask"]


def test_bundle_appends_the_run_to_the_lineage_and_keeps_a_shared_first_stage(tmp_path):
    import importlib.util

    import torch

    from napari_ilat import save_model
    from napari_ilat.engine.model import ILATModel

    spec = importlib.util.spec_from_file_location("bundle", SCRIPTS / "bundle.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)

    weights, run = tmp_path / "weights", tmp_path / "run"
    weights.mkdir()
    run.mkdir()
    old = ILATModel.tiny(cond="pose")
    path = save_model(old, weights / "pose", split=True)
    meta = json.loads(path.read_text())
    meta["training"] = {"steps": 2, "train_minutes": 1.0, "device": "cpu", "first_stage": {"steps": 7}}
    # its first stage under another name, as natural-imagebart reads natural.stage1.safetensors
    (weights / meta["files"]["stage1"]["file"]).rename(weights / "shared.stage1.safetensors")
    meta["files"]["stage1"]["file"] = "shared.stage1.safetensors"
    path.write_text(json.dumps(meta))
    stage1_bytes = (weights / meta["files"]["stage1"]["file"]).read_bytes()

    new = ILATModel.tiny(cond="pose")
    new.load_state_dict(old.state_dict())
    with torch.no_grad():
        new.transformer.tok_emb.weight.add_(1.0)  # the continuation moved the transformer only
    npath = save_model(new, run / "pose", split=True)
    nmeta = json.loads(npath.read_text())
    nmeta["training"] = {
        "steps": 5,
        "exported_step": 4,
        "recipe": {
            "minutes": 0.5,
            "command": "napari-ilat train recipe --init /tmp/run/pose/pose.json",
            "phases": {"stage1": {"steps": 0}, "stage2": {"steps": 5}},
        },
    }
    npath.write_text(json.dumps(nmeta))

    out = bundle.bundle(npath, "pose", "a test GPU", "bash scripts/gpu_recipe.sh 8 /tmp/run continue", weights)
    got = json.loads(out.read_text())
    runs = got["training"]["lineage"]["runs"]
    assert [r["run"] for r in runs] == [1, 2] and runs[0]["minutes"] == 1.0 and "weights_in_git" in runs[0]
    assert runs[1] == {
        "run": 2,
        "gpu": "a test GPU",
        "minutes": 0.5,
        "command": "bash scripts/gpu_recipe.sh 8 /tmp/run continue",
        "stage1_steps": 0,
        "stage2_steps": 5,
        "exported_step": 4,
    }
    assert got["training"]["lineage"]["gpu_minutes_total"] == 1.5
    assert "--init run 1's model" in got["training"]["recipe"]["command"]  # no device paths left
    assert got["training"]["first_stage"]["steps"] == 7  # the kept first stage keeps its record
    # the first stage is the same file, untouched; the transformer is the new one
    assert got["files"]["stage1"] == meta["files"]["stage1"]
    assert (weights / got["files"]["stage1"]["file"]).read_bytes() == stage1_bytes
    assert not (weights / "pose.stage1.safetensors").exists()  # not copied a second time
    loaded = load_model(out)
    assert torch.equal(loaded.transformer.tok_emb.weight, new.transformer.tok_emb.weight)

    # a decoder trained beside that run: a new first stage, the transformer referenced, and its
    # minutes, which were the same device minutes, not added to the total
    stage2_before = json.loads(out.read_text())["files"]["stage2"]
    with torch.no_grad():
        new.vqgan.decoder.conv_out.bias.add_(0.01)
    dpath = save_model(new, run / "pose-decoder", split=True)
    dmeta = json.loads(dpath.read_text())
    dmeta["training"] = {"decoder_only": True, "steps": 3, "train_minutes": 0.4}
    dpath.write_text(json.dumps(dmeta))
    got = json.loads(bundle.bundle(dpath, "pose", "a test GPU", "decoder", weights, beside=True).read_text())
    runs = got["training"]["lineage"]["runs"]
    assert runs[2] == {"run": 3, "gpu": "a test GPU", "minutes": 0.4, "command": "decoder", "steps": 3, "beside_run": 2}
    assert got["training"]["lineage"]["gpu_minutes_total"] == 1.5
    assert got["files"]["stage1"]["file"] == "pose.stage1.safetensors" and got["files"]["stage2"] == stage2_before
    assert (weights / "shared.stage1.safetensors").read_bytes() == stage1_bytes  # the shared file untouched
    assert torch.equal(load_model(out).vqgan.decoder.conv_out.bias, new.vqgan.decoder.conv_out.bias)
    # the transformer's record stays the model's; the decoder run's is its first stage's
    assert runs[1]["weights_in_git"] == "the commit that bundles run 3, beside it"
    assert got["training"]["steps"] == 5 and got["training"]["exported_step"] == 4
    assert got["training"]["first_stage"]["decoder_only"] and got["training"]["first_stage"]["steps"] == 3


def test_imagebart_chain_skip_variants_start_below_the_noise_stage():
    """skipT runs stages T-1..1 only (the chain starts at x_{T-1} = noise in the mask), skip2
    stage 1 alone, with the top-k the name gives; known tokens stay as given."""
    import importlib.util

    import torch

    import napari_ilat.engine.imagebart as IB

    spec = importlib.util.spec_from_file_location("imagebart_chain", SCRIPTS / "imagebart_chain.py")
    chain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chain)
    net = load_model("natural-imagebart").bart
    n = net.config.n_tokens
    known = torch.ones(n, dtype=torch.bool)
    known[: n // 8] = False
    tokens = torch.arange(n) % net.config.vocab_size
    seen = []
    saved = IB._denoise

    def spy(stage, x_t, guide, masked, opts, *a, **kw):  # the real per-stage sampler, watched
        seen.append((next(t for t in range(1, 4) if net.stage(t) is stage), opts.top_k))
        return saved(stage, x_t, guide, masked, opts, *a, **kw)

    for name, stages, top_k in [("skipT", [2, 1], 20), ("skip2-k0", [1], None), ("skipT-k5", [2, 1], 5)]:
        try:
            IB._denoise = spy  # the variant wraps what it finds, as in the script
            sample, IB._denoise = chain._variant(name, net.stages[0])
            seen.clear()
            out = sample(net, tokens, known, generator=torch.Generator().manual_seed(0))
        finally:
            IB._denoise = saved
        assert seen == [(t, top_k) for t in stages], name
        assert torch.equal(out[0][known], tokens[known])


def test_imagebart_chain_copycal_copies_at_the_models_own_rate():
    """copycal: a copy of the input token the model gives probability 0.3 is drawn about 30% of
    the time even where top-k 1 would always take it (it is the top code); stage T runs as
    shipped; known tokens stay; the engine's pick is restored afterwards."""
    import importlib.util
    import math

    import torch

    import napari_ilat.engine.imagebart as IB
    from napari_ilat.engine.sampler import SamplingOptions

    spec = importlib.util.spec_from_file_location("imagebart_chain", SCRIPTS / "imagebart_chain.py")
    chain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chain)
    net = load_model("natural-imagebart").bart
    n, vocab = net.config.n_tokens, net.config.vocab_size
    known = torch.ones(n, dtype=torch.bool)
    known[: n // 2] = False
    tokens = torch.arange(n) % vocab
    saved_pick, saved_denoise = IB.pick, IB._denoise
    copy_logit = math.log(0.3 / 0.7 * (vocab - 1))  # the copy 0.3, every other code alike
    copied = []

    def steered(stage, x_t, guide, masked, opts, generator, *a, **kw):
        def decode(inputs, start, *da, **dkw):  # logits row j predicts position start + j
            b, j = torch.arange(len(inputs))[:, None], torch.arange(inputs.shape[1])[None]
            logits = torch.zeros(len(inputs), inputs.shape[1], vocab)
            return logits.index_put((b, j, x_t[:, start + j]), torch.tensor(copy_logit))

        stage.decode = decode
        try:
            out = saved_denoise(stage, x_t, guide, masked, opts, generator, *a, **kw)
        finally:
            del stage.decode
        if stage is not net.stage(3):  # stage T: no input to copy
            copied.append(float((out[:, masked] == x_t[:, masked]).float().mean()))
        return out

    try:
        IB._denoise = steered
        sample, IB._denoise = chain._variant("copycal", net.stages[0], net.stage(3))
        out = sample(net, tokens, known, options=SamplingOptions(top_k=1), generator=torch.Generator().manual_seed(0))
    finally:
        IB._denoise = saved_denoise
    assert IB.pick is saved_pick and torch.equal(out[0][known], tokens[known])
    assert len(copied) == 2 and all(0.15 < c < 0.45 for c in copied), copied  # top-k 1 alone: 1.0


@pytest.mark.slow
def test_natural_without_sketch_prints_each_setting_and_draws_the_grid(tmp_path):
    import skimage.io

    text = run_script("natural_without_sketch.py", "--n", "2", "--grid", str(tmp_path / "g.png"))
    rows = [json.loads(line) for line in text.splitlines()]
    assert [(r["sketch"], r["top_k"]) for r in rows] == [("none", 20), ("none", None), ("empty", 20)]
    assert all(r["n"] == 2 and r["psnr_seamless"] > 0 and r["colour_offset_alpha"] >= 0 for r in rows)
    assert skimage.io.imread(tmp_path / "g.png").shape == (5 * 128, 7 * 128, 3)


@pytest.mark.slow
def test_sweep_palette_pairs_the_same_edits_with_and_without_it(monkeypatch):
    import functools

    from skimage.color import rgb2gray

    from napari_ilat import edit
    from napari_ilat.engine import editing
    from napari_ilat.engine.palette import allowed_codes
    from napari_ilat.engine.reuse import FIRST_STAGE_CACHE
    from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
    from napari_ilat.evaluation.quality import box_cases

    (row,) = [json.loads(line) for line in run_script("sweep_palette.py", "--n", "2", "--sets", "box").splitlines()]
    assert (row["set"], row["split"], row["n"]) == ("box", "validation", 2)
    model = load_model("natural")
    for palette in ("off", "on"):
        scores = [
            psnr(edit(s, m, model=model, seed=seed, palette=palette), t, m, cap=PSNR_CAP)
            for seed, s, t, m, _ in box_cases(2, 128, "validation")
        ]
        assert row["seamless"][palette] == pytest.approx(np.mean(scores), abs=1e-3)
    assert row["seamless"]["diff"] == pytest.approx(row["seamless"]["on"] - row["seamless"]["off"], abs=2e-3)
    # --grey: the same cases as 2D greyscale images
    out = run_script("sweep_palette.py", "--n", "1", "--sets", "box", "--grey")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["grey"] is True
    ((seed, s, t, m, _),) = box_cases(1, 128, "validation")
    s, t = (np.rint(rgb2gray(a) * 255).astype(np.uint8) for a in (s, t))
    assert row["seamless"]["on"] == pytest.approx(
        psnr(edit(s, m, model=model, seed=seed), t, m, cap=PSNR_CAP), abs=1e-3
    )
    # --against-support 0: the default palette against the rule before (any one band pixel)
    out = run_script("sweep_palette.py", "--n", "2", "--sets", "box", "--against-support", "0")
    (row,) = [json.loads(line) for line in out.splitlines()]
    cases = list(box_cases(2, 128, "validation"))
    before = []
    for seed, s, t, m, _ in cases:
        FIRST_STAGE_CACHE.clear()  # it keeps an input's palette
        with monkeypatch.context() as mp:
            mp.setattr(editing, "allowed_codes", functools.partial(allowed_codes, support=0))
            before.append(psnr(edit(s, m, model=model, seed=seed, palette="on"), t, m, cap=PSNR_CAP))
        FIRST_STAGE_CACHE.clear()
    now = [psnr(edit(s, m, model=model, seed=seed), t, m, cap=PSNR_CAP) for seed, s, t, m, _ in cases]
    assert row["against_support"] == 0 and abs(np.mean(before) - np.mean(now)) > 0.01  # the cases tell them apart
    assert (row["seamless"]["off"], row["seamless"]["on"]) == (
        pytest.approx(np.mean(before), abs=1e-3),
        pytest.approx(np.mean(now), abs=1e-3),
    )


@pytest.mark.slow
def test_sweep_seamless_pairs_the_fills_on_the_same_edits(monkeypatch):
    from napari_ilat import edit
    from napari_ilat.engine import blend
    from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
    from napari_ilat.evaluation.quality import box_cases

    pose_row, box_row = [
        json.loads(line) for line in run_script("sweep_seamless.py", "--n", "2", "--sets", "pose,box").splitlines()
    ]
    ref = pose_following(load_model("pose"), 2, split="validation", per_case=True)
    assert len(ref["cases"]["true"]) == 2 and ref["psnr_mask_true_pose"] == pytest.approx(np.mean(ref["cases"]["true"]))
    assert pose_row["psnr_mask_true_pose"]["16.0"]["mean"] == pytest.approx(ref["psnr_mask_true_pose"], abs=1e-3)
    assert pose_row["following"]["16.0"]["true_beats_source_pose"] == ref["true_beats_source_pose"]
    model = load_model("natural")
    for depth in (None, 16.0):  # "None": the biharmonic fill alone, the one before
        monkeypatch.setattr(blend, "HARMONIC_DEPTH", depth)
        scores = [
            psnr(edit(s, m, model=model, seed=seed), t, m, cap=PSNR_CAP)
            for seed, s, t, m, _ in box_cases(2, 128, "validation")
        ]
        assert box_row["psnr_mask"][str(depth)]["mean"] == pytest.approx(np.mean(scores), abs=1e-3)
    d = box_row["psnr_mask"]["16.0"]
    assert d["diff"] == pytest.approx(d["mean"] - box_row["psnr_mask"]["None"]["mean"], abs=2e-3)


@pytest.mark.slow
def test_pose_scale_edits_each_method_on_the_same_scaled_pair(tmp_path):
    """Validation scene 0 rendered 2x (its figure 1.4x the training figures: inside the band
    'auto' leaves alone, so auto = native, while 'figure' scales it anyway, and 'figure<=1.2x'
    part of the way)."""
    from napari_ilat.data.pose_scenes import make_edit_pair
    from napari_ilat.data.splits import split_seeds
    from napari_ilat.engine.pose_mask import figure_ratio

    out = tmp_path / "cases.json"
    args = ["--n", "1", "--factors", "2", "--methods", "native,auto,figure,figure<=1.2x", "--out", str(out)]
    text = run_script("pose_scale.py", *args, "--examples", str(tmp_path / "grid.png"))
    rows = {r["method"]: r for r in map(json.loads, text.splitlines())}
    (case,) = json.loads(out.read_text())
    seed = int(split_seeds("validation", 1)[0])
    pose = make_edit_pair(seed, 256).target_pose
    assert case["seed"] == seed and case["ratio"] == pytest.approx(figure_ratio(pose, 128)) and 1 < case["ratio"] < 1.75
    assert rows["auto"]["scale_median"] == 1.0 and rows["auto"]["psnr"] == rows["native"]["psnr"]
    assert rows["figure"]["scale_median"] == pytest.approx(case["ratio"], rel=0.05)
    assert rows["figure"]["psnr"] == pytest.approx(case["figure"], abs=1e-4) and case["figure"] != case["native"]
    assert rows["figure<=1.2x"]["scale_median"] == pytest.approx(1.2, rel=0.05)
    assert imread(tmp_path / "grid.png").shape == (256, 6 * 256 + 5 * 4, 3)  # input, truth, the 4 methods
    assert rows["figure"]["image_px"] == 256 and rows["figure"]["psnr_vs_native"].startswith(
        f"{case['figure'] - case['native']:+.3f}"
    )
    # a figure 10x smaller enlarged only 1.2x stays far below the training size, where "auto"
    # would not enlarge it at all (FIGURE_ENLARGE_MIN_SIZE): the script's cap still enlarges
    text = run_script("pose_scale.py", "--n", "1", "--factors", "0.1", "--methods", "native,figure<=1.2x")
    rows = {r["method"]: r for r in map(json.loads, text.splitlines())}
    assert rows["native"]["scale_median"] == 1.0
    assert rows["figure<=1.2x"]["scale_median"] == pytest.approx(1 / 1.2, rel=0.05)


@pytest.mark.slow
def test_against_biharmonic_pairs_the_default_edit_with_the_fill_on_the_same_cases():
    from napari_ilat import edit
    from napari_ilat.evaluation.metrics import all_metrics
    from napari_ilat.evaluation.quality import box_cases, classical_methods

    lines = run_script("against_biharmonic.py", "--sets", "box", "--n", "2", "--every", "1").splitlines()
    running, final = (json.loads(line) for line in lines)  # after the first case, then at the end
    assert running["n"] == 1 and final["n"] == 2 and final["set"] == "box" and final["split"] == "test"
    model, fill = load_model("natural"), classical_methods()["biharmonic"]
    ours, theirs = [], []
    for seed, src, tgt, mask, cond in box_cases(2, 128):
        ours.append(all_metrics(edit(src, mask, model=model, seed=seed, **cond), tgt, mask)["psnr_mask"])
        theirs.append(all_metrics(fill(src, mask), tgt, mask)["psnr_mask"])
    assert running["model"] == pytest.approx(ours[0], abs=1e-3)
    assert final["model"] == pytest.approx(np.mean(ours), abs=1e-3)
    assert final["biharmonic"] == pytest.approx(np.mean(theirs), abs=1e-3)
    assert final["difference"] == pytest.approx(np.mean(ours) - np.mean(theirs), abs=2e-3) and final["se"] > 0


@pytest.mark.slow
def test_thin_strokes_pairs_each_sketch_with_the_edit_without_one():
    from napari_ilat import edit
    from napari_ilat.engine.sketch import thin_strokes
    from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
    from napari_ilat.evaluation.quality import natural_cases

    (row,) = [json.loads(line) for line in run_script("thin_strokes.py", "--n", "1").splitlines()]
    ((seed, s, t, m, cond),) = natural_cases(1, 128, True, "validation")
    model = load_model("natural")
    thin = thin_strokes(cond["sketch"], m, 4)
    # thin lines inside the mask only, far less ink than the XDoG map
    assert not thin[~m].any() and 0 < row["ink"]["thin4"] < row["ink"]["xdog"] and row["ink"]["none"] == 0
    for key, sketch in (("none", None), ("xdog", cond["sketch"]), ("thin4", thin)):
        expected = psnr(edit(s, m, model=model, seed=seed, sketch=sketch), t, m, cap=PSNR_CAP)
        assert row["seamless"][key]["mean"] == pytest.approx(expected, abs=1e-3)
    assert row["seamless"]["thin4"]["diff"] == pytest.approx(
        row["seamless"]["thin4"]["mean"] - row["seamless"]["none"]["mean"], abs=2e-3
    )
