"""Converting published weights: taming-transformers and iLAT layouts, safety, round trips.

No network: the reference state dicts are built here from a listing of their key names and
shapes, written from the reference configs and constructors (taming/modules/diffusionmodules/
model.py, taming/modules/transformer/mingpt.py; iLAT src/layers.py, plm_layers.py,
sketch_layers.py, transformer.py), at tiny widths, with random values.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_ilat.cli.main import main
from napari_ilat.engine.convert import ilat_from_state_dicts, taming_from_state_dicts, to_ilat, to_taming
from napari_ilat.engine.model import load_model

# --------------------------------------------------------------------------- reference layouts


def _conv(k, o, i, s):
    return {f"{k}.weight": (o, i, s, s), f"{k}.bias": (o,)}


def _lin(k, o, i, bias=True):
    return {f"{k}.weight": (o, i), **({f"{k}.bias": (o,)} if bias else {})}


def _norm(k, c, affine):
    return {f"{k}.weight": (c,), f"{k}.bias": (c,)} if affine else {}


def _resblock(k, i, o, affine):
    d = {**_norm(f"{k}.norm1", i, affine), **_conv(f"{k}.conv1", o, i, 3)}
    d.update({**_norm(f"{k}.norm2", o, affine), **_conv(f"{k}.conv2", o, o, 3)})
    if i != o:
        d.update(_conv(f"{k}.nin_shortcut", o, i, 1))
    return d


def _attn(k, c, affine):
    d = dict(_norm(f"{k}.norm", c, affine))
    for n in ("q", "k", "v", "proj_out"):
        d.update(_conv(f"{k}.{n}", c, c, 1))
    return d


def vqgan_layout(ch, ch_mult, nrb, attn_res, res, z, embed, n_embed, *, ilat=False, in_ch=3, out_ch=3):
    """taming's VQModel (ilat=False) or iLAT's TS-VQGAN (InstanceNorm: no norm parameters,
    no attention, 4x4 downsampling convs; its encoder built from ch_mult)."""
    affine, attention = not ilat, not ilat
    d = _conv("encoder.conv_in", ch, in_ch, 3)
    cur, in_mult = res, (1,) + tuple(ch_mult)
    for i, m in enumerate(ch_mult):
        bi = ch * in_mult[i]
        for j in range(nrb):
            d.update(_resblock(f"encoder.down.{i}.block.{j}", bi, ch * m, affine))
            bi = ch * m
            if attention and cur in attn_res:
                d.update(_attn(f"encoder.down.{i}.attn.{j}", bi, affine))
        if i != len(ch_mult) - 1:
            d.update(_conv(f"encoder.down.{i}.downsample.conv", bi, bi, 4 if ilat else 3))
            cur //= 2
    d.update(_resblock("encoder.mid.block_1", bi, bi, affine))
    if attention:
        d.update(_attn("encoder.mid.attn_1", bi, affine))
    d.update(_resblock("encoder.mid.block_2", bi, bi, affine))
    d.update({**_norm("encoder.norm_out", bi, affine), **_conv("encoder.conv_out", z, bi, 3)})
    bi = ch * ch_mult[-1]
    d.update(_conv("decoder.conv_in", bi, z, 3))
    d.update(_resblock("decoder.mid.block_1", bi, bi, affine))
    if attention:
        d.update(_attn("decoder.mid.attn_1", bi, affine))
    d.update(_resblock("decoder.mid.block_2", bi, bi, affine))
    for i in reversed(range(len(ch_mult))):
        bo = ch * ch_mult[i]
        for j in range(nrb + 1):
            d.update(_resblock(f"decoder.up.{i}.block.{j}", bi, bo, affine))
            bi = bo
            if attention and cur in attn_res:
                d.update(_attn(f"decoder.up.{i}.attn.{j}", bi, affine))
        if i:
            d.update(_conv(f"decoder.up.{i}.upsample.conv", bi, bi, 3))
            cur *= 2
    d.update({**_norm("decoder.norm_out", bi, affine), **_conv("decoder.conv_out", out_ch, bi, 3)})
    d["quantize.embedding.weight"] = (n_embed, embed)
    d.update({**_conv("quant_conv", embed, z, 1), **_conv("post_quant_conv", z, embed, 1)})
    return d


def ilat_sketch_layout(ch, ch_mult, nrb, z, embed, n_embed):
    """iLAT's sketch VQGAN (src/sketch_layers.py): reflection-padded 13x13 conv_in, per level a
    4x4 stride-2 conv changing channels, then blocks; the decoder mirrors it."""
    d = _conv("encoder.conv_in.1", ch, 1, 13)
    for i in range(len(ch_mult) - 1):
        bo = ch * ch_mult[i + 1]
        d.update(_conv(f"encoder.down.{i}.downsample.conv", bo, ch * ch_mult[i], 4))
        for j in range(nrb):
            d.update(_resblock(f"encoder.down.{i}.block.{j}", bo, bo, False))
    bi = ch * ch_mult[-1]
    d.update({**_resblock("encoder.mid.block_1", bi, bi, False), **_resblock("encoder.mid.block_2", bi, bi, False)})
    d.update(_conv("encoder.conv_out", z, bi, 3))
    d.update(_conv("decoder.conv_in", bi, z, 3))
    d.update({**_resblock("decoder.mid.block_1", bi, bi, False), **_resblock("decoder.mid.block_2", bi, bi, False)})
    for lvl in range(1, len(ch_mult)):
        idx, bo = len(ch_mult) - 1 - lvl, ch * ch_mult[-lvl - 1]
        for j in range(nrb + 1):
            d.update(_resblock(f"decoder.up.{idx}.block.{j}", bi, bi, False))
        d.update(_conv(f"decoder.up.{idx}.upsample.conv", bo, bi, 3))
        bi = bo
    d.update(_conv("decoder.conv_out", 1, bi, 3))
    d["quantize.embedding.weight"] = (n_embed, embed)
    d.update({**_conv("quant_conv", embed, z, 1), **_conv("post_quant_conv", z, embed, 1)})
    return d


def _gpt_blocks(n_layer, e):
    d = {}
    for i in range(n_layer):
        p = f"blocks.{i}."
        d.update({f"{p}ln1.weight": (e,), f"{p}ln1.bias": (e,), f"{p}ln2.weight": (e,), f"{p}ln2.bias": (e,)})
        for n in ("key", "query", "value", "proj"):
            d.update(_lin(f"{p}attn.{n}", e, e))
        d.update({**_lin(f"{p}mlp.0", 4 * e, e), **_lin(f"{p}mlp.2", e, 4 * e)})
    return d


def mingpt_layout(vocab, block_size, n_layer, e):
    d = {"tok_emb.weight": (vocab, e), "pos_emb": (1, block_size, e), **_gpt_blocks(n_layer, e)}
    d.update({"ln_f.weight": (e,), "ln_f.bias": (e,), "head.weight": (vocab, e)})
    return d


def ilat_gpt_layout(vocab, cond_vocab, seq_len, n_layer, e):
    d = {"z_emb.weight": (vocab, e), "z_sp": (1, e), "c_emb.weight": (cond_vocab, e), "c_sp": (1, e)}
    d.update({"pos_emb.weight": (seq_len, e), **_gpt_blocks(n_layer, e)})
    for n in ("ln1", "ln2"):
        d.update({f"dec.{n}.weight": (e,), f"dec.{n}.bias": (e,)})
    d.update(_lin("dec.dense", e, e))
    d.update({"z_dec.weight": (vocab, e), "z_bias": (vocab,), "c_dec.weight": (cond_vocab, e), "c_bias": (cond_vocab,)})
    return d


def randomize(layout: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * (0.3 if len(s) > 1 else 0.1) for k, s in layout.items()}


# tiny versions of the published configurations (taming FFHQ f16 / iLAT FFHQ)
TAMING_VQ = dict(ch=32, ch_mult=(1, 1, 2), nrb=1, attn_res=(4,), res=16, z=8, embed=8, n_embed=16)
ILAT_VQ = dict(ch=4, ch_mult=(1, 2, 3), nrb=1, attn_res=(4,), res=16, z=8, embed=8, n_embed=16)
ILAT_SK = dict(ch=4, ch_mult=(1, 2, 3), nrb=1, z=8, embed=8, n_embed=12)
GRID = 4
N = GRID * GRID


def taming_state(seed=0):
    vq = randomize(vqgan_layout(**TAMING_VQ), seed)
    vq["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)  # training-only, dropped
    t = randomize(mingpt_layout(16, N, 2, 32), seed + 1)
    for i in range(2):
        t[f"blocks.{i}.attn.mask"] = torch.tril(torch.ones(N, N)).view(1, 1, N, N)
    sd = {f"first_stage_model.{k}": v for k, v in vq.items()}
    sd.update({f"transformer.{k}": v for k, v in t.items()})
    return sd


def ilat_states(seed=0):
    image = randomize(vqgan_layout(**ILAT_VQ, ilat=True), seed)
    sketch = randomize(ilat_sketch_layout(**ILAT_SK), seed + 1)
    t = randomize(ilat_gpt_layout(16, 12, 2 * (N + 1), 2, 32), seed + 2)
    t["z_dec.weight"], t["c_dec.weight"] = t["z_emb.weight"], t["c_emb.weight"]  # tied, as in the reference
    return image, sketch, t


# --------------------------------------------------------------------------- independent reference math


def _ln(x, sd, k):
    return F.layer_norm(x, x.shape[-1:], sd[f"{k}.weight"], sd[f"{k}.bias"])


def reference_gpt(sd, x, allowed, n_head):
    """minGPT's blocks with separate query/key/value, straight from the reference's equations."""
    e = x.shape[-1]
    i = 0
    while f"blocks.{i}.ln1.weight" in sd:
        p = f"blocks.{i}."
        h = _ln(x, sd, p + "ln1")
        q, k, v = (F.linear(h, sd[f"{p}attn.{n}.weight"], sd[f"{p}attn.{n}.bias"]) for n in ("query", "key", "value"))
        q, k, v = (t.view(t.shape[0], -1, n_head, e // n_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(e // n_head)
        y = att.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        y = y.transpose(1, 2).reshape(x.shape)
        x = x + F.linear(y, sd[f"{p}attn.proj.weight"], sd[f"{p}attn.proj.bias"])
        h = F.gelu(F.linear(_ln(x, sd, p + "ln2"), sd[f"{p}mlp.0.weight"], sd[f"{p}mlp.0.bias"]))
        x = x + F.linear(h, sd[f"{p}mlp.2.weight"], sd[f"{p}mlp.2.bias"])
        i += 1
    return x


def ilat_build_mask(token_mask):
    """iLAT's build_mask (plm part) for one image: [c_sp, c, z_sp, z] rows/cols."""
    k = torch.cat([torch.ones(1), 1 - token_mask.float().flatten()])  # input flags, z_sp known
    n = k.numel()
    tril = torch.tril(torch.ones(n, n))
    m = (k[None, :] + tril * (k[:, None] * k[None, :] + (1 - k[:, None]))).clamp(0, 1)
    top = torch.cat([torch.ones(n, n), torch.zeros(n, n)], 1)
    return torch.cat([top, torch.cat([torch.ones(n, n), m], 1)], 0) > 0


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def taming_model():
    return taming_from_state_dicts(taming_state(), n_head=4)


@pytest.fixture(scope="module")
def ilat_model():
    image, sketch, t = ilat_states()
    return ilat_from_state_dicts(image, sketch, t, n_head=4)


def test_taming_logits_match_the_reference_equations(taming_model):
    sd = {k[len("transformer.") :]: v for k, v in taming_state().items() if k.startswith("transformer.")}
    z = torch.randint(0, 16, (2, N))
    x = torch.cat([torch.zeros(2, 1, dtype=torch.long), z[:, :-1]], 1)  # [sos=0, z_0 .. z_{N-2}]
    h = F.embedding(x, sd["tok_emb.weight"]) + sd["pos_emb"][:, :N]
    h = reference_gpt(sd, h, torch.tril(torch.ones(N, N)) > 0, 4)
    ref = F.linear(_ln(h, sd, "ln_f"), sd["head.weight"])
    with torch.no_grad():
        ours = taming_model.transformer(z, torch.zeros(2, N, dtype=torch.bool), mode="taming")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_ilat_logits_match_the_reference_under_its_la_mask(ilat_model):
    _, _, sd = ilat_states()
    tf = ilat_model.transformer
    sketch = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        c_idx = tf.cond_enc(sketch)
    z = torch.randint(0, 16, (1, N))
    token_mask = torch.zeros(GRID, GRID, dtype=torch.bool)
    token_mask[1:3, 1:4] = True
    token_mask[3, 0] = True
    x = torch.cat(
        [
            sd["c_sp"][None],
            F.embedding(c_idx, sd["c_emb.weight"]),
            sd["z_sp"][None],
            F.embedding(z, sd["z_emb.weight"]),
        ],
        1,
    )
    x = x + sd["pos_emb.weight"][: x.shape[1]]
    h = reference_gpt(sd, x, ilat_build_mask(token_mask), 4)[:, N + 1 :]
    h = _ln(F.gelu(F.linear(_ln(h, sd, "dec.ln1"), sd["dec.dense.weight"], sd["dec.dense.bias"])), sd, "dec.ln2")
    ref = (F.linear(h, sd["z_dec.weight"]) + sd["z_bias"])[:, :-1]  # row s predicts z_s
    with torch.no_grad():
        ours = tf(z, ~token_mask.flatten()[None], sketch, mode="ilat")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_round_trips_are_bit_exact(taming_model, ilat_model):
    ref = taming_state()
    back = to_taming(taming_model)
    kept = {k for k in ref if not k.startswith("first_stage_model.loss.")}
    assert set(back) == kept
    assert all(torch.equal(back[k], ref[k]) for k in kept)
    again = taming_from_state_dicts(back, n_head=4)
    a, b = taming_model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    image, sketch, t = ilat_states()
    im2, sk2, t2 = to_ilat(ilat_model)
    assert all(torch.equal(im2[k], image[k]) for k in image) and set(im2) == set(image)
    sk_enc = {k for k in sketch if not k.startswith(("decoder.", "post_quant_conv."))}
    assert set(sk2) == sk_enc and all(torch.equal(sk2[k], sketch[k]) for k in sk_enc)
    assert set(t2) == set(t) and all(torch.equal(t2[k], t[k]) for k in t if k != "c_bias")
    again = ilat_from_state_dicts(im2, sk2, t2, n_head=4)
    a, b = ilat_model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _checkpoint(tmp_path, name, obj, legacy=False):
    p = tmp_path / name
    torch.save(obj, p, _use_new_zipfile_serialization=not legacy)
    return p


def test_convert_taming_cli_load_and_edit(tmp_path, capsys):
    opt = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 4.5e-6, "params": [0]}]}
    ckpt = _checkpoint(
        tmp_path, "last.ckpt", {"epoch": 3, "global_step": 10, "state_dict": taming_state(), "optimizer_states": [opt]}
    )
    assert main(["convert", "taming", str(ckpt), "--n-head", "4", "-o", str(tmp_path / "out" / "faces")]) == 0
    captured = capsys.readouterr()
    assert "Taming*" in captured.err
    model = load_model(tmp_path / "out" / "faces.json")
    assert model.config.transformer.trained_mask == "causal" and model.config.name == "faces"
    from napari_ilat import edit

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[6:11, 5:12] = True
    far = np.ones_like(mask)
    far[2:15, 1:16] = False  # beyond the feather band
    for mode in ("taming", "ilat", "ilat*"):
        out = edit(image, mask, model=model, mode=mode, seed=1)
        assert out.shape == image.shape and np.array_equal(out[far], image[far])
        assert not np.array_equal(out[mask], image[mask])


def test_convert_colour_table_at_conversion_and_into_a_model_json(tmp_path, capsys):
    """`convert taming --colour-table` stores the context palette's table in the converted
    model; `convert colours NAME.json` adds it to an existing model, changing nothing else."""
    import json

    from napari_ilat import ILATModel, save_model
    from napari_ilat.engine.palette import code_colours

    ckpt = _checkpoint(tmp_path, "last.ckpt", {"state_dict": taming_state()})
    out = tmp_path / "faces"
    assert main(["convert", "taming", str(ckpt), "--n-head", "4", "-o", str(out), "--colour-table", "-q"]) == 0
    model = load_model(out.with_suffix(".json"))
    assert np.array_equal(model.vqgan.code_colours, code_colours(model.vqgan))
    assert main(["convert", "taming", str(ckpt), "--n-head", "4", "-o", str(tmp_path / "plain")]) == 0
    assert load_model(tmp_path / "plain.json").vqgan.code_colours is None  # only when asked
    tiny = ILATModel.tiny(seed=5)
    path = save_model(tiny, tmp_path / "m", split=True)
    weights = {p.name: p.read_bytes() for p in tmp_path.glob("m.*.safetensors")}
    before = json.loads(path.read_text())
    capsys.readouterr()
    assert main(["convert", "colours", str(path)]) == 0
    assert "m.json: colour table of 64 codes in" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.*.safetensors")} == weights
    after = json.loads(path.read_text())
    assert {k: v for k, v in after.items() if k != "code_colours"} == before
    assert path.read_text().startswith('{\n  "format"')  # the file's own indent
    assert np.array_equal(load_model(path).vqgan.code_colours, code_colours(tiny.vqgan))
    assert main(["convert", "colours", str(tmp_path / "m.stage1.safetensors")]) == 2  # not a model JSON
    assert "give the model's NAME.json" in capsys.readouterr().err


def test_convert_ilat_cli_load_and_edit(tmp_path):
    image, sketch, t = ilat_states()
    opt = {"state": {}, "param_groups": [{"lr": 2e-4}]}
    a = _checkpoint(tmp_path, "TS-VQGAN_g.pth", {"iteration": 5, "g_model": image, "g_opt": opt}, legacy=True)
    b = _checkpoint(tmp_path, "SKVQGAN_g.pth", {"iteration": 5, "g_model": sketch, "g_opt": opt}, legacy=True)
    c = _checkpoint(tmp_path, "iLAT_last.pth", {"iteration": 5, "model": t, "opt": opt}, legacy=True)
    args = ["convert", "ilat", "--image-vqgan", str(a), "--sketch-vqgan", str(b), "--transformer", str(c)]
    assert main([*args, "--n-head", "4", "-o", str(tmp_path / "ilat")]) == 0
    model = load_model(tmp_path / "ilat.json")
    assert model.cond == "sketch" and model.config.vqgan.out_act == "tanh"
    assert (
        main(
            [
                "convert",
                "ilat",
                "--image-vqgan",
                str(b),
                "--sketch-vqgan",
                str(a),
                "--transformer",
                str(c),
                "-o",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    from napari_ilat import edit

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:9, 3:10] = True
    strokes = np.zeros((16, 16), np.float32)
    strokes[6, 3:10] = 1
    for mode in ("ilat", "taming"):
        out = edit(img, mask, sketch=strokes, model=model, mode=mode, seed=0)
        assert out.shape == img.shape and np.array_equal(out[~mask][:5], img[~mask][:5])
    # no strokes: an empty stroke map (the model has no unconditional mode)
    assert np.array_equal(
        edit(img, mask, model=model, seed=0), edit(img, mask, sketch=strokes * 0, model=model, seed=0)
    )


class Payload:  # any non-tensor object: weights_only must refuse it
    pass


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_with_objects_is_refused_naming_them(tmp_path, legacy):
    sd = taming_state()
    p = _checkpoint(
        tmp_path, "evil.ckpt", {"state_dict": sd, "hparams": argparse.Namespace(lr=1), "x": Payload()}, legacy
    )
    with pytest.raises(ValueError, match=r"refused.*argparse\.Namespace.*Payload|refused.*Payload.*argparse"):
        from napari_ilat.engine.convert import convert_taming

        convert_taming(p)
    assert main(["convert", "taming", str(p), "-o", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file_gives_a_clear_error(tmp_path, legacy, capsys):
    p = _checkpoint(tmp_path, "t.ckpt", {"state_dict": taming_state()}, legacy)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    assert main(["convert", "taming", str(p), "-o", str(tmp_path / "m")]) == 2
    assert "is truncated or not a PyTorch checkpoint" in capsys.readouterr().err


def test_a_file_that_is_no_checkpoint_is_named_so(tmp_path, capsys):
    """An image passed as a checkpoint: not "holds Python objects" (torch's weights_only
    message mentions weights_only for every failure), but what it is not."""
    p = tmp_path / "photo.ckpt"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert main(["convert", "taming", str(p), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "is not a PyTorch checkpoint: it starts with" in err and "Python objects" not in err


def test_wrong_files_are_named(tmp_path):
    from napari_ilat.engine.convert import convert_taming

    vq_only = _checkpoint(
        tmp_path,
        "vq.ckpt",
        {"state_dict": {k[18:]: v for k, v in taming_state().items() if k.startswith("first_stage_model.")}},
    )
    with pytest.raises(ValueError, match="VQGAN checkpoint, not a transformer"):
        convert_taming(vq_only)
    cond = taming_state()
    cond["cond_stage_model.encoder.conv_in.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="conditioned on a second model"):
        taming_from_state_dicts(cond)
    with pytest.raises(FileNotFoundError):
        convert_taming(tmp_path / "missing.ckpt")


def test_instance_norm_two_stream_does_not_leak(ilat_model):
    """The TS-VQGAN with InstanceNorm: no masked pixel may reach a token outside the mask."""
    vq = ilat_model.vqgan.double()
    try:
        x = torch.rand(1, 3, 16, 16, dtype=torch.float64) * 2 - 1
        mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
        mask[..., 5:9, 4:10] = True
        y = torch.where(mask, torch.randn_like(x) * 5, x)
        keep = ~vq.token_mask(mask)[:, None].expand(-1, vq.config.embed_dim, -1, -1)
        with torch.no_grad():
            a, b = vq.encode(x, mask), vq.encode(y, mask)
            assert torch.equal(a[keep], b[keep])
            assert not torch.equal(vq.encode(x)[keep], vq.encode(y)[keep])  # plain encoder: it leaks
    finally:
        vq.float()


@pytest.mark.parametrize("mode", ["ilat", "taming"])
def test_gpt_cached_sampler_equals_recomputing(ilat_model, taming_model, mode):
    """The cached sampler (prefix once, one slot per step) = the whole sequence per token."""
    from napari_ilat.engine.sampler import SamplingOptions, sample_tokens

    g = torch.Generator().manual_seed(3)
    for model, cond in ((ilat_model, torch.rand(1, 1, 16, 16, generator=g)), (taming_model, None)):
        for t in range(4):
            tokens = torch.randint(0, 16, (N,), generator=g)
            known = torch.rand(N, generator=g) > 0.5
            known[-1] = t % 2 == 0  # the last token known: slot N is context (iLAT)
            known[0] = t < 2
            kw = dict(mode=mode, samples=2, options=SamplingOptions(greedy=True), return_logits=True)
            a, la = sample_tokens(model.transformer, tokens, known, cond, **kw)
            b, lb = sample_tokens(model.transformer, tokens, known, cond, cache=False, **kw)
            assert torch.equal(a, b)
            torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
            if mode == "ilat":
                assert torch.equal(a[:, known], tokens[known].expand(2, -1))


def test_model_notice_says_taming_star(tmp_path, taming_model, ilat_model):
    from napari_ilat.engine.convert import model_notice
    from napari_ilat.engine.model import save_model

    assert "Taming*" in model_notice(taming_model)
    assert "Taming*" in model_notice(save_model(taming_model, tmp_path / "t"))
    assert model_notice(ilat_model) is None and model_notice(save_model(ilat_model, tmp_path / "i")) is None


@pytest.mark.slow
def test_the_ilat_ffhq_preset_is_what_converting_the_published_layout_gives():
    """bench speed --preset ilat-ffhq times the published shapes: written out in the reference
    layout and converted back, the preset's model comes back with the same architecture."""
    from napari_ilat.engine.convert import ilat_ffhq_config
    from napari_ilat.engine.model import ILATModel

    model = ILATModel(ilat_ffhq_config())
    image, sketch, t = to_ilat(model)
    assert image["quantize.embedding.weight"].shape == (2048, 256)
    assert t["pos_emb.weight"].shape[0] == 514
    # the published configs (configs/vqgan_ffhq.yml, transformer_ffhq.yml)
    vq = model.config.vqgan
    assert (vq.ch, vq.ch_mult, vq.num_res_blocks, vq.z_channels, vq.resolution) == (64, (1, 2, 4, 6, 8), 2, 256, 256)
    assert (vq.norm, vq.attention, vq.downsample, vq.out_act) == ("instance", False, "conv4", "tanh")
    assert sum(k.startswith("blocks.") and k.endswith(".attn.key.weight") for k in t) == 12
    assert t["z_emb.weight"].shape == (2048, 768)
    back = ilat_from_state_dicts(image, sketch, t, name=model.config.name)
    assert back.config.vqgan == model.config.vqgan
    tb, tm = back.config.transformer, model.config.transformer
    for field in ("vocab_size", "grid", "n_layer", "n_head", "n_embd", "n_positions", "cond", "head_mlp", "head_bias"):
        assert getattr(tb, field) == getattr(tm, field), field
    assert tb.sketch_vq.ch_mult == tm.sketch_vq.ch_mult and tb.sketch_vq.in_channels == 1
