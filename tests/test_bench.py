"""The bench commands run end to end (tiny configurations; the numbers are not checked)."""

import json
import os
import sys

import numpy as np
import pytest

from napari_ilat import save_model
from napari_ilat.cli import main
from napari_ilat.engine.model import ILATModel
from napari_ilat.evaluation.speed import token_box_mask


def test_token_box_mask_hits_the_rate_on_whole_tokens():
    mask, rate = token_box_mask(128, 8, 0.3, np.random.default_rng(0))
    assert abs(rate - 0.3) < 0.03
    assert mask.mean() == rate
    blocks = mask.reshape(16, 8, 16, 8).any((1, 3))
    assert np.array_equal(blocks.repeat(8, 0).repeat(8, 1), mask)  # token aligned


@pytest.mark.slow
def test_bench_speed_cli(tmp_path, capsys):
    out = tmp_path / "speed.md"
    plot = tmp_path / "speed.png"
    assert (
        main(
            [
                "bench",
                "speed",
                "--preset",
                "tiny",
                "--repeats",
                "1",
                "--rates",
                "0.1,0.5",
                "--out",
                str(out),
                "--plot",
                str(plot),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert text.count("| iLAT cached (s) |") == 2 and text.count("\n|") >= 8
    assert "Sampling only" in capsys.readouterr().out
    from skimage.io import imread

    img = imread(plot)
    assert img.shape[:2] == (400, 1000) and img.std() > 0


@pytest.mark.slow
def test_bench_quality_cli(tmp_path):
    pose = save_model(ILATModel.tiny(cond="pose", resolution=32), tmp_path / "pose")
    natural = save_model(ILATModel.tiny(cond="sketch", resolution=32, seed=1), tmp_path / "nat")
    out = tmp_path / "quality.md"
    assert (
        main(
            [
                "bench",
                "quality",
                "--pose-model",
                str(pose),
                "--natural-model",
                str(natural),
                "--n",
                "2",
                "--out",
                str(out),
                "--examples",
                str(tmp_path / "ex"),
            ]
        )
        == 0
    )
    text = out.read_text()
    for method in ("ilat", "ilat*", "taming", "biharmonic"):
        assert f"| {method} |" in text
    assert text.count("held-out cases") == 4
    for name in ("pose", "natural", "box", "sketch"):
        assert (tmp_path / f"ex_{name}.png").exists()
    assert "ilat* = the same weights with the plain encoder" in text


def test_bench_quality_sets_and_box_cases(tmp_path, capsys):
    from napari_ilat.evaluation.quality import box_cases

    natural = save_model(ILATModel.tiny(cond="sketch", resolution=32, seed=1), tmp_path / "nat")
    assert (
        main(["bench", "quality", "--pose-model", "none", "--natural-model", str(natural), "--n", "2", "--sets", "box"])
        == 0
    )
    text = capsys.readouterr().out
    assert text.count("held-out cases") == 1 and "Box inpainting" in text
    assert main(["bench", "quality", "--natural-model", str(natural), "--sets", "boxes"]) == 2
    assert "unknown test set" in capsys.readouterr().err
    args = ["bench", "quality", "--pose-model", "none", "--natural-model", str(natural), "--n", "2", "--sets", "box"]
    assert main(args + ["--blend", "both"]) == 0
    both = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in both.splitlines() if line.startswith("| ")}
    assert {"ilat", "ilat (alpha)", "taming", "taming (alpha)", "biharmonic"} <= set(rows)
    assert rows["ilat"].split("|")[5] != rows["ilat (alpha)"].split("|")[5]  # the blend changes the in-mask PSNR
    assert main(args + ["--blend", "alpha"]) == 0
    alpha = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert alpha["ilat"].split("|")[2:7] == rows["ilat (alpha)"].split("|")[2:7]  # same edits, same scores
    for _, image, target, mask, cond in box_cases(20, 128):
        rows, cols = np.nonzero(mask)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert h == w and 48 <= h <= 64 and mask.sum() == h * w and cond == {}
        assert image is target


def test_bench_quality_uses_the_separate_plain_model(tmp_path, monkeypatch):
    import napari_ilat.evaluation.quality as bq

    pose = save_model(ILATModel.tiny(cond="pose", resolution=32), tmp_path / "pose")
    plain_model = ILATModel.tiny(cond="pose", resolution=32, seed=3)
    plain_model.config.name = "tiny-plain"
    plain = save_model(plain_model, tmp_path / "plain")
    used = []
    real_edit = bq.edit

    def spy(*args, model, mode, **kw):
        used.append((mode, model))
        return real_edit(*args, model=model, mode=mode, **kw)

    monkeypatch.setattr(bq, "edit", spy)
    md = bq.quality(pose, None, n_pose=2, plain_pose_model=plain)
    assert "`tiny-plain` (first stage trained without two-stream convolutions)" in md
    models = dict(used)
    assert models["ilat*"].config.name == "tiny-plain"
    assert models["ilat"] is models["taming"] and models["ilat"].config.name == "tiny"

    wrong = save_model(ILATModel.tiny(cond="sketch", resolution=32), tmp_path / "wrong")
    with pytest.raises(ValueError, match="does not match"):
        bq.quality(pose, None, n_pose=1, plain_pose_model=wrong)


def test_bench_rejects_bad_rates(capsys):
    assert main(["bench", "speed", "--rates", "0,2"]) == 2
    assert "--rates" in capsys.readouterr().err


def test_bench_scale_cli(tmp_path, tiny_pose_model_path):
    out = tmp_path / "scale.json"
    assert (
        main(
            [
                "bench",
                "scale",
                "--size",
                "96",
                "--mask",
                "8",
                "--repeats",
                "1",
                "--model",
                str(tiny_pose_model_path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["image"] == "96x96x3 uint8" and r["median_s"] > 0 and r["peak_above_gib"] >= 0
    assert main(["bench", "scale", "--size", "8", "--mask", "64"]) == 2


def test_bench_regenerate_and_native_cli(tmp_path, capsys, monkeypatch):
    """The two issue-16 benchmarks run end to end on tiny models and report what they measured."""
    assert main(["bench", "regenerate", "--preset", "tiny", "--rate", "0.2", "--repeats", "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "first edit of the image + mask (cold)" in text and "repeated Generate" in text
    tiny = save_model(ILATModel.tiny(resolution=32), tmp_path / "tiny")
    out = tmp_path / "native.json"
    args = ["bench", "native", "--size", "192", "--mask", "96", "--model", str(tiny), "--threads", "1"]
    import napari_ilat.engine.editing as E

    devices, real = [], E.edit_with_info
    monkeypatch.setattr(E, "edit_with_info", lambda *a, **k: devices.append(k["device"]) or real(*a, **k))
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and devices[-2:] == ["cpu", "cpu"]  # --device reaches the timed edits
    # native generates every token of the mask at the model's scale; resize one window's worth
    assert r["native"]["tokens"] > r["resize"]["tokens"] > 0
    assert r["native"]["seconds"] > 0 and r["resize"]["seconds"] > 0


@pytest.mark.gui
@pytest.mark.skipif(
    sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
    reason="needs a display (run under xvfb-run)",
)
@pytest.mark.parametrize("lazy", [0, 3000])
def test_bench_gui_cli(tmp_path, capsys, lazy):
    """`bench gui`: the longest event-loop stall during real threaded Generates, on the pose
    scene with a Labels mask or (--lazy N) on a lazy N x N pyramid through a Shapes mask."""
    out = tmp_path / "gui.json"
    args = ["bench", "gui", "--model", "tiny", "--size", "32", "--repeats", "2", "--out", str(out)]
    assert main([*args, "--lazy", str(lazy)]) == 0
    got = json.loads(out.read_text())
    assert got["lazy"] == lazy and got["tokens"] > 0 and len(got["runs"]) == 2
    assert all(r["ticks"] > 0 and r["generate_s"] > 0 and r["max_stall_ms"] >= 0 for r in got["runs"])
    if lazy:  # the region around the mask, not a 3000 x 3000 copy
        assert ", region]" in got["result_layer"] and max(got["result_shape"][:2]) < 64
    else:
        assert got["result_shape"][:2] == [32, 32]
