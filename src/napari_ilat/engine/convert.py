"""Converting published weights (taming-transformers, iLAT) into napari-ilat models.

Every file is opened with ``torch.load(weights_only=True)`` (engine/checkpoint.py); the
architecture is read off the tensor shapes, except what weights cannot tell (the number of
attention heads, taming's SOS token id, iLAT's decoder tanh), which are arguments with the
published values as defaults. Each mapping has an inverse (``to_taming`` / ``to_ilat``), so
a converted model can be written back in the reference layout; the tests check that the
round trip is bit-exact. The key-by-key table: docs/convert.md.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import torch

from napari_ilat.engine.checkpoint import load_checkpoint, state_dict_of
from napari_ilat.engine.gpt import GPTConfig
from napari_ilat.engine.model import ILATModel, ModelConfig
from napari_ilat.engine.vqgan import VQGANConfig

TAMING_N_HEAD = 16  # every transformer config published with taming-transformers
ILAT_N_HEAD = 12  # iLAT configs/transformer_ffhq.yml
TAMING_NOTICE = (
    "a taming-transformers transformer was trained for plain raster order: mode 'taming' runs it "
    "as published; modes 'ilat' and 'ilat*' run it under the LA mask, which is the paper's "
    "'Taming*' (a baseline it was not trained for)"
)


def _float(sd: dict) -> dict:
    # own, contiguous float32 copies: the files tie tensors (shared storage, which safetensors
    # refuses) and may hold float16
    return {k: (v.float() if v.is_floating_point() else v).clone().contiguous() for k, v in sd.items()}


def _sub(sd: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _need(sd: dict, key: str, what: str) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"{what} has no {key!r}: not the expected layout (keys: {', '.join(list(sd)[:6])}, ...)")
    return sd[key]


def _levels(sd: dict, prefix: str) -> list[int]:
    return sorted({int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})


# --------------------------------------------------------------------------- first stages


def vqgan_config_from_state(sd: dict, *, grid: int = 16, out_act: str = "none", what="VQGAN") -> VQGANConfig:
    """VQGANConfig of a taming-layout state dict (taming's VQModel, iLAT's TS-VQGAN) from its
    shapes; ``grid`` tokens a side decides the nominal resolution."""
    conv_in = _need(sd, "encoder.conv_in.weight", what)
    ch = conv_in.shape[0]
    levels = _levels(sd, "encoder.down.")
    if not levels:
        raise ValueError(f"{what} has no encoder.down.N levels")
    mult = tuple(_need(sd, f"encoder.down.{i}.block.0.conv1.weight", what).shape[0] // ch for i in levels)
    dec = tuple(_need(sd, f"decoder.up.{i}.block.0.conv1.weight", what).shape[0] // ch for i in levels)
    blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
    factor = 2 ** (len(levels) - 1)
    res = grid * factor
    attn_levels = [i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in sd]
    down = sd.get("encoder.down.0.downsample.conv.weight")
    n_embed, embed_dim = _need(sd, "quantize.embedding.weight", what).shape
    return VQGANConfig(
        resolution=res,
        in_channels=conv_in.shape[1],
        out_ch=_need(sd, "decoder.conv_out.weight", what).shape[0],
        ch=ch,
        ch_mult=mult,
        num_res_blocks=blocks,
        attn_resolutions=tuple(res // 2**i for i in attn_levels),
        z_channels=_need(sd, "quant_conv.weight", what).shape[1],
        embed_dim=embed_dim,
        n_embed=n_embed,
        norm="group" if "encoder.norm_out.weight" in sd else "instance",
        attention="encoder.mid.attn_1.q.weight" in sd,
        ch_mult_dec=None if dec == mult else dec,
        downsample="conv4" if down is not None and down.shape[-1] == 4 else "pad_conv3",
        out_act=out_act,
    )


def _check_loads(module: torch.nn.Module, sd: dict, what: str):
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{what} does not match the architecture read off its shapes: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def sketch_vq_config_from_state(sd: dict, *, grid: int = 16, what="sketch VQGAN") -> VQGANConfig:
    """Config of iLAT's sketch VQGAN encoder from its (reference-layout) shapes."""
    conv_in = _need(sd, "encoder.conv_in.1.weight", what)
    ch = conv_in.shape[0]
    levels = _levels(sd, "encoder.down.")
    mult = (1,) + tuple(_need(sd, f"encoder.down.{i}.downsample.conv.weight", what).shape[0] // ch for i in levels)
    n_embed, embed_dim = _need(sd, "quantize.embedding.weight", what).shape
    return VQGANConfig(
        resolution=grid * 2 ** len(levels),
        in_channels=conv_in.shape[1],
        out_ch=conv_in.shape[1],
        ch=ch,
        ch_mult=mult,
        num_res_blocks=len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")}),
        attn_resolutions=(),
        z_channels=_need(sd, "encoder.conv_out.weight", what).shape[0],
        embed_dim=embed_dim,
        n_embed=n_embed,
        norm="group" if "encoder.norm_out.weight" in sd else "instance",
        attention=False,
    )


# --------------------------------------------------------------------------- transformer blocks

# minGPT / iLAT block names -> ours (q, k, v are fused into c_attn, in that order)
_BLOCK_RENAME = {"ln1.": "ln_1.", "ln2.": "ln_2.", "attn.proj.": "attn.c_proj.", "mlp.0.": "mlp.0.", "mlp.2.": "mlp.2."}


def _blocks_in(sd: dict, what: str) -> tuple[dict, int]:
    n_layer = len(_levels(sd, "blocks."))
    out = {}
    for i in range(n_layer):
        p = f"blocks.{i}."
        for theirs, ours in _BLOCK_RENAME.items():
            for t in ("weight", "bias"):
                out[f"{p}{ours}{t}"] = _need(sd, f"{p}{theirs}{t}", what)
        for t in ("weight", "bias"):
            qkv = [_need(sd, f"{p}attn.{n}.{t}", what) for n in ("query", "key", "value")]
            out[f"{p}attn.c_attn.{t}"] = torch.cat(qkv, dim=0)
    return out, n_layer


def _blocks_out(ours: dict, n_layer: int) -> dict:
    out = {}
    for i in range(n_layer):
        p = f"blocks.{i}."
        for theirs, mine in _BLOCK_RENAME.items():
            for t in ("weight", "bias"):
                out[f"{p}{theirs}{t}"] = ours[f"{p}{mine}{t}"]
        for t in ("weight", "bias"):
            q, k, v = ours[f"{p}attn.c_attn.{t}"].chunk(3, dim=0)
            out[f"{p}attn.query.{t}"], out[f"{p}attn.key.{t}"], out[f"{p}attn.value.{t}"] = q, k, v
    return out


def _model(vq_cfg: VQGANConfig, vq_sd: dict, t_cfg: GPTConfig, t_sd: dict, name: str, description: str):
    model = ILATModel(ModelConfig(vq_cfg, t_cfg, name=name, description=description))
    _check_loads(model.vqgan, vq_sd, "the first stage")
    _check_loads(model.transformer, t_sd, "the transformer")
    return model.eval()


# --------------------------------------------------------------------------- taming


def taming_from_state_dicts(
    sd: dict,
    first_stage: dict | None = None,
    *,
    n_head: int = TAMING_N_HEAD,
    sos_token: int = 0,
    name: str = "taming",
    source: str = "taming-transformers",
) -> ILATModel:
    """A Net2NetTransformer state dict (``first_stage_model.*``, ``transformer.*``) -> our model.

    ``first_stage``: a VQGAN state dict (taming's VQModel keys) to use instead of the one
    inside ``sd``."""
    sd = _float(sd)
    t = _sub(sd, "transformer.")
    if not t:
        if "encoder.conv_in.weight" in sd:
            raise ValueError(
                "this is a VQGAN checkpoint, not a transformer: convert the transformer checkpoint "
                "(pass this one as --first-stage), or train a transformer on it with "
                "`napari-ilat train transformer --first-stage`"
            )
        raise ValueError("no transformer.* weights: not a taming-transformers Net2NetTransformer checkpoint")
    cond = {k for k in sd if k.startswith("cond_stage_model.")}
    if cond:
        raise ValueError(
            f"this transformer is conditioned on a second model ({len(cond)} cond_stage_model.* tensors: "
            "segmentation, depth, ...); only unconditional taming transformers (FFHQ, CelebA-HQ) "
            "can be edited with napari-ilat"
        )
    perm = _sub(sd, "permuter.")
    if "forward_shuffle_idx" in perm and not torch.equal(
        perm["forward_shuffle_idx"], torch.arange(len(perm["forward_shuffle_idx"]))
    ):
        raise ValueError(
            "this transformer reads its tokens in a permuted order (permuter); only raster order is supported"
        )
    vq_sd = _float(first_stage) if first_stage is not None else _sub(sd, "first_stage_model.")
    vq_sd = {k: v for k, v in vq_sd.items() if not k.startswith("loss.")}
    if not vq_sd:
        raise ValueError("the checkpoint holds no first_stage_model.* weights: pass the VQGAN with --first-stage")
    tok = _need(t, "tok_emb.weight", "the transformer")
    pos = _need(t, "pos_emb", "the transformer")[0]
    grid = math.isqrt(pos.shape[0])
    if grid * grid != pos.shape[0]:
        raise ValueError(
            f"the transformer has {pos.shape[0]} positions, not a square token grid: it conditions on "
            "tokens of another model (class, coordinates, ...), which napari-ilat cannot give it"
        )
    for i in range(len(_levels(t, "blocks."))):
        m = t.get(f"blocks.{i}.attn.mask")
        if m is not None and not torch.equal(
            m.reshape(m.shape[-2:]), torch.tril(torch.ones_like(m.reshape(m.shape[-2:])))
        ):
            raise ValueError(f"blocks.{i}.attn.mask is not causal (n_unmasked > 0): not supported")
    if not 0 <= sos_token < tok.shape[0]:
        raise ValueError(f"sos_token {sos_token} is not in the vocabulary (0..{tok.shape[0] - 1})")
    vq_cfg = vqgan_config_from_state(vq_sd, grid=grid, what="the first stage")
    if vq_cfg.n_embed != tok.shape[0]:
        raise ValueError(
            f"the transformer's vocabulary ({tok.shape[0]}) != the first stage's codebook ({vq_cfg.n_embed})"
        )
    blocks, n_layer = _blocks_in(t, "the transformer")
    ours = {"tok_emb.weight": tok, "start": tok[sos_token].clone(), "pos_emb": pos, **blocks}
    ours.update({f"ln_f.{k}": _need(t, f"ln_f.{k}", "the transformer") for k in ("weight", "bias")})
    ours["head.weight"] = _need(t, "head.weight", "the transformer")
    t_cfg = GPTConfig(
        vocab_size=tok.shape[0],
        grid=grid,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=tok.shape[1],
        n_positions=pos.shape[0],
        sketch_patch=vq_cfg.factor,
        trained_mask="causal",
        source=source,
    )
    return _model(vq_cfg, vq_sd, t_cfg, ours, name, f"converted from {source}; {TAMING_NOTICE}")


def to_taming(model: ILATModel, sos_token: int = 0) -> dict:
    """Our (taming-converted) model -> a Net2NetTransformer state dict (reference layout)."""
    cfg = model.config.transformer
    if not isinstance(cfg, GPTConfig) or cfg.cond != "none" or cfg.head_mlp or cfg.head_bias:
        raise ValueError("only an unconditional GPT-layout model (as converted from taming) has a taming layout")
    t = {k: v.detach().cpu() for k, v in model.transformer.state_dict().items()}
    if not torch.equal(t["start"], t["tok_emb.weight"][sos_token]):
        raise ValueError(f"the start vector is not tok_emb[{sos_token}]: taming has no separate start vector")
    out = {f"first_stage_model.{k}": v for k, v in model.vqgan.state_dict().items()}
    theirs = {"tok_emb.weight": t["tok_emb.weight"], "pos_emb": t["pos_emb"][None], **_blocks_out(t, cfg.n_layer)}
    n = cfg.n_positions
    for i in range(cfg.n_layer):
        theirs[f"blocks.{i}.attn.mask"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    theirs.update({f"ln_f.{k}": t[f"ln_f.{k}"] for k in ("weight", "bias")})
    theirs["head.weight"] = t["head.weight"]
    out.update({f"transformer.{k}": v for k, v in theirs.items()})
    return out


def convert_taming(ckpt, first_stage=None, *, n_head: int = TAMING_N_HEAD, sos_token: int = 0, name=None):
    """``napari-ilat convert taming``: file(s) -> ILATModel (not saved)."""
    sd = state_dict_of(load_checkpoint(ckpt, "transformer checkpoint"), ckpt, what="transformer checkpoint")
    fs = None
    if first_stage is not None:
        fs = state_dict_of(load_checkpoint(first_stage, "first-stage checkpoint"), first_stage, what="first stage")
        fs = _sub(fs, "first_stage_model.") or fs
    return taming_from_state_dicts(sd, fs, n_head=n_head, sos_token=sos_token, name=name or Path(ckpt).stem)


# --------------------------------------------------------------------------- iLAT

# iLAT transformer names -> ours (beside the blocks)
_ILAT_RENAME = {
    "z_emb.weight": "tok_emb.weight",
    "pos_emb.weight": "pos_emb",
    "c_emb.weight": "cond_emb.weight",
    "dec.ln1.weight": "ln_f.weight",
    "dec.ln1.bias": "ln_f.bias",
    "dec.dense.weight": "head_dense.weight",
    "dec.dense.bias": "head_dense.bias",
    "dec.ln2.weight": "head_ln.weight",
    "dec.ln2.bias": "head_ln.bias",
    "z_dec.weight": "head.weight",  # tied to z_emb.weight in the reference
    "z_bias": "head.bias",
}


def _sketch_in(sk: dict) -> dict:
    out = {}
    for k, v in sk.items():
        if k.startswith("encoder.conv_in.1."):
            out["cond_enc.encoder.conv_in." + k.split(".")[-1]] = v
        elif k.startswith(("encoder.", "quant_conv.")):
            out["cond_enc." + k] = v
        elif k == "quantize.embedding.weight":
            out["cond_enc.codebook"] = v
    return out  # decoder.*, post_quant_conv.*: reconstruction only


def ilat_from_state_dicts(
    image: dict, sketch: dict, transformer: dict, *, n_head: int = ILAT_N_HEAD, name: str = "ilat-ffhq"
) -> ILATModel:
    """iLAT's three state dicts (TS-VQGAN ``g_model``, sketch VQGAN ``g_model``, transformer
    ``model``) -> our model."""
    image, sketch, t = _float(image), _float(sketch), _float(transformer)
    if any(k.startswith(("emb_proj.", "dec_proj.")) for k in t):
        raise ValueError("this transformer was trained with init_gpt_with_vqvae (emb_proj/dec_proj): not supported")
    z_emb = _need(t, "z_emb.weight", "the iLAT transformer")
    pos = _need(t, "pos_emb.weight", "the iLAT transformer")
    n_cond = _need(t, "c_emb.weight", "the iLAT transformer")  # validated below
    # [c_sp, N sketch tokens, z_sp, N image tokens]: 2 (N + 1) positions
    grid = math.isqrt(pos.shape[0] // 2 - 1)
    if pos.shape[0] != 2 * (grid * grid + 1):
        raise ValueError(f"the iLAT transformer has {pos.shape[0]} positions, not 2 (N + 1) for an N-token grid")
    sk_cfg = sketch_vq_config_from_state(sketch, grid=grid)
    vq_cfg = vqgan_config_from_state(image, grid=grid, out_act="tanh", what="the image TS-VQGAN")
    if sk_cfg.resolution != vq_cfg.resolution:
        raise ValueError(f"sketch VQGAN grid/resolution {sk_cfg.resolution} != image VQGAN's {vq_cfg.resolution}")
    if n_cond.shape[0] != sk_cfg.n_embed:
        raise ValueError(
            f"the transformer's condition vocabulary {n_cond.shape[0]} != sketch codebook {sk_cfg.n_embed}"
        )
    blocks, n_layer = _blocks_in(t, "the iLAT transformer")
    ours = {
        mine: _need(t, theirs, "the iLAT transformer")
        for theirs, mine in _ILAT_RENAME.items()
        if theirs != "z_dec.weight"
    }
    ours["head.weight"] = t.get("z_dec.weight", z_emb)
    ours["start"] = _need(t, "z_sp", "the iLAT transformer").reshape(-1)
    ours["cond_start"] = _need(t, "c_sp", "the iLAT transformer").reshape(-1)
    ours.update(blocks)
    ours.update(_sketch_in(sketch))
    t_cfg = GPTConfig(
        vocab_size=z_emb.shape[0],
        grid=grid,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=z_emb.shape[1],
        n_positions=pos.shape[0],
        cond="sketch",
        sketch_patch=vq_cfg.factor,
        sketch_vq=sk_cfg,
        head_mlp=True,
        head_bias=True,
        trained_mask="la",
        source="iLAT (ewrfcas/iLAT)",
    )
    return _model(vq_cfg, image, t_cfg, ours, name, "converted from iLAT (ewrfcas/iLAT): FFHQ sketch-guided editing")


def ilat_ffhq_config(name: str = "ilat-ffhq-shape") -> ModelConfig:
    """The architecture of iLAT's published FFHQ model (configs/vqgan_ffhq.yml,
    configs/transformer_ffhq.yml): 256 px TS-VQGAN, f = 16, 2048 codes x 256, InstanceNorm, no
    attention, encoder and decoder from ``ch_mult`` (1, 2, 4, 6, 8); a sketch VQGAN of the same
    shape on one channel; a 12 x 768 LA transformer over 514 positions. What
    ``ilat_from_state_dicts`` reads off the real files; ``bench speed --preset ilat-ffhq`` times it
    with random weights (the work per token does not depend on the values)."""
    vq = VQGANConfig(
        resolution=256,
        ch=64,
        ch_mult=(1, 2, 4, 6, 8),
        num_res_blocks=2,
        attn_resolutions=(),
        z_channels=256,
        embed_dim=256,
        n_embed=2048,
        norm="instance",
        attention=False,
        downsample="conv4",
        out_act="tanh",
    )
    sketch = dataclasses.replace(vq, in_channels=1, out_ch=1, out_act="none")
    t = GPTConfig(
        vocab_size=2048,
        grid=16,
        n_layer=12,
        n_head=ILAT_N_HEAD,
        n_embd=768,
        n_positions=514,
        cond="sketch",
        sketch_patch=16,
        sketch_vq=sketch,
        head_mlp=True,
        head_bias=True,
        trained_mask="la",
    )
    return ModelConfig(vq, t, name=name)


def to_ilat(model: ILATModel) -> tuple[dict, dict, dict]:
    """Our (iLAT-converted) model -> (image TS-VQGAN, sketch VQGAN encoder, transformer) state
    dicts in the reference layout. The sketch decoder and the condition head (``c_dec``, tied
    to ``c_emb``; ``c_bias``) are not part of our model: c_bias comes back as zeros."""
    cfg = model.config.transformer
    if not isinstance(cfg, GPTConfig) or cfg.cond != "sketch" or not cfg.head_mlp:
        raise ValueError("only a sketch-conditioned GPT-layout model (as converted from iLAT) has an iLAT layout")
    t = {k: v.detach().cpu() for k, v in model.transformer.state_dict().items()}
    image = dict(model.vqgan.state_dict())
    sketch = {}
    for k, v in t.items():
        if k.startswith("cond_enc.encoder.conv_in."):
            sketch["encoder.conv_in.1." + k.split(".")[-1]] = v
        elif k == "cond_enc.codebook":
            sketch["quantize.embedding.weight"] = v
        elif k.startswith("cond_enc."):
            sketch[k[len("cond_enc.") :]] = v
    theirs = {theirs: t[mine] for theirs, mine in _ILAT_RENAME.items()}
    theirs["z_sp"], theirs["c_sp"] = t["start"][None], t["cond_start"][None]
    theirs["c_dec.weight"] = t["cond_emb.weight"]
    theirs["c_bias"] = torch.zeros(t["cond_emb.weight"].shape[0])
    theirs.update(_blocks_out(t, cfg.n_layer))
    return image, sketch, theirs


def convert_ilat(image_vqgan, sketch_vqgan, transformer, *, n_head: int = ILAT_N_HEAD, name=None) -> ILATModel:
    """``napari-ilat convert ilat``: the three published files -> ILATModel (not saved)."""
    parts = []
    for path, what, key in (
        (image_vqgan, "image TS-VQGAN", "g_model"),
        (sketch_vqgan, "sketch VQGAN", "g_model"),
        (transformer, "iLAT transformer", "model"),
    ):
        parts.append(state_dict_of(load_checkpoint(path, what), path, keys=(key, "state_dict"), what=what))
    image, sketch, t = parts
    if "encoder.conv_in.1.weight" in image and "encoder.conv_in.weight" in sketch:
        raise ValueError("--image-vqgan and --sketch-vqgan look swapped (the sketch VQGAN has the 13x13 input conv)")
    return ilat_from_state_dicts(image, sketch, t, n_head=n_head, name=name or "ilat-ffhq")


def model_notice(model) -> str | None:
    """What a user should know before editing with ``model`` (an ILATModel, or the path of
    its NAME.json, read without the weights): the Taming* notice for causal-trained
    transformers, else None."""
    if isinstance(model, (str, Path)):
        import json

        try:
            cfg = json.loads(Path(model).with_suffix(".json").read_text())["config"]["transformer"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        trained = cfg.get("trained_mask", "la")
    else:
        trained = getattr(model.config.transformer, "trained_mask", "la")
    return TAMING_NOTICE if trained == "causal" else None


__all__ = [
    "TAMING_NOTICE",
    "model_notice",
    "convert_ilat",
    "convert_taming",
    "ilat_from_state_dicts",
    "taming_from_state_dicts",
    "to_ilat",
    "to_taming",
    "vqgan_config_from_state",
]
