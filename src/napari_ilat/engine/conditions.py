"""Condition encoders: how pose keypoints and sketches become transformer tokens.

Both map a condition to a short sequence of ``n_embd`` vectors that is prepended to the image
tokens (the C part of the sequence). Conditions see only conditions (C2T = 0 in the paper's
mask), so their tokens never depend on the image being edited.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from napari_ilat.engine.skeleton import NUM_KEYPOINTS as N_KEYPOINTS  # COCO/OpenPose order
from napari_ilat.engine.skeleton import keypoints_shown


class PoseEncoder(nn.Module):
    """(B, 18, 3) keypoints (x, y in [0, 1] of the window, visible in {0, 1}) -> (B, 18, d).

    A small shared MLP per keypoint, as in the reference pose model ((x,y,v) -> 64 -> 256 -> d),
    plus a learned per-joint embedding so the network knows *which* joint a token is.
    Invisible keypoints arrive as (-1, -1, 0).

    ``n_freqs`` > 0 adds Fourier features sin/cos(2^k pi x), sin/cos(2^k pi y), k < n_freqs, to
    the MLP's input (zero for invisible keypoints). Why: an MLP on raw coordinates is a smooth,
    low-frequency function of them (spectral bias), so a token query struggles to single out
    the keypoints that fall *on its own position*; with features up to the token pitch
    (2^5 pi = 16 periods for 16 tokens) that match is a dot product away.
    """

    def __init__(self, n_embd: int, n_keypoints: int = N_KEYPOINTS, n_freqs: int = 0):
        super().__init__()
        self.n_freqs = n_freqs
        self.mlp = nn.Sequential(
            nn.Linear(3 + 4 * n_freqs, 64), nn.GELU(), nn.Linear(64, 256), nn.GELU(), nn.Linear(256, n_embd)
        )
        self.joint = nn.Parameter(torch.zeros(n_keypoints, n_embd))
        nn.init.normal_(self.joint, std=0.02)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)

    def features(self, keypoints: torch.Tensor) -> torch.Tensor:
        if not self.n_freqs:
            return keypoints
        xy = keypoints[..., :2, None] * self.freqs.to(keypoints.dtype)  # (B, K, 2, F)
        four = torch.cat([xy.sin(), xy.cos()], dim=-1).flatten(-2) * keypoints[..., 2:3]
        return torch.cat([keypoints, four], dim=-1)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(keypoints)) + self.joint


class SketchEncoder(nn.Module):
    """(B, 1, H, W) edge map in [0, 1] -> (B, (H/p)*(W/p), d) by patch embedding to the token grid."""

    def __init__(self, n_embd: int, patch: int, grid: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(1, n_embd, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(grid * grid, n_embd))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, sketch: torch.Tensor) -> torch.Tensor:
        return self.proj(sketch).flatten(2).transpose(1, 2) + self.pos


def normalize_keypoints(keypoints, window: tuple[int, int, int, int]) -> np.ndarray:
    """Image-coordinate keypoints -> the (x, y, v) the PoseEncoder expects.

    ``keypoints``: (18, 2) or (18, 3) array of (x = column, y = row[, visible]) in image pixels;
    ``window``: (row0, col0, height, width) of the region the model sees. Keypoints with
    visible == 0 or negative coordinates are invisible and become (-1, -1, 0).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = keypoints_shown(kp)
    r0, c0, h, w = window
    out = np.full((len(kp), 3), -1.0)
    out[:, 0] = (kp[:, 0] - c0 + 0.5) / w
    out[:, 1] = (kp[:, 1] - r0 + 0.5) / h
    out[:, 2] = 1.0
    out[~vis] = (-1.0, -1.0, 0.0)
    return out
