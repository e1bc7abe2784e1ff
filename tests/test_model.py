"""Saving and loading models: safetensors + JSON, checksums, and no unpickling ever."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_ilat import edit, load_model, save_model
from napari_ilat.engine.model import ILATModel, ModelConfig
from napari_ilat.engine.transformer import TransformerConfig
from napari_ilat.engine.vqgan import VQGANConfig


@pytest.fixture
def saved(tmp_path):
    model = ILATModel.tiny(cond="sketch", seed=1)
    return model, save_model(model, tmp_path / "tiny")


def test_roundtrip_gives_identical_edits(saved):
    model, path = saved
    assert path.name == "tiny.json" and path.with_suffix(".safetensors").exists()
    loaded = load_model(path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    img = np.random.default_rng(0).random((32, 32, 3))
    mask = np.zeros((32, 32), bool)
    mask[10:20, 5:25] = True
    assert np.array_equal(edit(img, mask, model=model, seed=3), edit(img, mask, model=loaded, seed=3))
    assert load_model(path.with_suffix("")).config.to_dict() == model.config.to_dict()


def test_truncated_file_is_a_clear_error(saved):
    _, path = saved
    w = path.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)
    meta = json.loads(path.read_text())
    meta["sha256"] = __import__("hashlib").sha256(w.read_bytes()).hexdigest()  # a matching checksum:
    path.write_text(json.dumps(meta))  # the truncated file is still refused cleanly
    with pytest.raises(ValueError, match="not a valid safetensors"):
        load_model(path)


@pytest.mark.parametrize("split", [False, True], ids=["format-1", "format-2"])
def test_model_json_without_sha256_is_refused(tmp_path, split):
    """Checksums are required: removing them from the JSON does not skip the check."""
    path = save_model(ILATModel.tiny(seed=2), tmp_path / "m", split=split)
    meta = json.loads(path.read_text())
    if split:
        del meta["files"]["stage2"]["sha256"]
    else:
        del meta["sha256"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="checksums are required"):
        load_model(path)


def test_format_1_json_with_an_absolute_or_relative_weights_path_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = save_model(ILATModel.tiny(seed=2), elsewhere / "m")
    target = tmp_path / "m.json"
    for name in (str(elsewhere / "m.safetensors"), "elsewhere/m.safetensors", "../m.safetensors"):
        meta = json.loads(path.read_text())
        meta["weights"] = name
        target.write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="must be a file name beside the JSON"):
            load_model(target)


def test_modified_file_fails_the_checksum(saved):
    _, path = saved
    w = path.with_suffix(".safetensors")
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle code ran')",))


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_pickles_are_refused_without_running_code(saved, kind):
    _, path = saved
    w = path.with_suffix(".safetensors")
    if kind == "pickle":
        w.write_bytes(pickle.dumps({"x": Boom()}, protocol=4))
    else:
        torch.save({"x": torch.zeros(2)}, w)
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="pickle"):
        load_model(path)


def test_bad_config_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a napari-ilat model config"):
        load_model(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="codebook"):
        ModelConfig(VQGANConfig(n_embed=64), TransformerConfig(vocab_size=32))


def test_the_bundled_models_are_found_and_load():
    """The wheel's models: found by name (the layout moved the engine once and lost them
    without a failing test), checksums verified, and they edit."""
    from napari_ilat.engine.model import bundled_models

    assert {"pose", "natural"} <= set(bundled_models())
    for name in ("pose", "natural"):
        model = load_model(name)
        assert model.config.vqgan.resolution == 128 and model.cond in ("pose", "sketch")


def test_a_bundled_name_is_not_shadowed_by_a_json_in_the_working_directory(tmp_path, monkeypatch):
    """`napari-ilat edit ... --pose pose.json` run where pose.json (keypoints) lies: the default
    model 'pose' is still the bundled one; an explicit path still means the file."""
    from napari_ilat.engine.model import WEIGHTS_DIR, model_json_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pose.json").write_text('{"keypoints": []}')
    assert model_json_path("pose") == WEIGHTS_DIR / "pose.json"
    assert load_model("pose").cond == "pose"
    assert model_json_path("pose.json") == Path("pose.json")
    (tmp_path / "mine.json").write_text("{}")
    assert model_json_path("mine") == Path("mine.json")  # not bundled: the local file


def test_a_folder_given_as_a_model_names_the_model_files_in_it(saved, tmp_path, monkeypatch):
    """A `train recipe --out` folder passed as the model: the message names its model JSON
    (not the run's other JSON records); a folder named like a bundled model does not shadow it."""
    from napari_ilat.engine.model import model_json_path

    _, path = saved  # tmp_path/tiny.json + weights
    (tmp_path / "recipe.json").write_text('{"phases": {}}')  # a run record, no model
    with pytest.raises(FileNotFoundError, match=rf"is a folder, not a model; pass {path}$"):
        load_model(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="it holds no model NAME.json"):
        load_model(tmp_path / "empty")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pose").mkdir()  # e.g. a folder of keypoint files beside the images
    assert load_model("pose").cond == "pose"
    assert model_json_path("pose").parent.name == "weights"


def test_the_bundled_imagebart_model_shares_the_natural_first_stage():
    """mode imagebart with no model given uses the bundled ImageBART model, trained on the
    bundled natural model's first stage and loading that very file (not a copy: the wheel
    carries it once), checksum-verified on load."""
    import json

    import numpy as np

    from napari_ilat import edit
    from napari_ilat.engine.imagebart import default_imagebart_model, is_imagebart
    from napari_ilat.engine.model import WEIGHTS_DIR

    name = default_imagebart_model()
    meta = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    natural = json.loads((WEIGHTS_DIR / "natural.json").read_text())
    assert meta["files"]["stage1"] == natural["files"]["stage1"]
    assert all((WEIGHTS_DIR / f["file"]).stat().st_size < 16 * 2**20 for f in meta["files"].values())
    model = load_model(name)
    assert is_imagebart(model) and model.resolution == 128 and "train imagebart" in meta["training"]["command"]
    img = (np.random.default_rng(0).random((96, 100, 3)) * 255).astype(np.uint8)
    mask = np.zeros((96, 100), bool)
    mask[30:50, 40:64] = True
    out = edit(img, mask, mode="imagebart", seed=0)
    assert np.array_equal(out[~mask], img[~mask]) and not np.array_equal(out[mask], img[mask])
