"""Turn a finished stage-2 run (which carries its frozen first stage) into a loadable model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from napari_ilat.engine.model import ILATModel, ModelConfig, save_model
from napari_ilat.engine.transformer import TransformerConfig
from napari_ilat.engine.vqgan import VQGANConfig
from napari_ilat.train import common as C


def model_from_run(
    run_dir, name: str | None = None, description: str = "", best: bool = False
) -> tuple[ILATModel, dict]:
    """The run's model (its last checkpoint; ``best``: the transformer of the step with the
    best validation edits, kept by ``val_edits``) and its run record."""
    run_dir = Path(run_dir)
    if not C.has_checkpoint(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a training run directory")
    run = C.read_run(run_dir)
    if run.get("stage") != "transformer":
        raise ValueError(f"{run_dir} is a {run.get('stage')!r} run; export needs the stage-2 (transformer) run")
    cfg = ModelConfig(
        VQGANConfig.from_dict(run["first_stage"]["config"]),
        TransformerConfig.from_dict(run["model"]),
        name=name or run_dir.name,
        description=description,
    )
    model = ILATModel(cfg)
    model.vqgan.load_state_dict(C.load_weights(run_dir, "first_stage"), strict=True)
    weights, run = C.exported_weights(run_dir, "transformer", run, best)
    model.transformer.load_state_dict(weights, strict=True)
    return model.eval(), run


def _provenance(run: dict) -> dict:
    info = {
        "steps": run["step"],
        "train_minutes": round(run.get("elapsed_s", 0) / 60, 1),
        "device": run.get("device"),
        "world_size": run.get("world_size"),
        "validation": run["history"][-1] if run.get("history") else None,
    }
    info.update(C.exported_record(run))  # a best-step export: that step, not the last
    src = run["first_stage"].get("source")
    if src and str(src).endswith(".json") and Path(src).is_file():
        # the run started from an exported model (`train transformer --init MODEL`): keep how
        # that one was trained (device, minutes, steps) beside this run's own numbers
        prior = json.loads(Path(src).read_text()).get("training")
        info["started_from"] = {"model": Path(src).name, "training": prior}
    elif src and Path(src).is_dir() and C.has_checkpoint(src):
        r1 = C.read_run(src)
        info["first_stage"] = {
            "steps": r1["step"],
            "train_minutes": round(r1.get("elapsed_s", 0) / 60, 1),
            "validation": r1["history"][-1] if r1.get("history") else None,
        }
    return info


def export(run_dir, out, *, name=None, description="", dtype="float16", single_file=False, best=False) -> list[Path]:
    """Write the model (``best``: with the transformer of the best validation edits);
    returns the paths written (JSON first)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".json", ".safetensors") else out
    model, run = model_from_run(run_dir, name or stem.name, description, best=best)
    stem.parent.mkdir(parents=True, exist_ok=True)
    torch_dtype = {"float16": torch.float16, "float32": None}[dtype]
    C.give_colour_table(model.vqgan, run["first_stage"], run_dir)  # the context palette's, stored in the JSON
    cfg_path = save_model(model, stem, split=not single_file, dtype=torch_dtype)
    meta = json.loads(cfg_path.read_text())
    meta["training"] = _provenance(run)  # informational; the checksums cover the weights
    cfg_path.write_text(json.dumps(meta, indent=2) + "\n")
    if single_file:
        paths = [cfg_path, cfg_path.with_suffix(".safetensors")]
    else:
        paths = [cfg_path] + [cfg_path.parent / f["file"] for f in meta["files"].values()]
    for p in paths:  # safetensors writes 0600; files that ship in a wheel must be world-readable
        p.chmod(0o644)
    return paths


# the parts of a first stage that make the codes: a decoder-only run must leave them as they are
CODE_PARTS = ("encoder.", "quant_conv.", "quantize.")


def with_decoder(model_name, out, *, decoder_run, name=None, description="", dtype="float16") -> list[Path]:
    """Write the model ``model_name`` (iLAT or ImageBART) with the decoder of a decoder-only
    first-stage run (``train vqgan --init MODEL --decoder-only``); returns the paths written
    (JSON first). The run's encoder and codebook must equal the model's bit for bit, so every
    image keeps its codes and the model's transformer (or reverse stages) stays valid. The
    colour table is decoded again: the same codes look a little different now."""
    from napari_ilat.engine.imagebart import is_imagebart, save_imagebart
    from napari_ilat.engine.model import load_model, model_json_path
    from napari_ilat.engine.palette import code_colours
    from napari_ilat.train.first_stage import load_first_stage_weights

    run = C.read_run(decoder_run) if C.has_checkpoint(decoder_run) else {}
    if run.get("stage") != "vqgan":
        raise FileNotFoundError(
            f"--first-stage {decoder_run}: not a first-stage run directory (the --out of "
            f"`napari-ilat train vqgan --init {model_name} --decoder-only`)"
        )
    model = load_model(model_name)
    cfg, sd = load_first_stage_weights(decoder_run)
    if cfg != model.vqgan.config:
        raise ValueError(f"{decoder_run} is another first-stage architecture than {model_name}'s")
    own = model.vqgan.state_dict()
    moved = [k for k in own if k.startswith(CODE_PARTS) and not torch.equal(own[k], sd[k].to(own[k].dtype))]
    if moved:
        raise ValueError(
            f"{decoder_run}'s encoder or codebook differ from {model_name}'s ({len(moved)} tensors, e.g. "
            f"{moved[0]}): images would get other codes than the ones its transformer learnt. Train the "
            f"decoder with `napari-ilat train vqgan --init {model_name} --decoder-only`"
        )
    model.vqgan.load_state_dict(sd, strict=True)
    model.vqgan.code_colours = code_colours(model.vqgan)  # the context palette's, stored in the JSON
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".json", ".safetensors") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    model.config.name = name or stem.name
    model.config.description = description or (
        f"{model.config.description}; its decoder trained {run['step']} more steps alone "
        f"(`napari-ilat train vqgan --init MODEL --decoder-only`) on {run.get('device')}"
    )
    torch_dtype = {"float16": torch.float16, "float32": None}[dtype]
    if is_imagebart(model):
        cfg_path = save_imagebart(model, stem, dtype=torch_dtype)
    else:
        cfg_path = save_model(model, stem, split=True, dtype=torch_dtype)
    meta = json.loads(cfg_path.read_text())
    prior = json.loads(model_json_path(model_name).read_text()).get("training")
    meta["training"] = {
        "decoder_only": True,
        "steps": run["step"],
        "train_minutes": round(run.get("elapsed_s", 0) / 60, 1),
        "device": run.get("device"),
        "world_size": run.get("world_size"),
        "validation": run["history"][-1] if run.get("history") else None,
        "curve": run.get("history", []),
        "started_from": {"model": Path(str(model_name)).name, "training": prior},
    }
    cfg_path.write_text(json.dumps(meta, indent=2) + "\n")
    paths = [cfg_path] + [cfg_path.parent / f["file"] for f in meta["files"].values()]
    for p in paths:  # safetensors writes 0600; files that ship in a wheel must be world-readable
        p.chmod(0o644)
    return paths
