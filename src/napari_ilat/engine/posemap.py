"""The pose rendered where the tokens are: keypoint blobs and limb sticks on the model's window.

Why: keypoint *tokens* (an MLP per keypoint, prepended to the sequence) leave it to
attention to work out which keypoints fall on a token's own position, and a CPU-trained
transformer never learnt that (pose following 0-5%, ties 88-95%). Rendering the pose into a
map and giving every token the embedding of its own cell of the map (DESIGN.md section 3)
puts "an elbow is here, a forearm runs through here" directly into the token's input; the
same probe on CPU took strict pose following to 55-67%.

Users still give keypoints: the map is computed inside the model from the normalised
(x, y, visible) keypoints the PoseEncoder takes, so nothing changes for callers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_ilat.engine.skeleton import NUM_KEYPOINTS, SKELETON

#: channels of the map: one Gaussian blob per keypoint, one stick per bone
N_CHANNELS = NUM_KEYPOINTS + len(SKELETON)


def render_pose_map(
    keypoints: torch.Tensor, res: int, sigma_point: float = 1.5, sigma_bone: float = 1.0
) -> torch.Tensor:
    """(B, 18, 3) normalised keypoints (x, y in [0, 1] of the window, visible in {0, 1};
    invisible = (-1, -1, 0)) -> (B, 18 + 17, res, res) map in [0, 1].

    Channel k < 18 is a Gaussian blob (``sigma_point`` map pixels) at keypoint k; channel
    18 + i a stick along bone i of :data:`SKELETON` (a Gaussian of the distance to the
    segment, ``sigma_bone`` pixels), present only when both its keypoints are visible.
    Pixel centres sit at (i + 0.5) / res, the convention of ``normalize_keypoints``.
    """
    kp = keypoints.float()
    b = kp.shape[0]
    c = (torch.arange(res, device=kp.device, dtype=kp.dtype) + 0.5) / res
    py, px = c[None, None, :, None], c[None, None, None, :]  # (1, 1, res, 1), (1, 1, 1, res)
    x, y, v = kp[..., 0, None, None], kp[..., 1, None, None], (kp[..., 2] > 0).to(kp.dtype)
    s2 = 2 * (sigma_point / res) ** 2
    blobs = torch.exp(-((px - x) ** 2 + (py - y) ** 2) / s2) * v[..., None, None]

    a_idx = torch.tensor([a for a, _ in SKELETON], device=kp.device)
    b_idx = torch.tensor([q for _, q in SKELETON], device=kp.device)
    pa, pb = kp[:, a_idx, :2], kp[:, b_idx, :2]  # (B, L, 2)
    d = pb - pa
    ax, ay = pa[..., 0, None, None], pa[..., 1, None, None]
    dx, dy = d[..., 0, None, None], d[..., 1, None, None]
    t = ((px - ax) * dx + (py - ay) * dy) / (dx**2 + dy**2).clamp_min(1e-12)
    t = t.clamp(0, 1)
    dist2 = (px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2
    bone_vis = v[:, a_idx] * v[:, b_idx]
    sticks = torch.exp(-dist2 / (2 * (sigma_bone / res) ** 2)) * bone_vis[..., None, None]
    return torch.cat([blobs, sticks], dim=1).reshape(b, N_CHANNELS, res, res)


class PoseMapEncoder(nn.Module):
    """(B, 18, 3) keypoints -> (B, grid*grid, d): the embedding of each token's cell of the
    rendered pose map (raster order), to be added to that token's input.

    The map is drawn at ``cells_per_token`` x ``cells_per_token`` map pixels per token
    (4 x 4 for a 16 x 16 grid: a 64 x 64 map), then a stride-``cells_per_token`` convolution
    sees exactly one token's cell, a GELU and a 1x1 convolution mix its channels."""

    def __init__(self, n_embd: int, grid: int, cells_per_token: int = 4):
        super().__init__()
        self.grid, self.cells = grid, cells_per_token
        self.proj = nn.Conv2d(N_CHANNELS, n_embd, kernel_size=cells_per_token, stride=cells_per_token)
        self.mix = nn.Conv2d(n_embd, n_embd, kernel_size=1)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        m = render_pose_map(keypoints, self.grid * self.cells).to(self.proj.weight.dtype)
        return self.mix(F.gelu(self.proj(m))).flatten(2).transpose(1, 2)


class SketchMapEncoder(nn.Module):
    """(B, 1, H, W) edge map -> (B, grid*grid, d): each token's own patch of the sketch,
    embedded and added to that token's input (as the pose map does for poses)."""

    def __init__(self, n_embd: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(1, n_embd, kernel_size=patch, stride=patch)
        self.mix = nn.Conv2d(n_embd, n_embd, kernel_size=1)

    def forward(self, sketch: torch.Tensor) -> torch.Tensor:
        return self.mix(F.gelu(self.proj(sketch))).flatten(2).transpose(1, 2)
