"""Two-stream VQGAN (TS-VQGAN): the first stage of iLAT.

A VQGAN (Esser et al., "Taming Transformers") turns an image into a grid of codebook
indices and back. iLAT (Cao et al., NeurIPS 2021) edits a *local* region: tokens inside the
edit mask are regenerated, tokens outside are kept. With an ordinary conv encoder the tokens
*around* the mask have seen the old content inside it (receptive fields, normalisation
statistics, self-attention), so the old content leaks into the context and the regenerated
region ignores the new condition. The two-stream encoder removes every such path:

* every spatial conv runs twice: a full stream F = conv(h) (what masked positions use: they
  may see everything, they are the training targets) and a masked stream
  F_m = conv(h with masked positions zeroed) (what every unmasked position uses);
* GroupNorm statistics come from unmasked positions only;
* in self-attention, unmasked queries cannot attend masked keys.

With mask=None the encoder is exactly the taming-transformers computation, and all module /
parameter names follow taming's VQModel so a taming checkpoint (e.g. the public FFHQ or
ImageNet f16 model) loads with strict=True.

Masks everywhere: True (or nonzero) = region to regenerate.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "VQGANConfig",
    "VQModel",
    "Encoder",
    "Decoder",
    "VectorQuantizer",
    "ResnetBlock",
    "AttnBlock",
    "InstanceNorm",
    "pixel_mask_pyramid",
]


# -----------------------------------------------------------------------------
# config


@dataclass
class VQGANConfig:
    resolution: int = 128  # nominal size: only decides where the attention levels sit
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)  # factor f = 2 ** (len(ch_mult) - 1)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 64
    embed_dim: int = 64
    n_embed: int = 512
    dropout: float = 0.0
    beta: float = 0.25
    # Architecture options of other published VQGANs (defaults: taming's VQModel, which is
    # what every model before them used). iLAT's FFHQ TS-VQGAN: norm "instance", attention
    # False, downsample "conv4", out_act "tanh" (docs/convert.md).
    norm: str = "group"  # "group" (GroupNorm(32), eps 1e-6, affine) | "instance" (no affine, eps 1e-5)
    attention: bool = True  # False: no self-attention blocks anywhere (nor in the middle)
    ch_mult_dec: tuple[int, ...] | None = None  # decoder channel multipliers (None: ch_mult)
    downsample: str = "pad_conv3"  # "pad_conv3": pad (0,1,0,1), 3x3 stride 2 | "conv4": 4x4 stride 2 pad 1
    out_act: str = "none"  # "none" | "tanh" at the decoder's end

    def __post_init__(self):
        # accept lists (JSON) and store tuples, so from_dict(to_dict()) round-trips
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.ch_mult_dec is not None:
            self.ch_mult_dec = tuple(int(m) for m in self.ch_mult_dec)
            if len(self.ch_mult_dec) != len(self.ch_mult):
                raise ValueError(f"ch_mult_dec {self.ch_mult_dec} must have as many levels as ch_mult {self.ch_mult}")
        for name, allowed in (("norm", NORMS), ("downsample", DOWNSAMPLES), ("out_act", OUT_ACTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"VQGANConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @classmethod
    def tiny(cls, resolution: int = 32) -> VQGANConfig:
        """A small first stage (f = 4, 64 codes of 16): the tiny test models' and the tests'."""
        return cls(
            resolution=resolution,
            ch=32,
            ch_mult=(1, 2, 2),
            num_res_blocks=1,
            attn_resolutions=(resolution // 4,),
            z_channels=16,
            embed_dim=16,
            n_embed=64,
        )

    @property
    def decoder_ch_mult(self) -> tuple[int, ...]:
        return self.ch_mult if self.ch_mult_dec is None else self.ch_mult_dec

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        return self.resolution // self.factor

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        if self.ch_mult_dec is not None:
            d["ch_mult_dec"] = list(self.ch_mult_dec)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VQGANConfig:
        return cls(**d)

    @classmethod
    def taming_f16(cls) -> VQGANConfig:
        """The config of taming's public FFHQ / ImageNet f16 (1024 codes) VQGAN."""
        return cls(
            resolution=256,
            ch=128,
            ch_mult=(1, 1, 2, 2, 4),
            num_res_blocks=2,
            attn_resolutions=(16,),
            z_channels=256,
            embed_dim=256,
            n_embed=1024,
        )


NORMS = ("group", "instance")
DOWNSAMPLES = ("pad_conv3", "conv4")
OUT_ACTS = ("none", "tanh")


# -----------------------------------------------------------------------------
# masks


def _as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """(H,W) | (B,H,W) | (B,1,H,W), bool or numeric (nonzero = masked) -> (B,1,H,W) bool."""
    mask = torch.as_tensor(mask)
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    elif mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (H, W), (B, H, W) or (B, 1, H, W); got {tuple(mask.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def _pool_mask(mask: torch.Tensor, k: int) -> torch.Tensor:
    # a coarse position is masked if any pixel under it is (max_pool2d has no bool kernel)
    return F.max_pool2d(mask.to(torch.float32), k) > 0


def pixel_mask_pyramid(mask: torch.Tensor, n_levels: int) -> list[torch.Tensor]:
    """The mask at each encoder level, level l max-pooled by 2**l.
    mask (B,1,H,W) bool with H and W divisible by 2**(n_levels-1)."""
    return [_pool_mask(mask, 2**level) for level in range(n_levels)]


# -----------------------------------------------------------------------------
# building blocks (taming names; every `mask` argument is (B,1,H,W) bool at the
# resolution of the tensor it accompanies, or None for the ordinary computation)


_STREAMS = threading.local()  # .known_only: see VQModel.encode


def nonlinearity(x):
    return x * torch.sigmoid(x)  # swish, written as taming does so mask=None is bit-identical


class Conv2d(nn.Conv2d):
    """nn.Conv2d with an optional two-stream forward (same parameter names).

    The paper writes the output as F*(1-M_l) + F_m*M_l, M_l = unmasked positions whose
    receptive field touches the mask. Where the field does not touch the mask F == F_m
    mathematically, so this equals where(M_out, F, F_m): every unmasked output comes from
    the masked stream. The where-form is the one we use because
      * it is bit-exact even for conv algorithms (Winograd, FFT, ...) whose rounding mixes
        inputs outside an output's receptive field into it: F at an unmasked position could
        then depend, in the last bits, on masked pixels; F_m never sees them at all;
      * torch.where never multiplies: NaN/inf in masked pixels times 0 would still be NaN.
    """

    def forward(self, x, mask_in=None, mask_out=None):
        if mask_in is None:
            return super().forward(x)
        if getattr(_STREAMS, "known_only", False):
            # the masked stream only (VQModel.encode(known_only=True)): the unmasked outputs
            # are the same tensors bit for bit, at half the cost
            return super().forward(torch.where(mask_in, 0, x))
        full = super().forward(x)
        masked = super().forward(torch.where(mask_in, 0, x))
        return torch.where(mask_in if mask_out is None else mask_out, full, masked)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose statistics, given a mask, come from unmasked positions only.

    Ordinary GroupNorm statistics pool over the whole map and would carry masked content to
    every position. Here mean/var per (sample, group) are taken over unmasked positions and
    then applied to every position (masked ones too) with the usual affine weight/bias.
    """

    def forward(self, x, mask=None):
        if mask is None:
            return super().forward(x)
        dtype = x.dtype  # statistics in float32 at least (bf16 sums lose the mean under autocast)
        xn = _masked_normalize(x, mask, self.num_groups, self.eps)
        out = xn * self.weight[:, None, None] + self.bias[:, None, None]
        return out.to(dtype) if dtype in (torch.float16, torch.bfloat16) else out


class InstanceNorm(nn.InstanceNorm2d):
    """nn.InstanceNorm2d (no affine parameters, no running statistics, eps 1e-5: iLAT's
    TS-VQGAN) whose statistics, given a mask, come from unmasked positions only: per
    (sample, channel), the masked GroupNorm with one channel per group."""

    def forward(self, x, mask=None):
        if mask is None:
            return super().forward(x)
        dtype = x.dtype
        out = _masked_normalize(x, mask, x.shape[1], self.eps)
        return out.to(dtype) if dtype in (torch.float16, torch.bfloat16) else out


def _masked_normalize(x, mask, groups: int, eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) per (sample, group), statistics over unmasked positions."""
    B, C, H, W = x.shape
    G = groups
    x = _at_least_float32(x)
    valid = ~mask
    # a fully masked sample has no clean statistics; any content may reach masked
    # positions, so fall back to statistics over everything (finite, deterministic)
    valid = (valid | ~valid.any(dim=(2, 3), keepdim=True))[:, None]  # (B,1,1,H,W)
    xg = x.reshape(B, G, C // G, H, W)
    count = valid.sum(dim=(2, 3, 4), keepdim=True) * (C // G)
    mean = torch.where(valid, xg, 0).sum(dim=(2, 3, 4), keepdim=True) / count
    var = torch.where(valid, (xg - mean) ** 2, 0).sum(dim=(2, 3, 4), keepdim=True) / count
    xg = (xg - mean) / torch.sqrt(var + eps)
    return xg.reshape(B, C, H, W)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def Normalize(channels, kind: str = "group"):
    if kind == "instance":
        return InstanceNorm(channels)
    return GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    # taming's ResnetBlock with temb_channels=0 (no temb_proj) and conv_shortcut=False
    def __init__(self, in_channels, out_channels, dropout=0.0, norm="group"):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels, norm)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_channels, norm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            # 1x1 convs are position-wise: nothing to mask
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x, mask=None):
        h = self.conv1(nonlinearity(self.norm1(x, mask)), mask)
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h, mask))), mask)
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention (taming). Given a mask, unmasked queries attend
    unmasked keys only (they always have at least themselves); masked queries attend all."""

    def __init__(self, channels, norm="group"):
        super().__init__()
        self.norm = Normalize(channels, norm)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x, mask=None):
        h_ = self.norm(x, mask)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, hh, ww = q.shape
        n = hh * ww
        q = q.reshape(b, c, n).permute(0, 2, 1)  # b, n(query), c
        k = k.reshape(b, c, n)  # b, c, n(key)
        v = v.reshape(b, c, n)
        m = None if mask is None else mask.reshape(b, 1, n)  # m[..., j]: position j is masked
        # A disallowed key has weight exactly 0, but 0 * NaN/inf is NaN: unmasked queries
        # read values from a second stream in which masked values are zeroed.
        v0 = None if m is None else torch.where(m, 0, v)
        # big maps (native-resolution edits of large masks): queries in chunks, so the
        # weights never exceed ATTN_CHUNK x n (a map up to ATTN_CHUNK positions: one chunk)
        parts = [self._attend(q, k, v, m, v0, s, ATTN_CHUNK) for s in range(0, n, ATTN_CHUNK)]
        h_ = parts[0] if len(parts) == 1 else torch.cat(parts, 2)
        return x + self.proj_out(h_.reshape(b, c, hh, ww))

    @staticmethod
    def _attend(q, k, v, m, v0, start, size):
        q = q[:, start : start + size] if q.shape[1] > size else q
        w_ = torch.bmm(q, k) * (int(k.shape[1]) ** (-0.5))
        if m is not None:
            mq = m[..., start : start + q.shape[1]]
            # query i may attend key j iff i is masked or j is not
            w_ = torch.where(mq.transpose(1, 2) | ~m, w_, float("-inf"))
        w_ = F.softmax(w_, dim=2).permute(0, 2, 1)  # b, key, query
        h_ = torch.bmm(v, w_)  # b, c, query
        return h_ if m is None else torch.where(mq, h_, torch.bmm(v0, w_))


#: Attention maps with more positions than this attend in query chunks of this size.
ATTN_CHUNK = 4096


class Downsample(nn.Module):
    def __init__(self, channels, kind="pad_conv3"):
        super().__init__()
        self.kind = kind
        if kind == "conv4":  # iLAT: 4x4 stride 2, symmetric padding 1
            self.conv = Conv2d(channels, channels, kernel_size=4, stride=2, padding=1)
        else:  # taming: torch has no asymmetric conv padding: pad (0,1,0,1) by hand, then k3 s2 p0
            self.conv = Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x, mask_in=None, mask_out=None):
        if self.kind == "conv4":
            return self.conv(x, mask_in, mask_out)
        pad = (0, 1, 0, 1)
        if mask_in is not None:
            mask_in = F.pad(mask_in, pad)  # padding is zeros in both streams: not masked
        return self.conv(F.pad(x, pad), mask_in, mask_out)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(block, attn, downsample=None, upsample=None) -> nn.Module:
    # a bare container whose attribute names give taming's state-dict keys
    level = nn.Module()
    level.block, level.attn = block, attn
    if downsample is not None:
        level.downsample = downsample
    if upsample is not None:
        level.upsample = upsample
    return level


def _mid(channels, cfg: VQGANConfig) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, cfg.dropout, cfg.norm)
    if cfg.attention:
        mid.attn_1 = AttnBlock(channels, cfg.norm)
    mid.block_2 = ResnetBlock(channels, channels, cfg.dropout, cfg.norm)
    return mid


def _mid_forward(mid, h, m=None):
    h = mid.block_1(h, m)
    if hasattr(mid, "attn_1"):
        h = mid.attn_1(h, m)
    return mid.block_2(h, m)


# -----------------------------------------------------------------------------
# encoder / decoder


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.num_resolutions = len(cfg.ch_mult)
        self.conv_in = Conv2d(cfg.in_channels, cfg.ch, kernel_size=3, stride=1, padding=1)
        res, in_ch_mult = cfg.resolution, (1,) + cfg.ch_mult
        self.down = nn.ModuleList()
        for i_level, mult in enumerate(cfg.ch_mult):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in = cfg.ch * in_ch_mult[i_level]
            for _ in range(cfg.num_res_blocks):
                block.append(ResnetBlock(block_in, cfg.ch * mult, cfg.dropout, cfg.norm))
                block_in = cfg.ch * mult
                if cfg.attention and res in cfg.attn_resolutions:
                    attn.append(AttnBlock(block_in, cfg.norm))
            last = i_level == self.num_resolutions - 1
            down = None if last else Downsample(block_in, cfg.downsample)
            self.down.append(_level(block, attn, downsample=down))
            res = res if last else res // 2
        self.mid = _mid(block_in, cfg)
        self.norm_out = Normalize(block_in, cfg.norm)
        self.conv_out = Conv2d(block_in, cfg.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x, mask=None):
        """x (B,C,H,W); mask (B,1,H,W) bool or None (plain taming encoder)."""
        n = self.num_resolutions
        masks = [None] * n if mask is None else pixel_mask_pyramid(mask, n)
        h = self.conv_in(x, masks[0])
        for i_level, level in enumerate(self.down):
            m = masks[i_level]
            for i_block, block in enumerate(level.block):
                h = block(h, m)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h, m)
            if i_level != n - 1:
                h = level.downsample(h, m, masks[i_level + 1])
        m = masks[-1]
        h = _mid_forward(self.mid, h, m)
        return self.conv_out(nonlinearity(self.norm_out(h, m)), m)


class Decoder(nn.Module):
    """Ordinary taming decoder (no two-stream: decoding sees the composed latent grid)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch_mult = cfg.decoder_ch_mult
        block_in = cfg.ch * ch_mult[-1]
        res = cfg.resolution // cfg.factor
        self.out_act = cfg.out_act
        self.conv_in = Conv2d(cfg.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _mid(block_in, cfg)
        self.up = nn.ModuleList()
        for i_level in reversed(range(len(ch_mult))):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = cfg.ch * ch_mult[i_level]
            for _ in range(cfg.num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out, cfg.dropout, cfg.norm))
                block_in = block_out
                if cfg.attention and res in cfg.attn_resolutions:
                    attn.append(AttnBlock(block_in, cfg.norm))
            self.up.insert(0, _level(block, attn, upsample=Upsample(block_in) if i_level else None))
            res = res * 2 if i_level else res
        self.norm_out = Normalize(block_in, cfg.norm)
        self.conv_out = Conv2d(block_in, cfg.out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = _mid_forward(self.mid, h)
        for i_level in reversed(range(len(self.up))):
            level = self.up[i_level]
            for i_block, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)
        h = self.conv_out(nonlinearity(self.norm_out(h)))
        return torch.tanh(h) if self.out_act == "tanh" else h


# -----------------------------------------------------------------------------
# quantizer


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation with a straight-through gradient."""

    def __init__(self, n_embed, embed_dim, beta=0.25):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    def forward(self, z):
        """z (B,D,h,w) -> z_q (B,D,h,w), loss (scalar), indices (B,h,w) long."""
        B, D, h, w = z.shape
        # distances in float32 at least, also under autocast: in bf16 the nearest code is
        # often not the one picked (ties and rounding over 512 entries)
        with torch.autocast(z.device.type, enabled=False):
            zf = _at_least_float32(z).permute(0, 2, 3, 1).reshape(-1, D)
            e = self.embedding.weight
            e = e.to(zf.dtype) if zf.dtype == torch.float64 else e
            # ||z - e||^2 = ||z||^2 + ||e||^2 - 2 z.e ; computed per row, so per position
            d = zf.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * zf @ e.t()
        indices = d.argmin(dim=1).view(B, h, w)
        z_q = self.lookup(indices)
        # codebook term pulls e to sg[z]; commitment term (beta) pulls z to sg[e]
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        # straight-through estimator written as e + (z - sg[z]) rather than taming's
        # z + sg(e - z): same gradient, but the forward value is the codebook entry bit
        # for bit (z - z == 0 exactly), so z_q matches embed_tokens(indices)
        z_q = z_q.detach() + (z - z.detach())
        return z_q, loss, indices

    def lookup(self, indices):
        # (B,h,w) -> (B,D,h,w). contiguous() matters: a permuted (channels-last) tensor
        # sends the next conv down a different kernel, whose rounding differs in the last
        # bits from decoding the same values laid out contiguously.
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()


# -----------------------------------------------------------------------------
# the model


class VQModel(nn.Module):
    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim, config.beta)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        # (n_embed, 3) uint8 decoded colour of each code, or None: stored in the model JSON,
        # not in the weights (engine/palette.py)
        self.code_colours = None

    def _check_spatial(self, H, W, what):
        f = self.config.factor
        if H % f or W % f:
            raise ValueError(
                f"{what} is {H}x{W}; height and width must be divisible by the "
                f"downsampling factor f={f} (crop or pad the image first)"
            )

    def _pixel_mask(self, mask, x):
        mask = _as_bool_mask(mask).to(x.device)
        if mask.shape[2:] != x.shape[2:] or mask.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not match image of "
                f"shape {tuple(x.shape)} (expected (B or 1, 1, H, W))"
            )
        return mask.expand(x.shape[0], -1, -1, -1)

    def encode(self, x, mask=None, *, known_only: bool = False) -> torch.Tensor:
        """x (B,C,H,W) in [-1,1] -> continuous z_hat (B, embed_dim, H/f, W/f).

        mask (pixel mask, True/nonzero = region to regenerate): two-stream encoding; no
        value of a masked pixel can reach z_hat outside token_mask(mask), bit for bit.
        mask=None: the plain taming encoder.

        known_only (with a mask): skip the full stream, which only masked positions read.
        z_hat outside token_mask(mask) is bit-identical to the two-stream result (every
        unmasked position reads the masked stream, and masked positions never reach it);
        inside it, z_hat is the masked stream's value instead of the training target. For
        edits, which regenerate those tokens; half the convolutions.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected an image batch (B, {self.config.in_channels}, H, W); got shape {tuple(x.shape)}"
            )
        self._check_spatial(x.shape[2], x.shape[3], "image")
        if mask is not None:
            mask = self._pixel_mask(mask, x)
        if not (known_only and mask is not None):
            return self.quant_conv(self.encoder(x, mask))
        _STREAMS.known_only = True  # per thread: a concurrent encode elsewhere is unaffected
        try:
            return self.quant_conv(self.encoder(x, mask))
        finally:
            _STREAMS.known_only = False

    def quantize_latents(self, z_hat):
        """z_hat -> (z_q, indices (B,h,w) long, codebook+commitment loss)."""
        z_q, loss, indices = self.quantize(z_hat)
        return z_q, indices, loss

    def token_mask(self, mask) -> torch.Tensor:
        """Pixel mask -> M_q (B,h,w) bool: a token is masked if any pixel of its patch is."""
        mask = _as_bool_mask(mask)
        self._check_spatial(mask.shape[2], mask.shape[3], "mask")
        return _pool_mask(mask, self.config.factor)[:, 0]

    def embed_tokens(self, indices) -> torch.Tensor:
        """(B,h,w) codebook indices -> z_q (B, embed_dim, h, w)."""
        return self.quantize.lookup(indices)

    def decode(self, z) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def decode_tokens(self, indices, z_hat=None, token_mask=None) -> torch.Tensor:
        """Decode codebook entries inside token_mask and the continuous z_hat outside it
        (z_q*M_q + z_hat*(1-M_q), via where). z_hat=None: decode the indices everywhere."""
        if (z_hat is None) != (token_mask is None):
            raise ValueError("decode_tokens needs both z_hat and token_mask, or neither")
        z = self.embed_tokens(indices)
        if z_hat is not None:
            z = torch.where(_as_bool_mask(token_mask).to(z.device), z, z_hat)
        return self.decode(z)

    def forward(self, x, mask=None):
        """Autoencode (training): -> (xrec, qloss, indices)."""
        z_q, indices, qloss = self.quantize_latents(self.encode(x, mask))
        return self.decode(z_q), qloss, indices

    def load_taming_state_dict(self, sd, strict=True):
        """Load a taming-transformers VQModel state dict (or a Lightning checkpoint dict
        holding one under "state_dict"), dropping its "loss." entries (LPIPS and the
        discriminator, which are training-only)."""
        if "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
        return self.load_state_dict(sd, strict=strict)
