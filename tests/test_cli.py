"""`napari-ilat edit` / `napari-ilat demo`, and the npe2 manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.io

from napari_ilat.cli import main


@pytest.mark.gui
def test_manifest_is_valid():
    from npe2 import PluginManifest

    pm = PluginManifest._from_package_or_name("napari-ilat")  # what `npe2 validate` does
    pm.validate_imports()
    assert {w.display_name for w in pm.contributions.widgets} == {"iLAT editor"}
    assert {s.key for s in pm.contributions.sample_data} == {"pose", "photo"}


def test_sample_data_layers():
    from napari_ilat.plugin.sample_data import photo_sample, pose_sample

    kinds = [t[2] for t in pose_sample()]
    assert kinds == ["image", "labels", "shapes", "points"]
    image, mask = (t[0] for t in photo_sample())
    assert image.shape[:2] == mask.shape and mask.any()


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
    mask = np.zeros((48, 40), np.uint8)
    mask[10:20, 8:30] = 255
    skimage.io.imsave(tmp_path / "img.png", img, check_contrast=False)
    skimage.io.imsave(tmp_path / "mask.png", mask, check_contrast=False)
    return tmp_path, img, mask


def test_edit_one_image(files, tiny_model_path, capsys):
    d, img, mask = files
    rc = main(
        [
            "edit",
            str(d / "img.png"),
            "--mask",
            str(d / "mask.png"),
            "--model",
            str(tiny_model_path),
            "--seed",
            "1",
            "-o",
            str(d / "out.png"),
        ]
    )
    assert rc == 0
    out = skimage.io.imread(d / "out.png")
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[:5], img[:5]) and not np.array_equal(out[10:20, 8:30], img[10:20, 8:30])
    assert "wrote" in capsys.readouterr().err


def test_edit_folder_with_candidates_and_pose(files, tiny_pose_model_path):
    d, img, mask = files
    for sub in ("imgs", "masks", "poses"):
        (d / sub).mkdir()
    for stem in ("a", "b"):
        skimage.io.imsave(d / "imgs" / f"{stem}.png", img, check_contrast=False)
        skimage.io.imsave(d / "masks" / f"{stem}.tif", mask, check_contrast=False)
        (d / "poses" / f"{stem}.json").write_text(json.dumps({"nose": [20, 10], "neck": [20, 15, 1]}))
    rc = main(
        [
            "edit",
            str(d / "imgs"),
            "--mask",
            str(d / "masks"),
            "--pose",
            str(d / "poses"),
            "--model",
            str(tiny_pose_model_path),
            "--samples",
            "2",
            "--seed",
            "0",
            "-o",
            str(d / "out"),
            "-q",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in (d / "out").iterdir()) == ["a_0.png", "a_1.png", "b_0.png", "b_1.png"]


def test_edit_top_k_default_and_off(files, tiny_model_path):
    """--top-k defaults to edit()'s 20 and 0 means the whole distribution; both recorded."""
    from napari_ilat import edit, load_model
    from napari_ilat.cli.edit import read_metadata

    d, img, mask = files
    base = ["edit", str(d / "img.png"), "--mask", str(d / "mask.png"), "--model", str(tiny_model_path)]
    model = load_model(tiny_model_path)
    for flag, top_k in (([], 20), (["--top-k", "0"], None)):
        assert main([*base, "--seed", "2", *flag, "-o", str(d / "o.png"), "-q"]) == 0
        out = skimage.io.imread(d / "o.png")
        assert np.array_equal(out, edit(img, mask > 0, model=model, seed=2, top_k=top_k))
        assert read_metadata(d / "o.png")["top_k"] == top_k


def test_edit_guidance_default_and_given(files, tiny_pose_model_path):
    """--guidance defaults to edit()'s (recorded as the scale used) and is passed through."""
    from napari_ilat import edit, load_model
    from napari_ilat.cli.edit import read_metadata, read_pose
    from napari_ilat.engine.defaults import DEFAULT_GUIDANCE

    d, img, mask = files
    (d / "p.json").write_text(json.dumps({"nose": [20, 10], "neck": [20, 15, 1], "r_wrist": [30, 30]}))
    base = ["edit", str(d / "img.png"), "--mask", str(d / "mask.png"), "--model", str(tiny_pose_model_path)]
    base += ["--pose", str(d / "p.json"), "--seed", "2", "-o", str(d / "o.png"), "-q"]
    model = load_model(tiny_pose_model_path)
    pose = read_pose(d / "p.json", img.shape)
    outs = []
    for flag, guidance in (([], DEFAULT_GUIDANCE), (["--guidance", "3.5"], 3.5)):
        assert main([*base, *flag]) == 0
        outs.append(skimage.io.imread(d / "o.png"))
        assert np.array_equal(outs[-1], edit(img, mask > 0, pose, model=model, seed=2, guidance=guidance))
        assert read_metadata(d / "o.png")["guidance"] == guidance
    assert not np.array_equal(*outs)


def test_edit_palette_default_and_off(files, tmp_path):
    """--palette: 'auto' (default) uses a model's colour table without a pose or sketch,
    'off' does not; passed through to edit() and recorded (the setting and whether it was used)."""
    from napari_ilat import ILATModel, edit, save_model
    from napari_ilat.cli.edit import read_metadata
    from napari_ilat.engine.palette import code_colours

    d, img, mask = files
    img[..., 2] = 0  # no blue around the mask: the palette leaves out some codes
    skimage.io.imsave(d / "img.png", img, check_contrast=False)
    model = ILATModel.tiny(seed=4, resolution=32)
    model.vqgan.code_colours = code_colours(model.vqgan)
    path = save_model(model, tmp_path / "coloured")
    base = ["edit", str(d / "img.png"), "--mask", str(d / "mask.png"), "--model", str(path), "--seed", "2", "-q"]
    outs = []
    for flag, palette in (([], "auto"), (["--palette", "off"], "off")):
        assert main([*base, *flag, "-o", str(d / "o.png")]) == 0
        outs.append(skimage.io.imread(d / "o.png"))
        assert np.array_equal(outs[-1], edit(img, mask > 0, model=model, seed=2, palette=palette))
        meta = read_metadata(d / "o.png")
        assert meta["palette"] == palette and meta["palette_used"] is (palette == "auto")
    assert not np.array_equal(*outs)
    with pytest.raises(SystemExit) as e:
        main([*base, "--palette", "maybe", "-o", str(d / "o.png")])
    assert e.value.code == 2


def test_edit_palette_on_computes_a_missing_table_first_and_says_so(files, tmp_path, capsys):
    """--palette on with a model that carries no colour table: computed once, before the first
    image, and said on stderr; the model's files are left as they are."""
    from napari_ilat import ILATModel, edit, save_model
    from napari_ilat.cli.edit import read_metadata

    d, img, mask = files
    model = ILATModel.tiny(seed=4, resolution=32)
    path = save_model(model, tmp_path / "plain")
    before = path.read_bytes()
    base = ["edit", str(d / "img.png"), "--mask", str(d / "mask.png"), "--model", str(path), "--seed", "2"]
    assert main([*base, "--palette", "on", "-o", str(d / "o.png")]) == 0
    err = capsys.readouterr().err
    assert "colour table: the model carries none: each code's colour computed in" in err
    assert f"`napari-ilat convert colours {path}` stores it in the model" in err
    assert np.array_equal(skimage.io.imread(d / "o.png"), edit(img, mask > 0, model=model, seed=2, palette="on"))
    assert read_metadata(d / "o.png")["palette_used"] is True and path.read_bytes() == before
    # auto: the model carries no table, so no palette (the one "on" computed is not the model's)
    assert main([*base, "-o", str(d / "o.png")]) == 0
    assert "colour table" not in capsys.readouterr().err and read_metadata(d / "o.png")["palette_used"] is False


def test_edit_with_the_default_model_beside_a_pose_json(files, monkeypatch):
    """The demo's reproduce line run inside its folder: the keypoints file pose.json in the
    working directory must not be taken for the default model 'pose'."""
    d, img, mask = files
    monkeypatch.chdir(d)
    (d / "pose.json").write_text(json.dumps({"nose": [20, 10], "neck": [20, 15, 1]}))
    args = ["edit", "img.png", "--mask", "mask.png", "--pose", "pose.json", "--seed", "0", "-o", "out.png", "-q"]
    assert main(args) == 0
    assert skimage.io.imread(d / "out.png").shape == img.shape


def test_edit_user_errors_exit_2(files, tiny_model_path, capsys):
    d, img, _ = files
    skimage.io.imsave(d / "empty.png", np.zeros((48, 40), np.uint8), check_contrast=False)
    rc = main(
        [
            "edit",
            str(d / "img.png"),
            "--mask",
            str(d / "empty.png"),
            "--model",
            str(tiny_model_path),
            "-o",
            str(d / "o.png"),
        ]
    )
    assert rc == 2 and "mask is empty" in capsys.readouterr().err
    rc = main(["edit", str(d / "img.png"), "--mask", str(d / "nope.png"), "-o", str(d / "o.png")])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_demo_headless_writes_pngs(tmp_path, tiny_pose_model_path, capsys):
    rc = main(["demo", "--headless", "--model", str(tiny_pose_model_path), "-o", str(tmp_path / "demo")])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert names == ["after.png", "before.png", "mask.png", "pose.json", "pose_before.json", "side_by_side.png"]
    out = capsys.readouterr().out
    assert str(tmp_path / "demo" / "after.png") in out
    # both printed commands run as printed (the model given, as the demo's was)
    for k, line in enumerate(x for x in out.splitlines() if "napari-ilat edit " in x):
        argv = line.split("napari-ilat ", 1)[1].rstrip(")").split()
        argv[argv.index("-o") + 1] = str(tmp_path / f"edited{k}.png")
        assert main([*argv, "--model", str(tiny_pose_model_path), "-q"]) == 0, line
    assert len(list(tmp_path.glob("edited*.png"))) == 2


def test_demo_without_bundled_model_exits_2(tmp_path, capsys, monkeypatch):
    import napari_ilat.engine.model

    monkeypatch.setattr(napari_ilat.engine.model, "WEIGHTS_DIR", tmp_path / "no-weights")
    assert main(["demo", "--headless", "-o", str(tmp_path)]) == 2
    assert "not installed" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.gui
@pytest.mark.skipif(
    sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
    reason="needs a display (run under xvfb-run)",
)
def test_demo_window_quits(tmp_path, tiny_pose_model_path):
    env = dict(os.environ, NAPARI_ILAT_DEMO_QUIT_AFTER="0", NAPARI_ILAT_DEMO_SCREENSHOT=str(tmp_path / "shot.png"))
    proc = subprocess.run(
        [sys.executable, "-m", "napari_ilat.cli", "demo", "--model", str(tiny_pose_model_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_api_doc_example_runs():
    """The runnable example in docs/api.md runs as written."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    block = text.split("## A runnable example", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    exec(compile(block, "docs/api.md", "exec"), {})


def test_info_reports_versions_and_verifies_the_bundled_models(tmp_path, capsys, monkeypatch):
    """`napari-ilat info`: every bundled model loaded (checksums checked); a damaged one is
    named with the reason and exit code 1."""
    import shutil

    import napari_ilat.engine.model as model_mod

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["napari-ilat"] and info["packages"]["torch"]
    models = {m["name"]: m for m in info["models"]}
    assert {"pose", "natural"} <= set(models) and all(m["ok"] for m in models.values())
    assert models["pose"]["cond"] == "pose" and models["pose"]["trained_minutes"] > 0
    assert all(m["colour_table"] for m in models.values())  # the bundled models carry theirs

    for f in model_mod.WEIGHTS_DIR.glob("pose.*"):  # a copy of the install
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setattr(model_mod, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(model_mod, "bundled_models", lambda: ["pose"])
    meta = json.loads((tmp_path / "pose.json").read_text())
    meta.pop("code_colours")  # an older install: said
    (tmp_path / "pose.json").write_text(json.dumps(meta))
    assert main(["info"]) == 0
    assert "model pose: ok (checksums verified), no colour table (`napari-ilat convert colours` adds it)" in (
        capsys.readouterr().out
    )
    data = (tmp_path / "pose.stage2.safetensors").read_bytes()  # one file damaged
    (tmp_path / "pose.stage2.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["info"]) == 1
    out = capsys.readouterr().out
    assert "model pose: DOES NOT LOAD" in out and "checksum" in out
    (tmp_path / "pose.json").write_text("{not json")  # its JSON damaged too: still a report
    assert main(["info"]) == 1
    assert "model pose: DOES NOT LOAD: pose.json:" in capsys.readouterr().out


def test_folder_mode_with_a_pose_folder_uses_the_bundled_pose_model(tmp_path, monkeypatch, capsys):
    """`edit images --mask masks --pose pose -o out` where ./pose is the keypoint folder: the
    default model 'pose' is still the bundled one (the folder shadowed it: 'pose.json not found')."""
    from napari_ilat.cli.edit import read_metadata
    from napari_ilat.plugin.sample_data import pose_sample_pair

    monkeypatch.chdir(tmp_path)
    for d in ("images", "masks", "pose"):
        (tmp_path / d).mkdir()
    p = pose_sample_pair()
    skimage.io.imsave("images/a.png", p.source, check_contrast=False)
    skimage.io.imsave("masks/a.png", (p.mask * 255).astype(np.uint8), check_contrast=False)
    (tmp_path / "pose" / "a.json").write_text(json.dumps({"keypoints": p.target_pose.tolist()}))
    assert main(["edit", "images", "--mask", "masks", "--pose", "pose", "-o", "out", "--seed", "0", "-q"]) == 0
    assert read_metadata(tmp_path / "out" / "a.png")["model"] == "pose"


def test_edit_threads_sets_torch_threads_before_the_edit(files, tiny_model_path, capsys, monkeypatch):
    """--threads N: torch's CPU threads for this edit (one per process on a busy machine);
    without it torch's default is left alone; a count below 1 is refused before any work."""
    import torch

    d, _, _ = files
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)  # (the test process keeps its own)
    base = ["edit", str(d / "img.png"), "--mask", str(d / "mask.png"), "--model", str(tiny_model_path), "-q"]
    assert main([*base, "--threads", "1", "-o", str(d / "o.png")]) == 0 and calls == [1]
    assert main([*base, "-o", str(d / "o2.png"), "--overwrite"]) == 0 and calls == [1]
    assert main([*base, "--threads", "0", "-o", str(d / "o3.png")]) == 2 and calls == [1]
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err and not (d / "o3.png").exists()
