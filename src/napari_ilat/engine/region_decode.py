"""Decoding only the pixels an edit changes: the decoder run on a shrinking crop.

An edit keeps every pixel outside the mask and its feather band, so only that region of
interest (ROI) has to be decoded. Which latent tokens reach a decoded pixel, and how far
each layer has to look, follows from the decoder's configuration:

* every 3x3 convolution widens the dependence by one position of its level, nearest-neighbour
  upsampling halves it; :func:`receptive_field` adds this up (in tokens). For the bundled
  models (128 px, f = 8, one residual block a level) it is 13.4 tokens, for taming's f16
  first stage 17.6 tokens: more than half the 16-token window either way;
* GroupNorm / InstanceNorm take their statistics over the whole map, and the decoder's
  spatial self-attention reads every position: both make every pixel depend on every token.

So for our decoders an exact partial decode is mathematically impossible: changing any
token changes the statistics of every normalisation layer and therefore every pixel.
What *is* exact: with the statistics and the attention keys/values of a decode given
(recorded from a pass over the full map), a crop of the latent with a margin of at least
:func:`receptive_field` tokens around the ROI decodes the ROI bit for bit as the full map
does (``tests/test_region_decode.py``). What an edit uses: a :class:`DecodeReference`
recorded once from the decode of the *unmasked image's* latent z_hat (a deterministic
function of image + mask, cached beside the encoding), then for every candidate a crop
with a margin of ``margin`` tokens, whose normalisation statistics are the reference's
corrected by the crop's own change (full-map sums minus the reference's sums over the crop
plus the new sums over it) and whose attention reads the reference's keys/values outside
the crop. The result differs from decoding the whole window by a few grey levels inside
the ROI (measured and bounded in the tests and docs/benchmarks.md); the work per
candidate shrinks with the ROI, because each layer is cropped to what the layers after it
still need (the full-resolution layers, which dominate, run on little more than the ROI).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_ilat.engine.vqgan import AttnBlock, Decoder, ResnetBlock, Upsample, VQGANConfig, nonlinearity

__all__ = ["Box", "DecodeReference", "receptive_field", "record_reference", "decode_region", "region_plan"]


@dataclass(frozen=True)
class Box:
    """Half-open rows r0:r1, columns c0:c1 of one level's map."""

    r0: int
    r1: int
    c0: int
    c1: int

    def dilate(self, d: int, h: int, w: int) -> Box:
        return Box(max(self.r0 - d, 0), min(self.r1 + d, h), max(self.c0 - d, 0), min(self.c1 + d, w))

    def intersect(self, o: Box) -> Box:
        return Box(max(self.r0, o.r0), min(self.r1, o.r1), max(self.c0, o.c0), min(self.c1, o.c1))

    def half(self) -> Box:
        """The box at half resolution covering this one (nearest upsampling's sources)."""
        return Box(self.r0 // 2, -(-self.r1 // 2), self.c0 // 2, -(-self.c1 // 2))

    def double(self) -> Box:
        return Box(2 * self.r0, 2 * self.r1, 2 * self.c0, 2 * self.c1)

    def within(self, outer: Box) -> tuple[slice, slice]:
        """Index of this box inside a tensor covering ``outer``."""
        return slice(self.r0 - outer.r0, self.r1 - outer.r0), slice(self.c0 - outer.c0, self.c1 - outer.c0)

    @property
    def area(self) -> int:
        return max(self.r1 - self.r0, 0) * max(self.c1 - self.c0, 0)


# --------------------------------------------------------------------------- the layers


def _ops(dec: Decoder) -> list[tuple[str, nn.Module]]:
    """The decoder as a flat list of ("conv" | "res" | "attn" | "up" | "out", module), in the
    order Decoder.forward runs them."""
    ops = [("conv", dec.conv_in), ("res", dec.mid.block_1)]
    if hasattr(dec.mid, "attn_1"):
        ops.append(("attn", dec.mid.attn_1))
    ops.append(("res", dec.mid.block_2))
    for i_level in reversed(range(len(dec.up))):
        level = dec.up[i_level]
        for i_block, block in enumerate(level.block):
            ops.append(("res", block))
            if len(level.attn) > 0:
                ops.append(("attn", level.attn[i_block]))
        if i_level != 0:
            ops.append(("up", level.upsample))
    ops.append(("out", dec))
    return ops


def _op_kinds(cfg: VQGANConfig) -> list[str]:
    """The kinds of :func:`_ops` from the configuration alone (no weights needed)."""
    kinds = ["conv", "res"] + (["attn"] if cfg.attention else []) + ["res"]
    res = cfg.resolution // cfg.factor
    for i_level in reversed(range(len(cfg.decoder_ch_mult))):
        for _ in range(cfg.num_res_blocks + 1):
            kinds.append("res")
            if cfg.attention and res in cfg.attn_resolutions:
                kinds.append("attn")
        if i_level:
            kinds.append("up")
            res *= 2
    return kinds + ["out"]


def _need_in(kind: str, out: Box, size_in: tuple[int, int]) -> Box:
    """The input box that the outputs ``out`` of one layer depend on (convolutions only:
    normalisation statistics and attention keys come from the reference)."""
    h, w = size_in
    if kind in ("conv", "out"):
        return out.dilate(1, h, w)
    if kind == "res":
        return out.dilate(2, h, w)
    if kind == "up":  # 3x3 conv at the doubled resolution, after nearest upsampling
        return out.dilate(1, 2 * h, 2 * w).half()
    return out  # attention: the queries


def receptive_field(cfg: VQGANConfig) -> float:
    """How many tokens away from a pixel the decoder's convolutions reach, from the
    configuration: each 3x3 convolution adds one position of its level (1 / scale tokens).
    Normalisation statistics and attention reach everything (see the module doc)."""
    reach, scale = 0.0, 1
    for kind in _op_kinds(cfg):
        if kind == "up":
            scale *= 2
        reach += {"conv": 1, "out": 1, "res": 2, "up": 1, "attn": 0}[kind] / scale
    return reach


@dataclass
class _Plan:
    boxes: list[Box]  # the output box of every op, at its level
    first: Box  # the latent box decoded
    sizes: list[tuple[int, int]]  # the output map size of every op


def region_plan(cfg: VQGANConfig, grid: tuple[int, int], roi: Box, margin: int | None) -> _Plan:
    """Which box of every layer to compute so that the pixels ``roi`` come out: the ROI
    grown back through the layers, and the latent crop limited to ``margin`` tokens around
    the ROI's tokens (None: no limit, the exact crop)."""
    kinds, f = _op_kinds(cfg), cfg.factor
    h, w = grid
    sizes, s = [], (h, w)
    for kind in kinds:
        if kind == "up":
            s = (2 * s[0], 2 * s[1])
        sizes.append(s)
    boxes: list[Box] = [roi] * len(kinds)
    out = roi
    for i in reversed(range(len(kinds))):
        boxes[i] = out
        size_in = sizes[i - 1] if i else (h, w)
        out = _need_in(kinds[i], out, size_in)
    first = out
    if margin is not None:
        tokens = Box(roi.r0 // f, -(-roi.r1 // f), roi.c0 // f, -(-roi.c1 // f)).dilate(margin, h, w)
        first = first.intersect(tokens)
    return _Plan(boxes, first, sizes)


# --------------------------------------------------------------------------- reference


@dataclass
class DecodeReference:
    """What a region decode borrows from one decode of the whole map: per normalisation
    layer the per-group sum, sum of squares and count over the whole map (float64) and the
    same sums over the box the region decode will see there; per attention layer its keys
    and values over the whole map."""

    plan: _Plan
    sums: list[tuple[torch.Tensor, torch.Tensor]]
    counts: list[int]
    box_sums: list[tuple[torch.Tensor, torch.Tensor]]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    image: torch.Tensor  # the whole map decoded with these statistics (tests, diagnostics)

    @property
    def nbytes(self) -> int:
        t = [x for pair in self.sums + self.box_sums + self.kv for x in pair]
        return sum(x.numel() * x.element_size() for x in t)


def _groups(norm: nn.Module, channels: int) -> int:
    return norm.num_groups if isinstance(norm, nn.GroupNorm) else channels


def _group_sums(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    xg = x.double().reshape(x.shape[0], groups, -1)
    return xg.sum(-1), (xg * xg).sum(-1)


def _normalize(norm: nn.Module, x: torch.Tensor, s: torch.Tensor, s2: torch.Tensor, n: int) -> torch.Tensor:
    """x normalised with the group statistics sum ``s``, sum of squares ``s2`` over ``n``
    values, then the norm's affine transform (GroupNorm) if any."""
    b, c, h, w = x.shape
    g = _groups(norm, c)
    mean = s / n
    var = (s2 / n - mean * mean).clamp(min=0)
    inv = torch.rsqrt(var + norm.eps)
    xn = (x.reshape(b, g, -1) - mean[..., None].to(x.dtype)) * inv[..., None].to(x.dtype)
    xn = xn.reshape(b, c, h, w)
    if getattr(norm, "weight", None) is not None:
        xn = xn * norm.weight[:, None, None] + norm.bias[:, None, None]
    return xn


class _Walk:
    """One pass through the decoder layers, with the norms and attentions handled by
    ``record`` (full map, statistics from itself) or ``apply`` (a crop, statistics and
    attention keys/values from a reference)."""

    def __init__(self, dec: Decoder, plan: _Plan, ref: DecodeReference | None, record: bool, correct: bool):
        self.dec, self.plan, self.ref, self.record, self.correct = dec, plan, ref, record, correct
        self.i_norm = self.i_attn = 0
        self.sums, self.counts, self.box_sums, self.kv = [], [], [], []
        self.box_targets: list[Box] = []  # record: where to also sum each norm's input

    def norm(self, norm: nn.Module, x: torch.Tensor, box: Box) -> torch.Tensor:
        g = _groups(norm, x.shape[1])
        i = self.i_norm
        self.i_norm += 1
        if self.record:
            s, s2 = _group_sums(x, g)
            n = x[0].numel() // g
            self.sums.append((s, s2))
            self.counts.append(n)
            t = self.box_targets[i]
            self.box_sums.append(_group_sums(x[..., t.r0 : t.r1, t.c0 : t.c1], g))
            return _normalize(norm, x, s, s2, n)
        (s, s2), n = self.ref.sums[i], self.ref.counts[i]
        if self.correct:
            bs, bs2 = self.ref.box_sums[i]
            ns, ns2 = _group_sums(x, g)
            s, s2 = s - bs + ns, s2 - bs2 + ns2
        return _normalize(norm, x, s, s2, n)

    def attn(self, block: AttnBlock, x: torch.Tensor, box: Box) -> torch.Tensor:
        h_ = self.norm(block.norm, x, box)
        q, k, v = block.q(h_), block.k(h_), block.v(h_)
        i = self.i_attn
        self.i_attn += 1
        if self.record:
            self.kv.append((k, v))
        else:
            kf, vf = self.ref.kv[i]
            if kf.shape[-2:] != k.shape[-2:]:  # a crop: its own keys inside, the reference's outside
                kf, vf = kf.expand(q.shape[0], -1, -1, -1).clone(), vf.expand(q.shape[0], -1, -1, -1).clone()
                kf[..., box.r0 : box.r1, box.c0 : box.c1] = k
                vf[..., box.r0 : box.r1, box.c0 : box.c1] = v
            k, v = kf.expand(q.shape[0], -1, -1, -1), vf.expand(q.shape[0], -1, -1, -1)
        b, c, hh, ww = q.shape
        qq = q.reshape(b, c, hh * ww).permute(0, 2, 1)
        w_ = torch.bmm(qq, k.reshape(b, c, -1)) * (int(c) ** (-0.5))
        w_ = F.softmax(w_, dim=2).permute(0, 2, 1)
        out = torch.bmm(v.reshape(b, c, -1), w_)
        return x + block.proj_out(out.reshape(b, c, hh, ww))

    def res(self, block: ResnetBlock, x: torch.Tensor, box: Box, out: Box, size) -> tuple[torch.Tensor, Box]:
        mid = out.dilate(1, *size).intersect(box)
        h = block.conv1(nonlinearity(self.norm(block.norm1, x, box)))
        h = h[(...,) + mid.within(box)]
        h = block.conv2(nonlinearity(self.norm(block.norm2, h, mid)))
        out = out.intersect(mid)
        h = h[(...,) + out.within(mid)]
        x = x[(...,) + out.within(box)]
        if block.in_channels != block.out_channels:
            x = block.nin_shortcut(x)
        return x + h, out

    def run(self, z: torch.Tensor) -> torch.Tensor:
        """z: the latent over plan.first (after post_quant_conv)."""
        dec, plan = self.dec, self.plan
        x, box = z, plan.first
        for (kind, mod), out, size in zip(_ops(dec), plan.boxes, plan.sizes):
            if kind == "conv":
                x = mod(x)
            elif kind == "res":
                x, box = self.res(mod, x, box, out, size)
                continue
            elif kind == "attn":
                x = self.attn(mod, x, box)
                continue
            elif kind == "up":
                assert isinstance(mod, Upsample)
                x, box = mod(x), box.double()
            else:  # norm_out, swish, conv_out (and tanh)
                x = dec.conv_out(nonlinearity(self.norm(dec.norm_out, x, box)))
                if dec.out_act == "tanh":
                    x = torch.tanh(x)
            out = out.intersect(box)
            x, box = x[(...,) + out.within(box)], out
        return x


def record_reference(vq, z: torch.Tensor, plan: _Plan) -> DecodeReference:
    """Decode the whole latent ``z`` (1, embed_dim, h, w) once, recording what
    :func:`decode_region` needs for ``plan``."""
    h, w = z.shape[-2:]
    full = _Plan(boxes=[Box(0, s[0], 0, s[1]) for s in plan.sizes], first=Box(0, h, 0, w), sizes=plan.sizes)
    walk = _Walk(vq.decoder, full, None, record=True, correct=False)
    walk.box_targets = _norm_boxes(vq.decoder, plan)
    image = walk.run(vq.post_quant_conv(z))
    return DecodeReference(plan, walk.sums, walk.counts, walk.box_sums, walk.kv, image)


def _norm_boxes(dec: Decoder, plan: _Plan) -> list[Box]:
    """The input box of every normalisation layer in a region walk over ``plan``."""
    boxes = []
    box = plan.first
    for (kind, _), out, size in zip(_ops(dec), plan.boxes, plan.sizes):
        if kind == "res":
            mid = out.dilate(1, *size).intersect(box)
            boxes += [box, mid]
            box = out.intersect(mid)
        elif kind == "attn":
            boxes.append(box)
        elif kind == "up":
            box = out.intersect(box.double())
        elif kind == "out":
            boxes.append(box)
            box = out.intersect(box)
        else:
            box = out.intersect(box)
    return boxes


def decode_region(vq, z: torch.Tensor, ref: DecodeReference, *, correct: bool = True) -> torch.Tensor:
    """Decode the ROI of ``ref.plan`` from the latent ``z`` (B, embed_dim, h, w: the whole
    grid; only the plan's crop is read), with statistics and attention keys/values from
    ``ref``. Returns (B, out_ch, roi height, roi width)."""
    plan = ref.plan
    b = plan.first
    zc = vq.post_quant_conv(z[..., b.r0 : b.r1, b.c0 : b.c1])
    walk = _Walk(vq.decoder, plan, ref, record=False, correct=correct)
    return walk.run(zc)
