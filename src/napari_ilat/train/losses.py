"""Stage-1 losses that need no downloaded weights.

taming-transformers uses LPIPS (a VGG16 with learned linear heads) as its perceptual term.
Those weights cannot be had offline, so the "perceptual" term here is structural instead:
multi-scale SSIM dissimilarity plus an L1 on image gradients (Sobel) at three scales. Both
reward sharp edges and correct local contrast, which is what LPIPS mostly buys a VQGAN over
pure L1; neither knows anything about object semantics. The adversarial term is taming's
hinge PatchGAN (started late, when reconstructions are already reasonable).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_ilat.data.natural import YIQ


def _gaussian_window(size: int = 7, sigma: float = 1.5, device=None, dtype=None):
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Mean SSIM of images in [0, 1] (B,C,H,W), Gaussian window, per channel."""
    c = a.shape[1]
    w = _gaussian_window(size, device=a.device, dtype=a.dtype).expand(c, 1, size, size)

    def blur(x):
        return F.conv2d(x, w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.mean()


def _sobel(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device, dtype=x.dtype)
    c = x.shape[1]
    kx = k.expand(c, 1, 3, 3)
    ky = k.t().expand(c, 1, 3, 3)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return torch.cat([F.conv2d(xp, kx, groups=c), F.conv2d(xp, ky, groups=c)], 1)


def structural_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Offline stand-in for LPIPS: sum over scales of (1 - SSIM) + L1 of Sobel gradients.
    Inputs in [-1, 1]."""
    x, y = (x + 1) / 2, (y + 1) / 2
    loss = x.new_zeros(())
    for s in range(scales):
        if s:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        if min(x.shape[-2:]) < 8:
            break
        loss = loss + (1 - ssim(x, y)) + (_sobel(x) - _sobel(y)).abs().mean()
    return loss


def hue_loss(x: torch.Tensor, y: torch.Tensor, min_saturation: float = 0.15, eps: float = 0.01) -> torch.Tensor:
    """Mean distance between the unit chroma directions of ``x`` and the reference ``y``
    (about the hue angle in radians for small errors), over the pixels where ``y`` is coloured
    (HSV saturation and value >= ``min_saturation``: the pixels `evaluation.metrics.hue_error`
    counts). Inputs in [-1, 1].

    Why a loss of its own: L1 and SSIM weigh an error by its size in RGB, and the chroma of a
    pale or dark pixel is small, so turning a pale blue sky brown costs them little while
    every such pixel counts in full towards the hue error. ``eps`` (in chroma units of [0, 1]
    images) keeps the direction's gradient finite where the decoded chroma is near zero."""
    x, y = (x + 1) / 2, (y + 1) / 2
    # RGB -> YIQ's (I, Q) chroma plane, whose angle is the hue (the plane data.natural rotates)
    m = torch.as_tensor(YIQ[1:], device=x.device, dtype=x.dtype)
    cx, cy = torch.einsum("kc,bchw->bkhw", m, x), torch.einsum("kc,bchw->bkhw", m, y)

    def unit(c):
        return c / torch.sqrt((c * c).sum(1, keepdim=True) + eps * eps)

    vmax, vmin = y.amax(1), y.amin(1)
    coloured = (vmax >= min_saturation) & ((vmax - vmin) >= min_saturation * vmax)
    d = (unit(cx) - unit(cy.detach())).square().sum(1).add(1e-12).sqrt()
    return (d * coloured).sum() / coloured.sum().clamp_min(1)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming NLayerDiscriminator layout) with GroupNorm instead of
    BatchNorm, so it behaves the same under DDP and with tiny per-GPU batches."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ch, out, 4, stride, 1, bias=False),
                nn.GroupNorm(min(32, out // 4), out),
                nn.LeakyReLU(0.2, True),
            ]
            ch = out
        layers += [nn.Conv2d(ch, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # taming's init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x):
        return self.main(x)


def hinge_d_loss(logits_real, logits_fake):
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
