"""Tests for the two-stream VQGAN (napari_ilat.engine.vqgan).

Bit-exactness checks run in float64 on CPU with a tiny config (32x32 images, f=4).
"""

import json

import pytest
import torch
from torch import nn

from napari_ilat.engine import vqgan
from napari_ilat.engine.vqgan import VQGANConfig, VQModel

TINY = VQGANConfig.tiny(32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VQModel(TINY).double().eval()
    with torch.no_grad():
        # default init (GroupNorm 1/0, codebook ~U(+-1/K)) would make many checks trivial
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
        m.quantize.embedding.weight.normal_()
    return m


def image(seed=1, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1


def blob(seed=2):
    """A random elliptic blob (1,1,32,32) bool, well inside the image."""
    g = torch.Generator().manual_seed(seed)
    cy, cx = (torch.rand(2, generator=g) * 8 + 12).tolist()
    ry, rx = (torch.rand(2, generator=g) * 3 + 3).tolist()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)[None, None]


def fill_mask(x, mask, fill):
    values = {
        "noise": torch.randn_like(x) * 5,
        "nan": torch.full_like(x, float("nan")),
        "inf": torch.full_like(x, float("inf")),
    }[fill]
    return torch.where(mask, values, x)


# ---------------------------------------------------------------- leakage


@pytest.mark.parametrize("fill", ["noise", "nan", "inf"])
def test_masked_pixels_do_not_reach_unmasked_tokens(model, fill):
    x, mask = image(), blob()
    x2 = fill_mask(x, mask, fill)
    tm = model.token_mask(mask)  # (1, 8, 8)
    assert 0 < tm.sum() < tm.numel() // 2
    keep = ~tm[:, None].expand(-1, TINY.embed_dim, -1, -1)

    with torch.no_grad():
        z1, z2 = model.encode(x, mask), model.encode(x2, mask)
        i1, i2 = model.quantize_latents(z1)[1], model.quantize_latents(z2)[1]
    assert (z1[keep] - z2[keep]).abs().max() == 0
    assert torch.equal(i1[~tm], i2[~tm])
    # the full stream (masked tokens) does see the new content
    assert not torch.equal(z1[~keep], z2[~keep])
    if fill == "noise":
        assert (i1[tm] != i2[tm]).any()

    # the same check against the plain encoder fails: the test can fail
    with torch.no_grad():
        p1, p2 = model.encode(x), model.encode(x2)
    assert not torch.equal(p1[keep], p2[keep])


@pytest.mark.parametrize("path", ["conv", "norm", "attn"])
def test_each_leak_path_is_caught(model, monkeypatch, path):
    """Put one mechanism back to its plain form: the leak must reappear. ("attn" makes the
    whole attention block plain, its GroupNorm included.)"""
    attn = vqgan.AttnBlock.forward
    plain = {
        "conv": (vqgan.Conv2d, lambda self, x, *masks: nn.Conv2d.forward(self, x)),
        "norm": (vqgan.GroupNorm, lambda self, x, mask=None: nn.GroupNorm.forward(self, x)),
        "attn": (vqgan.AttnBlock, lambda self, x, mask=None: attn(self, x)),
    }
    cls, forward = plain[path]
    monkeypatch.setattr(cls, "forward", forward)
    x, mask = image(), blob()
    keep = ~model.token_mask(mask)[:, None].expand(-1, TINY.embed_dim, -1, -1)
    with torch.no_grad():
        z1, z2 = model.encode(x, mask), model.encode(fill_mask(x, mask, "noise"), mask)
    assert not torch.equal(z1[keep], z2[keep])


def test_per_sample_masks_in_a_batch(model):
    x = image(batch=2)
    mask = torch.cat([blob(2), blob(5)])
    x2 = fill_mask(x, mask, "noise")
    keep = ~model.token_mask(mask)[:, None].expand(-1, TINY.embed_dim, -1, -1)
    with torch.no_grad():
        assert torch.equal(model.encode(x, mask)[keep], model.encode(x2, mask)[keep])


def test_gradient_from_unmasked_tokens_to_masked_pixels_is_zero(model):
    mask = blob()
    keep = ~model.token_mask(mask)[:, None].expand(-1, TINY.embed_dim, -1, -1)
    grads = {}
    for mode, m in (("two_stream", mask), ("plain", None)):
        x = image().requires_grad_()
        model.encode(x, m)[keep].pow(2).sum().backward()
        grads[mode] = x.grad[mask.expand_as(x)]
    assert grads["two_stream"].abs().max() == 0
    assert grads["plain"].abs().max() > 0


def test_empty_mask_equals_plain_encoder(model):
    x = image()
    with torch.no_grad():
        plain = model.encode(x)
        empty = model.encode(x, torch.zeros(32, 32))
    # stats/softmax are computed by different kernels, so allow float64 rounding only
    torch.testing.assert_close(empty, plain, rtol=0, atol=1e-12)


def test_fully_masked_sample_is_finite(model):
    with torch.no_grad():
        z = model.encode(image(), torch.ones(1, 32, 32, dtype=torch.bool))
    assert torch.isfinite(z).all()


def test_mask_formats_agree(model):
    x, mask = image(), blob()
    with torch.no_grad():
        ref = model.encode(x, mask)
        for m in (mask[0, 0], mask[:, 0], mask.double()):
            assert torch.equal(model.encode(x, m), ref)
    assert torch.equal(model.token_mask(mask[0, 0]), model.token_mask(mask))


# ---------------------------------------------------------------- quantizer / decoding


def test_straight_through_values_are_codebook_entries(model):
    z = model.encode(image()).detach().requires_grad_()
    z_q, idx, loss = model.quantize_latents(z)
    assert idx.shape == (1, 8, 8) and idx.dtype == torch.long
    assert torch.equal(z_q, model.embed_tokens(idx))
    mse = (model.embed_tokens(idx) - z).pow(2).mean()
    torch.testing.assert_close(loss, (1 + TINY.beta) * mse)
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_decode_tokens_composes_codebook_inside_and_z_hat_outside(model):
    mask = blob()
    tm = model.token_mask(mask)
    with torch.no_grad():
        z_hat = model.encode(image(), mask)
        idx = torch.randint(0, TINY.n_embed, (1, 8, 8))
        codes = model.quantize.embedding.weight[idx].permute(0, 3, 1, 2)
        expected = z_hat.clone()
        expected[:, :, tm[0]] = codes[:, :, tm[0]]
        out = model.decode_tokens(idx, z_hat, tm)
        assert torch.equal(out, model.decode(expected))
        # NaN in z_hat under the mask is never read
        nan_inside = z_hat.masked_fill(tm[:, None], float("nan"))
        assert torch.equal(model.decode_tokens(idx, nan_inside, tm), out)
        # indices outside the mask are ignored when z_hat is given
        idx2 = torch.where(tm, idx, (idx + 1) % TINY.n_embed)
        assert torch.equal(model.decode_tokens(idx2, z_hat, tm), out)
        # no z_hat: plain codebook decoding
        assert torch.equal(model.decode_tokens(idx), model.decode(model.embed_tokens(idx)))


def test_forward_shapes(model):
    x = image(batch=2)
    with torch.no_grad():
        xrec, qloss, idx = model(x, blob())
    assert xrec.shape == x.shape and idx.shape == (2, 8, 8) and qloss.ndim == 0


# ---------------------------------------------------------------- config / checkpoints


def test_config_roundtrip():
    cfg = VQGANConfig.taming_f16()
    assert (cfg.factor, cfg.grid) == (16, 16)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d == cfg.to_dict() and VQGANConfig.from_dict(d) == cfg
    assert isinstance(VQGANConfig.from_dict(d).ch_mult, tuple)
    assert (VQGANConfig().factor, VQGANConfig().grid) == (8, 16)


def taming_shapes(c: VQGANConfig) -> dict:
    """Parameter name -> shape of taming's VQModel(ddconfig=c, double_z=False), derived by
    hand from taming/modules/diffusionmodules/model.py (Encoder/Decoder, temb_ch=0),
    taming/modules/vqvae/quantize.py and taming/models/vqgan.py."""
    s = {}

    def conv(name, cin, cout, k):
        s[name + ".weight"], s[name + ".bias"] = (cout, cin, k, k), (cout,)

    def norm(name, ch):
        s[name + ".weight"], s[name + ".bias"] = (ch,), (ch,)

    def resnet(name, cin, cout):
        norm(name + ".norm1", cin)
        conv(name + ".conv1", cin, cout, 3)
        norm(name + ".norm2", cout)
        conv(name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(name + ".nin_shortcut", cin, cout, 1)

    def attn(name, ch):
        norm(name + ".norm", ch)
        for n in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{n}", ch, ch, 1)

    def mid(name, ch):
        resnet(name + ".block_1", ch, ch)
        attn(name + ".attn_1", ch)
        resnet(name + ".block_2", ch, ch)

    n = len(c.ch_mult)
    conv("encoder.conv_in", c.in_channels, c.ch, 3)
    res, in_mult = c.resolution, (1,) + tuple(c.ch_mult)
    for i in range(n):
        block_in = c.ch * in_mult[i]
        for b in range(c.num_res_blocks):
            resnet(f"encoder.down.{i}.block.{b}", block_in, c.ch * c.ch_mult[i])
            block_in = c.ch * c.ch_mult[i]
            if res in c.attn_resolutions:
                attn(f"encoder.down.{i}.attn.{b}", block_in)
        if i != n - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            res //= 2
    mid("encoder.mid", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, c.z_channels, 3)

    block_in = c.ch * c.ch_mult[-1]
    conv("decoder.conv_in", c.z_channels, block_in, 3)
    mid("decoder.mid", block_in)
    for i in reversed(range(n)):
        for b in range(c.num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{b}", block_in, c.ch * c.ch_mult[i])
            block_in = c.ch * c.ch_mult[i]
            if res in c.attn_resolutions:
                attn(f"decoder.up.{i}.attn.{b}", block_in)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, c.out_ch, 3)

    s["quantize.embedding.weight"] = (c.n_embed, c.embed_dim)
    conv("quant_conv", c.z_channels, c.embed_dim, 1)
    conv("post_quant_conv", c.embed_dim, c.z_channels, 1)
    return s


@pytest.mark.parametrize("cfg", [TINY, VQGANConfig(), VQGANConfig.taming_f16()], ids=["tiny", "default", "taming_f16"])
def test_state_dict_matches_taming_layout(cfg):
    with torch.device("meta"):  # no memory, no init cost for the 90M-parameter model
        sd = VQModel(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == taming_shapes(cfg)


def test_taming_f16_names_and_size():
    with torch.device("meta"):
        sd = VQModel(VQGANConfig.taming_f16()).state_dict()
    for key in [
        "encoder.conv_in.weight",
        "encoder.down.0.block.0.norm1.weight",
        "encoder.down.1.downsample.conv.weight",
        "encoder.down.4.attn.1.q.weight",
        "encoder.mid.attn_1.q.weight",
        "encoder.norm_out.weight",
        "encoder.down.2.block.0.nin_shortcut.weight",
        "decoder.up.3.upsample.conv.weight",
        "decoder.up.0.block.2.conv2.bias",
        "decoder.up.4.attn.2.proj_out.bias",
        "quantize.embedding.weight",
        "quant_conv.weight",
        "post_quant_conv.bias",
    ]:
        assert key in sd, key
    assert "decoder.up.0.upsample.conv.weight" not in sd
    assert "encoder.down.4.downsample.conv.weight" not in sd
    assert not any("temb" in k for k in sd)
    assert sd["encoder.conv_out.weight"].shape == (256, 512, 3, 3)  # double_z=False
    # 29,298,176 encoder + 42,449,795 decoder + 262,144 codebook + 2 * 65,792 1x1 convs
    assert sum(v.numel() for v in sd.values()) == 72_141_699


def test_load_taming_state_dict_drops_loss_keys(model):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    sd["loss.perceptual_loss.net.slice1.0.bias"] = torch.zeros(64)
    sd["loss.logvar"] = torch.zeros(())
    torch.manual_seed(123)
    other = VQModel(TINY).double().eval()
    x = image()
    with torch.no_grad():
        assert not torch.equal(other.encode(x), model.encode(x))
        other.load_taming_state_dict({"state_dict": sd, "global_step": 7}, strict=True)
        for a, b in zip(other(x, blob()), model(x, blob())):
            assert torch.equal(a, b)
    with pytest.raises(RuntimeError):
        other.load_taming_state_dict({"encoder.bogus": torch.zeros(1), **sd})


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_helpful_errors(model):
    with pytest.raises(ValueError, match="divisible by the downsampling factor f=4"):
        model.encode(torch.zeros(1, 3, 30, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.zeros(1, 1, 32, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.zeros(3, 32, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not match image"):
        model.encode(image(), torch.zeros(1, 1, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        model.encode(image(), torch.zeros(1, 2, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        model.token_mask(torch.zeros(1, 1, 30, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="both z_hat and token_mask"):
        model.decode_tokens(torch.zeros(1, 8, 8, dtype=torch.long), z_hat=torch.zeros(1, 16, 8, 8))
