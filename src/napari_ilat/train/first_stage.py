"""Loading a first stage for stage-2 training (or as the start of stage 1):

* a stage-1 run directory written by ``napari-ilat train vqgan``;
* a napari-ilat model (``NAME.json`` or a bundled name): its first stage;
* a public taming-transformers VQGAN checkpoint (``.ckpt``/``.pt``/``.pth``). Those are
  pickles: they are read with ``torch.load(..., weights_only=True)``, PyTorch's restricted
  unpickler that only rebuilds tensors and plain containers, so a malicious file cannot run
  code; anything else in the file makes it fail with a clear message;
* a ``.safetensors`` file with a taming-layout state dict.

For the last two the architecture is read off the tensor shapes (channels, levels, blocks,
codebook); ``config_json`` (a JSON file or dict with VQGANConfig fields) overrides it, e.g.
``{"resolution": 256}``. Without it the resolution is chosen for a 16x16 token grid, as in
taming's f16 models.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from napari_ilat.engine.vqgan import VQGANConfig

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def read_state_dict(path) -> dict:
    """Tensors of a .safetensors file or (safely) of a pickled torch checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"first-stage checkpoint {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise ValueError(f"{path} is not a valid safetensors file: {e}") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for disallowed globals, RuntimeError for corrupt zips...
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) (the safe loader that "
            f"refuses arbitrary Python objects): {type(e).__name__}: {str(e).splitlines()[0][:300]}. "
            "If you trust the file, convert its state dict to .safetensors yourself."
        ) from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return sd


def infer_config(sd: dict, overrides: dict | None = None) -> VQGANConfig:
    """VQGANConfig from a taming-layout state dict's shapes."""
    try:
        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
        mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
        blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
        attn_levels = [i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in sd]
        n_embed, embed_dim = sd["quantize.embedding.weight"].shape
        z_channels = sd["quant_conv.weight"].shape[1]
        in_ch = sd["encoder.conv_in.weight"].shape[1]
        out_ch = sd["decoder.conv_out.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"not a taming-layout VQGAN state dict (missing {e})") from e
    overrides = dict(overrides or {})
    factor = 2 ** (len(mult) - 1)
    res = int(overrides.pop("resolution", 16 * factor))
    d = dict(
        resolution=res,
        in_channels=in_ch,
        out_ch=out_ch,
        ch=ch,
        ch_mult=mult,
        num_res_blocks=blocks,
        attn_resolutions=tuple(res // 2**i for i in attn_levels),
        z_channels=z_channels,
        embed_dim=embed_dim,
        n_embed=n_embed,
    )
    d.update(overrides)
    return VQGANConfig(**d)


def load_first_stage_weights(path, config_json=None) -> tuple[VQGANConfig, dict]:
    """(config, state dict with taming keys, no "loss." entries) from any supported source."""
    from napari_ilat.train.common import has_checkpoint, load_weights, read_run

    p = Path(path)
    overrides = None
    if config_json is not None:
        overrides = config_json if isinstance(config_json, dict) else json.loads(Path(config_json).read_text())
    if p.is_dir():
        if not has_checkpoint(p):
            raise FileNotFoundError(f"{p} is not a training run directory (no run.json/model.safetensors)")
        run = read_run(p)
        if run.get("stage") == "vqgan":
            return VQGANConfig.from_dict(run["model"]), load_weights(p, "vqgan")
        if run.get("stage") == "transformer":
            return VQGANConfig.from_dict(run["first_stage"]["config"]), load_weights(p, "first_stage")
        raise ValueError(f"{p} holds an unknown run stage {run.get('stage')!r}")
    if p.suffix == ".json" or (not p.exists() and not p.suffix):
        from napari_ilat.engine.model import load_model

        vq = load_model(path).vqgan
        return vq.config, {k: v.float() for k, v in vq.state_dict().items()}
    sd = read_state_dict(p)
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    cfg = infer_config(sd, overrides)
    sd = {k: v.float() for k, v in sd.items()}
    from napari_ilat.engine.vqgan import VQModel

    try:
        VQModel(cfg).load_taming_state_dict(sd, strict=True)  # fail here, with the reason
    except RuntimeError as e:
        raise ValueError(f"{p} does not match the inferred first-stage config {cfg}: {e}") from e
    return cfg, sd


def source_colours(path, n_embed: int):
    """The colour table (engine/palette.py) a first-stage source already carries, or None: a
    model's (its JSON's ``code_colours``), a transformer or ImageBART run's (run.json's
    ``first_stage``), a stage-1 run's (run.json, from :func:`store_colour_table`). Bare
    weights files carry none. A run on the source's first stage keeps its weights bit for
    bit, so their table is its table, and decoding every code again (a minute of a CPU at
    the bundled size) is work done twice."""
    from napari_ilat.engine.palette import colours_from_json
    from napari_ilat.train.common import has_checkpoint, read_run

    p = Path(path)
    if p.is_dir():
        if not has_checkpoint(p):
            return None
        run = read_run(p)
        meta, where = (run.get("first_stage") or {}) if run.get("stage") != "vqgan" else run, p / "run.json"
    elif p.suffix == ".json" or (not p.exists() and not p.suffix):
        from napari_ilat.engine.model import model_json_path

        where = model_json_path(path)
        meta = json.loads(where.read_text())
    else:
        return None
    if not isinstance(meta, dict) or "code_colours" not in meta:
        return None
    return colours_from_json(meta["code_colours"], n_embed, str(where))


def store_colour_table(run_dir, device="cpu") -> None:
    """Decode a stage-1 run's colour table and keep it in its run.json (``code_colours``),
    where :func:`source_colours` finds it for the runs on this first stage. The recipe does
    this inside its training budget; a later save of the run (training it further) writes
    run.json anew, without the table, so a stale one cannot outlive its weights."""
    from napari_ilat.engine.palette import code_colours, colours_to_json
    from napari_ilat.engine.vqgan import VQModel
    from napari_ilat.train.common import atomic_write_text, read_run

    cfg, sd = load_first_stage_weights(run_dir)
    vq = VQModel(cfg)
    vq.load_taming_state_dict(sd, strict=True)
    vq.to(device).eval()
    run = read_run(run_dir)
    run["code_colours"] = colours_to_json(code_colours(vq))
    atomic_write_text(json.dumps(run, indent=1) + "\n", Path(run_dir) / "run.json")  # as save_checkpoint
