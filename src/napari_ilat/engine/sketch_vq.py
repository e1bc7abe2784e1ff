"""A sketch VQGAN's encoder as a condition encoder (iLAT's published FFHQ sketch model).

iLAT conditions its face transformer on the codebook indices of a separate one-channel
VQGAN trained on XDoG sketches. Its encoder is not our VQGAN encoder: a reflection-padded
13x13 input convolution, then per level a 4x4 stride-2 convolution that also changes the
channel count *followed by* the level's residual blocks, InstanceNorm, no attention. Only
the encoder, ``quant_conv`` and the codebook are needed to turn a sketch into tokens (the
decoder is training-only and is not converted).

Input convention: our sketch maps are 1 = stroke on 0 = empty (engine/sketch.py); the
reference trained on black strokes on white, normalised to [-1, 1], so the map is fed as
``1 - 2 * sketch``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_ilat.engine.vqgan import Normalize, ResnetBlock, VQGANConfig, nonlinearity


class SketchEncoderNet(nn.Module):
    """The sketch VQGAN's encoder (parameter names: docs/convert.md)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, kernel_size=13)  # after ReflectionPad2d(6)
        self.down = nn.ModuleList()
        for i in range(len(cfg.ch_mult) - 1):
            c_in, c_out = cfg.ch * cfg.ch_mult[i], cfg.ch * cfg.ch_mult[i + 1]
            level = nn.Module()
            level.downsample = nn.Module()
            level.downsample.conv = nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
            level.block = nn.ModuleList(
                ResnetBlock(c_out, c_out, cfg.dropout, cfg.norm) for _ in range(cfg.num_res_blocks)
            )
            self.down.append(level)
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, cfg.dropout, cfg.norm)
        self.mid.block_2 = ResnetBlock(block_in, block_in, cfg.dropout, cfg.norm)
        self.norm_out = Normalize(block_in, cfg.norm)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, kernel_size=3, padding=1)

    def forward(self, x):
        h = self.conv_in(F.pad(x, (6, 6, 6, 6), mode="reflect"))
        for level in self.down:
            h = level.downsample.conv(h)
            for block in level.block:
                h = block(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class SketchVQEncoder(nn.Module):
    """(B, 1, H, W) sketch map in [0, 1] (1 = stroke) -> (B, (H/f)*(W/f)) codebook indices."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        if cfg.in_channels != 1:
            raise ValueError(f"a sketch VQGAN has one input channel, got in_channels={cfg.in_channels}")
        self.config = cfg
        self.encoder = SketchEncoderNet(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.codebook = nn.Parameter(torch.zeros(cfg.n_embed, cfg.embed_dim))

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    def forward(self, sketch: torch.Tensor) -> torch.Tensor:
        z = self.quant_conv(self.encoder(1 - 2 * sketch))
        B, D, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            dt = torch.float64 if z.dtype == torch.float64 else torch.float32
            zf = z.to(dt).permute(0, 2, 3, 1).reshape(-1, D)
            e = self.codebook.to(dt)
            d = zf.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * zf @ e.t()
        return d.argmin(dim=1).view(B, h * w)
