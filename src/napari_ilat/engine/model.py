"""An iLAT model = a TS-VQGAN first stage + an LA transformer, saved as safetensors + JSON.

Two layouts, both read by :func:`load_model`:

* one file (format 1): ``NAME.safetensors`` (all weights, prefixed ``vqgan.`` /
  ``transformer.``) and ``NAME.json`` (the configs and the sha256 of the weights file);
* two files (format 2, the bundled models): ``NAME.stage1.safetensors`` (first stage, keys
  without prefix), ``NAME.stage2.safetensors`` (transformer) and one ``NAME.json`` with the
  configs and both checksums. Weights may be stored in float16 (half the size; the bundled
  models must stay under 16 MiB a file) and are loaded back as float32.

Loading never unpickles: safetensors holds raw tensors only, and each checksum is verified
before the bytes are parsed. Checksums are required (a JSON without them is refused), and
the JSON may only name weights files beside it (no directories, no absolute paths).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from napari_ilat.engine.gpt import build_transformer, transformer_config_from_dict
from napari_ilat.engine.palette import read_table, table_meta
from napari_ilat.engine.transformer import TransformerConfig
from napari_ilat.engine.vqgan import VQGANConfig, VQModel

WEIGHTS_DIR = Path(__file__).parent.parent / "weights"  # napari_ilat/weights/
MODEL_FORMAT = "napari-ilat"  # the "format" of every model JSON (iLAT and ImageBART)
FORMAT_VERSION = 1
SPLIT_FORMAT_VERSION = 2
_PARTS = (("stage1", "vqgan"), ("stage2", "transformer"))


def check_matches_first_stage(second, vqgan: VQGANConfig, what: str) -> None:
    """A second stage (transformer, ImageBART) must read the first stage's tokens: same
    vocabulary and grid, and sketch cells of one token's pixels."""
    if second.vocab_size != vqgan.n_embed:
        raise ValueError(f"{what} vocab {second.vocab_size} != codebook size {vqgan.n_embed}")
    if second.grid != vqgan.grid:
        raise ValueError(f"{what} grid {second.grid} != first-stage grid {vqgan.grid}")
    if second.cond == "sketch" and second.sketch_patch != vqgan.factor:
        raise ValueError(f"sketch_patch {second.sketch_patch} != first-stage factor {vqgan.factor}")


@dataclass
class ModelConfig:
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    name: str = "custom"
    description: str = ""

    def __post_init__(self):
        check_matches_first_stage(self.transformer, self.vqgan, "transformer")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "vqgan": self.vqgan.to_dict(),
            "transformer": self.transformer.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(
            vqgan=VQGANConfig.from_dict(d["vqgan"]),
            transformer=transformer_config_from_dict(d["transformer"]),  # ours, or "gpt" (converted)
            name=d.get("name", "custom"),
            description=d.get("description", ""),
        )


class ILATModel(nn.Module):
    """First stage + transformer. ``resolution`` px square windows, ``grid`` tokens a side."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.vqgan = VQModel(config.vqgan)
        self.transformer = build_transformer(config.transformer)

    @property
    def resolution(self) -> int:
        return self.config.vqgan.resolution

    @property
    def cond(self) -> str:
        return self.config.transformer.cond

    @classmethod
    def tiny(cls, cond: str = "none", resolution: int = 32, seed: int = 0, **tf) -> ILATModel:
        """A small randomly initialised model (tests, speed scripts)."""
        torch.manual_seed(seed)
        vq = VQGANConfig.tiny(resolution)
        t = dict(vocab_size=vq.n_embed, grid=vq.grid, n_layer=2, n_head=2, n_embd=32, cond=cond, sketch_patch=vq.factor)
        t.update(tf)
        return cls(ModelConfig(vq, TransformerConfig(**t), name="tiny")).eval()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(model: ILATModel, path, *, split: bool = False, dtype: torch.dtype | None = None) -> Path:
    """Write ``path.safetensors`` and ``path.json``; returns the JSON path.

    ``split=True`` writes the two-file layout (``path.stage1.safetensors``,
    ``path.stage2.safetensors``); ``dtype`` (e.g. torch.float16) is the storage precision of
    floating-point weights (default: as they are)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if split:
        return _save_split(model, stem, dtype)
    weights = stem.with_suffix(".safetensors")
    state = {k: _stored(v, dtype) for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    meta = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "weights": weights.name,
        "sha256": _sha256(weights.read_bytes()),
        **table_meta(model.vqgan),
    }
    cfg_path = stem.with_suffix(".json")
    cfg_path.write_text(json.dumps(meta, indent=2) + "\n")
    return cfg_path


def _stored(t: torch.Tensor, dtype) -> torch.Tensor:
    t = t.detach().cpu()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.contiguous()


def _save_split(model: ILATModel, stem: Path, dtype) -> Path:
    files = {}
    for part, module_name in _PARTS:
        module = getattr(model, module_name)
        f = stem.with_name(f"{stem.name}.{part}.safetensors")
        save_file({k: _stored(v, dtype) for k, v in module.state_dict().items()}, str(f))
        files[part] = {
            "file": f.name,
            "module": module_name,
            "sha256": _sha256(f.read_bytes()),
            "dtype": str(dtype or "as saved").replace("torch.", ""),
        }
    meta = {
        "format": MODEL_FORMAT,
        "format_version": SPLIT_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "files": files,
        **table_meta(model.vqgan),
    }
    cfg_path = stem.with_name(stem.name + ".json")
    cfg_path.write_text(json.dumps(meta, indent=2) + "\n")
    return cfg_path


def _weights_path(cfg_path: Path, name) -> Path:
    """The weights file ``name`` beside ``cfg_path``: a bare file name only."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(
            f"{cfg_path}: weights file name {name!r} must be a file name beside the JSON (no directory, "
            "no absolute path)"
        )
    return cfg_path.parent / name


def _read_weights(weights: Path, cfg_path: Path, sha256) -> dict:
    """Checked bytes -> tensors: refuses pickles, requires and checks the sha256, then parses."""
    if not weights.exists():
        raise FileNotFoundError(f"weights file {weights} is missing")
    data = weights.read_bytes()
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:4] == b"PK\x03\x04":
        raise ValueError(f"{weights} is a pickle/zip checkpoint; only safetensors files are loaded")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(
            f"{cfg_path.name} has no valid sha256 for {weights.name}; checksums are required (save the "
            "model with save_model() or `napari-ilat train`, which record them)"
        )
    if _sha256(data) != sha256.lower():
        raise ValueError(
            f"{weights} does not match the checksum in {cfg_path.name} (truncated or modified "
            "file?); re-copy or re-train it"
        )
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ValueError(f"{weights} is not a valid safetensors file: {e}") from e


def read_checked_weights(cfg_path: Path, name, sha256) -> dict:
    """The tensors of weights file ``name`` beside ``cfg_path`` (a bare file name), its
    sha256 checked first: for other model kinds stored the same way (engine/imagebart.py)."""
    return _read_weights(_weights_path(cfg_path, name), cfg_path, sha256)


def bundled_models() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def is_model_json(path: Path) -> bool:
    """Whether ``path`` is a napari-ilat model config (not a run record or a pose file)."""
    try:
        return json.loads(path.read_text()).get("format") == MODEL_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def model_kind(model) -> str:
    """``"imagebart"`` or ``"ilat"``: which engine a model (a loaded one, a bundled name or a
    NAME.json path) runs on, read from its JSON without loading the weights."""
    if isinstance(model, torch.nn.Module):
        return "imagebart" if getattr(model, "kind", None) == "imagebart" else "ilat"
    try:
        meta = json.loads(model_json_path(model).read_text())
    except (OSError, ValueError):
        return "ilat"  # unreadable: edit() says why when it loads it
    return "imagebart" if isinstance(meta, dict) and meta.get("kind") == "imagebart" else "ilat"


def model_json_path(name_or_path) -> Path:
    """The NAME.json of a bundled model name or a saved model's path (error if there is none).

    A path with a suffix, or one that exists as given, is a file; otherwise a bundled model's
    name wins over a NAME.json, a file or a folder of that name in the working directory (a
    folder of edits often holds a ``pose.json`` of keypoints, or a ``pose/`` folder of them,
    which are no model), and only then is NAME.json looked for. A folder that is not a
    bundled name is an error that names the model JSON files in it."""
    p = Path(name_or_path)
    bundled = p.name == str(name_or_path) and (WEIGHTS_DIR / f"{p.name}.json").exists()
    if p.is_dir() and not bundled:  # e.g. a `train recipe --out` folder: name its model file(s)
        models = sorted(q.name for q in p.glob("*.json") if is_model_json(q))
        hint = f"pass {' or '.join(str(p / m) for m in models)}" if models else "it holds no model NAME.json"
        raise FileNotFoundError(f"{p} is a folder, not a model; {hint}")
    # a bare bundled name is the bundled model even where a file or folder of that name lies
    # here (folder mode's `--pose pose/`: the default model is 'pose')
    if p.suffix in (".json", ".safetensors") or (not bundled and (p.exists() or p.with_suffix(".json").exists())):
        p = p.with_suffix(".json") if p.suffix != ".json" else p
        if not p.exists():
            raise FileNotFoundError(f"model config {p} not found (expected NAME.json next to NAME.safetensors)")
        return p
    p = WEIGHTS_DIR / f"{name_or_path}.json"
    if not p.exists():
        have = ", ".join(bundled_models()) or "none installed in this build"
        raise FileNotFoundError(
            f"no bundled model named {name_or_path!r} (bundled: {have}); pass the path to a "
            "NAME.json/NAME.safetensors pair written by `napari-ilat train` or save_model()"
        )
    return p


def load_model(name_or_path, device="cpu", dtype=torch.float32) -> ILATModel:
    """Load a bundled model by name or a saved model by path; verifies the sha256 first.
    A JSON of ``"kind": "imagebart"`` gives an ImageBARTModel (engine/imagebart.py)."""
    cfg_path = model_json_path(name_or_path)
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not a napari-ilat model config: {e}") from e
    if isinstance(meta, dict) and meta.get("kind") == "imagebart":  # the other engine: its own loader
        from napari_ilat.engine.imagebart import load_imagebart

        return load_imagebart(cfg_path, meta, device, dtype)
    try:
        config = ModelConfig.from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path} is not a napari-ilat model config: {e}") from e
    if "files" in meta:  # two-file layout (format 2)
        state = {}
        try:
            parts = [(meta["files"][part], module) for part, module in _PARTS]
            names = [(p["file"], p.get("sha256")) for p, _ in parts]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{cfg_path} is not a napari-ilat model config: bad 'files' entry {e}") from e
        for (name, sha), (_, module) in zip(names, parts):
            part_state = _read_weights(_weights_path(cfg_path, name), cfg_path, sha)
            state.update({f"{module}.{k}": v for k, v in part_state.items()})
    else:
        weights = _weights_path(cfg_path, meta.get("weights", cfg_path.with_suffix(".safetensors").name))
        state = _read_weights(weights, cfg_path, meta.get("sha256"))
    model = ILATModel(config)
    read_table(model.vqgan, meta, cfg_path)
    # float16-stored weights are cast to the model's float32 here (load_state_dict copies)
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


__all__ = ["ILATModel", "ModelConfig", "load_model", "save_model", "bundled_models", "read_checked_weights"]
