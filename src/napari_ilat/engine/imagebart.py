"""ImageBART (Esser et al., NeurIPS 2021): editing by reversing a multinomial diffusion over
VQ tokens with a chain of autoregressive encoder-decoder transformers, in one file.

The forward process corrupts the token map x_0 of an image (DESIGN.md section 4):

    q(x_t | x_{t-1}) : each token kept with probability 1 - beta_t, else redrawn uniformly
                       from the K codes (a redraw may hit the same code),
    q(x_t | x_0)     : kept with probability abar_t = prod_{s<=t} (1 - beta_s), else uniform
                       (a redrawn token stays uniform under further steps, so the marginal
                       is one keep-or-redraw with the product of the keep probabilities).

The schedule is a config field; the default is the reference's "geometric" one,
beta_t = 1 / (T - t + 1), whose last step redraws everything (x_T is pure noise).

Reverse stage t models p(x_{t-1} | x_t): a bidirectional encoder reads x_t, and a causal
decoder generates x_{t-1} in raster order, cross-attending to the encoder's output. So every
token of the finer map is drawn with the *whole* coarser map in view, including what lies
below and to the right of it: the thing a single raster AR model (Taming) cannot do. The
stage that starts from pure noise (beta_T = 1) has nothing to encode and is decoder-only.

Editing needs no mask-specific training. With known tokens K (outside the quantized mask)
and their clean codes c:

* x_T is uniform noise at masked positions and c elsewhere;
* at every AR step of every stage a guide is added to the decoder's logits: 0 for masked
  positions, log one-hot(c_i) (0 at the true code, -inf elsewhere) for known ones, so known
  tokens come out of every stage as given and the decoder reads them as context for the
  masked tokens after them;
* optionally, ``repeats`` forward-backward passes per stage: re-noise the masked tokens of
  x_{t-1} back to x_t with q(x_t | x_{t-1}) and denoise again (the reference's chains).

Why sampling cost grows with the masked area: the decoder is cached (keys/values of every
fed token kept). A run of known tokens is forced, so it is fed as one chunk; only masked
tokens need one sequential step each, and tokens after the last masked one need no decoder
pass at all (nothing later depends on them; the guide fixes them). The encoder's keys and
values for cross-attention are computed once per stage pass.

File format: like ILATModel's two-file layout (``model.py``): ``NAME.json`` (``"kind":
"imagebart"``, the configs, a sha256 per file), ``NAME.stage1.safetensors`` (the first
stage) and ``NAME.bart<t>.safetensors`` per reverse stage (each file stays small enough for
a wheel). ``load_model`` dispatches such a JSON here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from napari_ilat.engine.model import (
    MODEL_FORMAT,
    SPLIT_FORMAT_VERSION,
    check_matches_first_stage,
    read_checked_weights,
)
from napari_ilat.engine.palette import read_table, table_meta
from napari_ilat.engine.posemap import PoseMapEncoder, SketchMapEncoder
from napari_ilat.engine.sampler import EditCancelled, SamplingOptions, is_cancelled, pick
from napari_ilat.engine.sliding import block_run, grid_blocks
from napari_ilat.engine.vqgan import VQGANConfig, VQModel

KIND = "imagebart"
CONDITIONS = ("none", "pose", "sketch")


def geometric_betas(n_stages: int) -> tuple[float, ...]:
    """beta_t = 1 / (T - t + 1), t = 1..T: cumulative keep 1, (T-1)/T, ..., 1/T, 0."""
    return tuple(1.0 / (n_stages - t + 1) for t in range(1, n_stages + 1))


@dataclass
class ImageBARTConfig:
    vocab_size: int = 512  # codebook size K of the first stage
    grid: int = 16  # tokens per side; N = grid * grid
    n_stages: int = 3  # T reverse stages (the paper's small-T regime; 2-3 is fine here)
    betas: tuple[float, ...] | None = None  # beta_1..beta_T; None: geometric_betas(T)
    n_enc_layer: int = 2  # encoder blocks per stage (the noise stage has none)
    n_dec_layer: int = 4  # decoder blocks per stage
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    # "sketch" / "pose": every stage adds each token's cell of the condition map (the shared
    # posemap encoders, as the LA transformer's cond_map) to its encoder and decoder inputs
    cond: str = "none"
    sketch_patch: int = 8  # pixels per token side (= first-stage factor f)

    def __post_init__(self):
        if self.n_stages < 1:
            raise ValueError(f"n_stages must be >= 1, got {self.n_stages}")
        if self.betas is None:
            self.betas = geometric_betas(self.n_stages)
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != self.n_stages:
            raise ValueError(f"betas has {len(self.betas)} entries for {self.n_stages} stages")
        # sampling starts from uniform noise, which is q(x_T | x_0) only when the last step
        # redraws everything; an earlier beta of 1 would make the stages before it useless
        if self.betas[-1] != 1.0 or not all(0.0 < b < 1.0 for b in self.betas[:-1]):
            raise ValueError(f"betas must be in (0, 1) with the last one 1 (x_T pure noise), got {self.betas}")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head")
        if self.cond not in CONDITIONS:
            raise ValueError(f"cond must be one of {CONDITIONS}, got {self.cond!r}")

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    def keep_prob(self, t: int) -> float:
        """abar_t: probability that token i of x_t is still x_0's (not redrawn), t = 0..T."""
        return math.prod(1.0 - b for b in self.betas[:t])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImageBARTConfig:
        return cls(**d)


# --------------------------------------------------------------------------- forward process


def _redraw(x: torch.Tensor, prob: float, vocab: int, generator, where: torch.Tensor | None = None):
    """Each token of ``x`` (where ``where``, default everywhere) redrawn uniformly w.p. ``prob``.
    Both random tensors are always drawn, so the generator advances the same for any mask;
    they are drawn on the generator's device (a CPU training generator, CUDA tokens)."""
    dev = x.device if generator is None else generator.device
    coin = (torch.rand(x.shape, generator=generator, device=dev) < prob).to(x.device)
    codes = torch.randint(0, vocab, x.shape, generator=generator, device=dev).to(x.device)
    if where is not None:
        coin = coin & where
    return torch.where(coin, codes, x)


def q_step(x_prev: torch.Tensor, t: int, cfg: ImageBARTConfig, generator=None, where=None) -> torch.Tensor:
    """x_t ~ q(x_t | x_{t-1}): keep w.p. 1 - beta_t, else a uniform code (``where``: only there)."""
    return _redraw(x_prev, cfg.betas[t - 1], cfg.vocab_size, generator, where)


def q_marginal(x0: torch.Tensor, t: int, cfg: ImageBARTConfig, generator=None) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) in closed form: keep w.p. abar_t, else a uniform code."""
    return _redraw(x0, 1.0 - cfg.keep_prob(t), cfg.vocab_size, generator)


def q_pair(x0: torch.Tensor, t: int, cfg: ImageBARTConfig, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A training pair for stage t: (x_t, x_{t-1}) with x_{t-1} ~ q(. | x_0), x_t ~ q(. | x_{t-1})."""
    x_prev = q_marginal(x0, t - 1, cfg, generator)
    return q_step(x_prev, t, cfg, generator), x_prev


# --------------------------------------------------------------------------- blocks


class DecoderCache:
    """Keys/values of one stage's decoder self-attention (preallocated, filled left to right)
    plus the cross-attention keys/values of the encoder output (computed once per pass)."""

    def __init__(self, cfg: ImageBARTConfig, batch: int, like: torch.Tensor):
        shape = (cfg.n_dec_layer, batch, cfg.n_head, cfg.n_tokens, cfg.n_embd // cfg.n_head)
        self.k = like.new_empty(shape)
        self.v = like.new_empty(shape)
        self.length = 0


class Attention(nn.Module):
    """Multi-head attention: self-attention (keys/values from x) or cross-attention (from a
    memory whose keys/values are precomputed by :meth:`memory_kv`)."""

    def __init__(self, cfg: ImageBARTConfig, cross: bool = False):
        super().__init__()
        self.n_head, self.cross, self.dropout = cfg.n_head, cross, cfg.dropout
        d = cfg.n_embd
        if cross:
            self.q = nn.Linear(d, d)
            self.kv = nn.Linear(d, 2 * d)
        else:
            self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def _heads(self, y):
        b, t, c = y.shape
        return y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)

    def memory_kv(self, memory):
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x, *, causal=False, memory_kv=None, cache: DecoderCache | None = None, layer: int = 0):
        b, t, c = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            k, v = memory_kv
            mask = None
        else:
            q, k, v = (self._heads(y) for y in self.qkv(x).split(c, dim=2))
            mask = None
            start = 0
            if cache is not None:
                start = cache.length
                cache.k[layer, :, :, start : start + t] = k
                cache.v[layer, :, :, start : start + t] = v
                k = cache.k[layer, :, :, : start + t]
                v = cache.v[layer, :, :, : start + t]
            if causal:  # row i (absolute start + i) sees keys 0 .. start + i
                rows = torch.arange(t, device=x.device)[:, None] + start
                mask = torch.arange(start + t, device=x.device)[None, :] <= rows
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


def _mlp(cfg: ImageBARTConfig) -> nn.Module:
    d = cfg.n_embd
    return nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(cfg.dropout))


class EncoderBlock(nn.Module):
    """Pre-norm block with bidirectional self-attention (the encoder sees all of x_t)."""

    def __init__(self, cfg: ImageBARTConfig):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(cfg.n_embd), Attention(cfg)
        self.ln_2, self.mlp = nn.LayerNorm(cfg.n_embd), _mlp(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class DecoderBlock(nn.Module):
    """Causal self-attention, then cross-attention to the encoder (stages with one), then MLP."""

    def __init__(self, cfg: ImageBARTConfig, layer: int, cross: bool):
        super().__init__()
        self.layer = layer
        self.ln_1, self.attn = nn.LayerNorm(cfg.n_embd), Attention(cfg)
        if cross:
            self.ln_x, self.cross = nn.LayerNorm(cfg.n_embd), Attention(cfg, cross=True)
        self.ln_2, self.mlp = nn.LayerNorm(cfg.n_embd), _mlp(cfg)

    def forward(self, x, memory_kv=None, cache=None):
        x = x + self.attn(self.ln_1(x), causal=True, cache=cache, layer=self.layer)
        if memory_kv is not None:
            x = x + self.cross(self.ln_x(x), memory_kv=memory_kv)
        return x + self.mlp(self.ln_2(x))


# --------------------------------------------------------------------------- one reverse stage


class ReverseStage(nn.Module):
    """p(x_{t-1} | x_t): encoder over x_t (absent for the pure-noise stage) + causal decoder.

    Decoder input k (k = 0..N-1) is the start token for k = 0, else x_{t-1}[k-1], plus the
    position embedding of k; its output row k is the distribution of x_{t-1}[k]."""

    def __init__(self, cfg: ImageBARTConfig, encoder: bool):
        super().__init__()
        self.config, self.has_encoder = cfg, encoder
        d, n = cfg.n_embd, cfg.n_tokens
        self.start = cfg.vocab_size  # index of the start token in tok_emb
        self.tok_emb = nn.Embedding(cfg.vocab_size + 1, d)
        self.pos_emb = nn.Parameter(torch.zeros(n, d))
        if encoder:
            self.enc_tok_emb = nn.Embedding(cfg.vocab_size, d)
            self.enc_pos_emb = nn.Parameter(torch.zeros(n, d))
            self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_enc_layer))
            self.enc_ln = nn.LayerNorm(d)
        self.decoder = nn.ModuleList(DecoderBlock(cfg, i, encoder) for i in range(cfg.n_dec_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(_init_weights)
        for name, p in self.named_parameters():
            if name.endswith("pos_emb"):
                nn.init.normal_(p, std=0.02)
        # after the GPT-style init: the map encoders keep PyTorch's fan-in init (transformer.py)
        if cfg.cond == "pose":
            self.cond_map = PoseMapEncoder(d, cfg.grid)
        elif cfg.cond == "sketch":
            self.cond_map = SketchMapEncoder(d, cfg.sketch_patch)

    def cells(self, cond, batch: int):
        """Per-token condition embeddings (B, N, d) in raster order, or None (no condition, or
        an unconditional model; a conditional one is trained with condition dropout)."""
        if cond is None or self.config.cond == "none":
            return None
        c = self.cond_map(cond.to(self.pos_emb.dtype))
        return c.expand(batch, -1, -1) if c.shape[0] == 1 else c

    def memory(self, x_t: torch.Tensor, cells=None):
        """x_t (B, N) -> per decoder layer the cross-attention (k, v), or None (no encoder)."""
        if not self.has_encoder:
            return None
        h = self.enc_tok_emb(x_t) + self.enc_pos_emb
        h = self.drop(h if cells is None else h + cells)
        for block in self.encoder:
            h = block(h)
        h = self.enc_ln(h)
        return [block.cross.memory_kv(h) for block in self.decoder]

    def decode(self, inputs: torch.Tensor, start: int, memory, cache: DecoderCache | None = None, cells=None):
        """Decoder over input tokens ``inputs`` (B, t) at positions start..start+t-1 (with a
        cache: appended to it, attending everything cached before); ``cells``: all N
        positions' condition embeddings, each input gets the cell of the position it
        predicts. Returns logits (B, t, V)."""
        t = inputs.shape[1]
        x = self.tok_emb(inputs) + self.pos_emb[start : start + t]
        x = self.drop(x if cells is None else x + cells[:, start : start + t])
        for i, block in enumerate(self.decoder):
            x = block(x, None if memory is None else memory[i], cache)
        if cache is not None:
            cache.length += t
        return self.head(self.ln_f(x))

    def decoder_inputs(self, x_prev: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder inputs for target x_{t-1} (B, N): [S, x_{t-1}[:-1]]."""
        s = torch.full_like(x_prev[:, :1], self.start)
        return torch.cat([s, x_prev[:, :-1]], dim=1)

    def forward(self, x_t: torch.Tensor, x_prev: torch.Tensor, cond=None) -> torch.Tensor:
        """Training forward: logits (B, N, V) of x_{t-1} given x_t (and the condition),
        teacher-forced."""
        cells = self.cells(cond, x_t.shape[0])
        return self.decode(self.decoder_inputs(x_prev), 0, self.memory(x_t, cells), cells=cells)


def _init_weights(m):
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)


class ImageBART(nn.Module):
    """The T reverse stages; ``stages[t - 1]`` models p(x_{t-1} | x_t)."""

    def __init__(self, cfg: ImageBARTConfig):
        super().__init__()
        self.config = cfg
        self.stages = nn.ModuleList(ReverseStage(cfg, encoder=b < 1.0) for b in cfg.betas)

    def stage(self, t: int) -> ReverseStage:
        return self.stages[t - 1]

    def forward(self, x0: torch.Tensor, generator=None, cond=None) -> dict[int, torch.Tensor]:
        """Training: for every stage t a fresh (x_t, x_{t-1}) from the forward process of x0
        (B, N); returns {t: cross-entropy of x_{t-1} under stage t}."""
        losses = {}
        for t in range(1, self.config.n_stages + 1):
            x_t, x_prev = q_pair(x0, t, self.config, generator)
            logits = self.stage(t)(x_t, x_prev, cond)
            losses[t] = F.cross_entropy(logits.flatten(0, 1).float(), x_prev.flatten())
        return losses


# --------------------------------------------------------------------------- model = first stage + stages


@dataclass
class ImageBARTModelConfig:
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    imagebart: ImageBARTConfig = field(default_factory=ImageBARTConfig)
    name: str = "custom"
    description: str = ""

    def __post_init__(self):
        check_matches_first_stage(self.imagebart, self.vqgan, "ImageBART")

    def to_dict(self) -> dict:
        return {
            "kind": KIND,
            "name": self.name,
            "description": self.description,
            "vqgan": self.vqgan.to_dict(),
            "imagebart": self.imagebart.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ImageBARTModelConfig:
        return cls(
            vqgan=VQGANConfig.from_dict(d["vqgan"]),
            imagebart=ImageBARTConfig.from_dict(d["imagebart"]),
            name=d.get("name", "custom"),
            description=d.get("description", ""),
        )


class ImageBARTModel(nn.Module):
    """First stage (used with its plain encoder: ImageBART has no two-stream encoder) + the
    reverse stages. What :func:`napari_ilat.load_model` returns for an ImageBART JSON."""

    kind = KIND

    def __init__(self, config: ImageBARTModelConfig):
        super().__init__()
        self.config = config
        self.vqgan = VQModel(config.vqgan)
        self.bart = ImageBART(config.imagebart)

    @property
    def resolution(self) -> int:
        return self.config.vqgan.resolution

    @property
    def cond(self) -> str:
        return self.config.imagebart.cond

    @classmethod
    def tiny(cls, resolution: int = 32, seed: int = 0, **kw) -> ImageBARTModel:
        """A small randomly initialised model (tests)."""
        torch.manual_seed(seed)
        vq = VQGANConfig.tiny(resolution)
        b = dict(vocab_size=vq.n_embed, grid=vq.grid, n_stages=3, n_enc_layer=1, n_dec_layer=2, n_head=2, n_embd=32)
        b["sketch_patch"] = vq.factor
        b.update(kw)
        return cls(ImageBARTModelConfig(vq, ImageBARTConfig(**b), name="tiny-imagebart")).eval()


def is_imagebart(model) -> bool:
    return getattr(model, "kind", None) == KIND


def default_imagebart_model() -> str:
    """The first bundled ImageBART model's name (what mode imagebart uses with no model
    given); ValueError when none is bundled."""
    from napari_ilat.engine.model import WEIGHTS_DIR

    for p in sorted(WEIGHTS_DIR.glob("*.json")):
        try:
            if json.loads(p.read_text()).get("kind") == KIND:
                return p.stem
        except (OSError, ValueError, AttributeError):
            continue
    raise ValueError(
        "mode 'imagebart' needs an ImageBART model and none is bundled: train one with "
        "`napari-ilat train imagebart` and pass its NAME.json as the model"
    )


# --------------------------------------------------------------------------- masked editing


def guide_logits(tokens: torch.Tensor, known: torch.Tensor, vocab: int, dtype=torch.float32) -> torch.Tensor:
    """(N, V) guide: log one-hot of the true code at known positions (0 there, -inf at every
    other code), 0 at masked positions (the model's logits are used as they are)."""
    g = torch.zeros(tokens.numel(), vocab, dtype=dtype, device=tokens.device)
    forbid = F.one_hot(tokens.clamp(0, vocab - 1), vocab).bool() == 0
    return g.masked_fill(forbid & known[:, None], float("-inf"))


def apply_guide(logits: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Logits (B, t, V) of positions whose guide rows are ``guide`` (t, V)."""
    return logits + guide


def _stage_plan(cfg: ImageBARTConfig, repeats: int) -> list[tuple[int, int]]:
    """(t, pass) from T down to 1; the noise stage runs once (re-noising it to x_T is a fresh
    draw anyway), every other stage ``repeats`` times (forward-backward passes)."""
    plan = []
    for t in range(cfg.n_stages, 0, -1):
        n = 1 if cfg.betas[t - 1] >= 1.0 else repeats
        plan += [(t, r) for r in range(n)]
    return plan


class _Ticker:
    """Cancel check before, progress after every generated token, counted over all passes."""

    def __init__(self, total: int, progress, cancel):
        self.total, self.done, self.progress, self.cancel = total, 0, progress, cancel

    def before(self):
        if is_cancelled(self.cancel):
            raise EditCancelled()

    def after(self):
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _denoise(stage, x_t, guide, masked, opts, generator, cache, ticker: _Ticker, cond=None):
    """One reverse pass: x_{t-1} (B, N) from x_t, the guide forcing the known positions.

    The guide decides every known token whatever the logits, so the decoder inputs at known
    positions are known before it runs: a run of them is fed as one chunk, and their rows'
    guided logits give them back. Cached: one decoder step per masked token. Uncached
    (reference, for tests and benchmarks): every step recomputes the decoder over all
    inputs from the start, as a plain AR implementation would."""
    b, n = x_t.shape
    cells = stage.cells(cond, b)
    memory = stage.memory(x_t, cells)
    # the guide's codes at known positions; masked ones are written before anything reads them
    out = guide.argmax(-1)[None].repeat(b, 1)
    kv = DecoderCache(stage.config, b, stage.pos_emb) if cache else None
    fed = 0  # decoder inputs fed so far; input k (start token, then out[k-1]) predicts position k
    for u in masked.tolist():
        ticker.before()
        inputs = torch.cat([torch.full_like(x_t[:, :1], stage.start), out[:, :u]], dim=1)
        if cache:
            logits = stage.decode(inputs[:, fed : u + 1], fed, memory, kv, cells)
        else:
            logits = stage.decode(inputs, 0, memory, cells=cells)[:, fed:]
        logits = apply_guide(logits, guide[fed : u + 1])
        if u > fed:  # known positions: the guide leaves one finite code, the true one
            out[:, fed:u] = logits[:, :-1].argmax(-1)
        out[:, u] = pick(logits[:, -1], opts, generator)
        fed = u + 1
        ticker.after()
    # after the last masked token nothing depends on the decoder: the guide's codes stand
    return out


@torch.inference_mode()
def sample_imagebart(
    model: ImageBART,
    tokens: torch.Tensor,
    known: torch.Tensor,
    cond=None,
    *,
    mode: str = "imagebart",
    samples: int = 1,
    options: SamplingOptions | None = None,
    generator: torch.Generator | None = None,
    repeats: int = 1,
    noisy_known: bool = False,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    return_chain: bool = False,
):
    """Regenerate the masked tokens of one token map through all T reverse stages.

    The calling convention of :func:`napari_ilat.engine.sampler.sample_tokens`: ``cond``
    is the condition tensor with batch 1 (sketch (1, 1, R, R) or pose (1, 18, 3)) for a
    conditional model, or None; ``mode`` must be "imagebart".
    ``tokens``: (N,) clean codes (values at masked positions are ignored); ``known``: (N,)
    bool. ``repeats``: passes per stage (> 1: forward-backward re-noise / re-denoise of the
    masked tokens). ``noisy_known``: the encoders read the known tokens as a draw from
    q(x_t | x_0), the noise level they were trained on, instead of clean (the reference's
    way, the default); the decoders' guide forces the clean codes either way.
    ``progress(done, total)`` counts the masked tokens of every pass of every
    stage; ``cancel`` (Event or callable) is checked before each of them and raises
    :class:`EditCancelled`. Returns (samples, N) codes with known tokens unchanged; with
    ``return_chain`` also the list of (t, x_{t-1}) after every pass.
    """
    if cond is not None and model.config.cond == "none":
        raise ValueError("this ImageBART model is unconditional: no pose or sketch")
    if mode != "imagebart":
        raise ValueError(f"an ImageBART model samples in mode 'imagebart', not {mode!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    cfg = model.config
    opts = options or SamplingOptions()
    tokens, known = tokens.flatten().long(), known.flatten().bool()
    if tokens.numel() != cfg.n_tokens:
        raise ValueError(f"expected {cfg.n_tokens} tokens, got {tokens.numel()}")
    dtype = model.stages[0].pos_emb.dtype
    guide = guide_logits(tokens, known, cfg.vocab_size, dtype)
    masked = (~known).nonzero().flatten()
    unknown = ~known[None].expand(samples, -1)
    known_b = known[None].expand(samples, -1)
    # x_T: uniform noise at masked positions, the clean codes elsewhere
    x = _redraw(tokens[None].repeat(samples, 1), 1.0, cfg.vocab_size, generator, unknown)
    plan = _stage_plan(cfg, repeats)
    ticker = _Ticker(len(plan) * len(masked), progress, cancel)
    chain = []
    for t, r in plan:
        if r > 0:  # forward-backward: x_{t-1} back to x_t, masked positions only
            x = q_step(x, t, cfg, generator, unknown)
        x_in = x
        if noisy_known and cfg.betas[t - 1] < 1.0:  # only a stage with an encoder reads x_t
            x_in = _redraw(x, 1.0 - cfg.keep_prob(t), cfg.vocab_size, generator, known_b)
        x = _denoise(model.stage(t), x_in, guide, masked, opts, generator, cache, ticker, cond)
        if return_chain:
            chain.append((t, x.clone()))
    if is_cancelled(cancel):
        raise EditCancelled()
    return (x, chain) if return_chain else x


def sample_imagebart_grid(
    model: ImageBART,
    tokens: torch.Tensor,
    known: torch.Tensor,
    cond_at=None,
    *,
    window: int,
    mode: str = "imagebart",
    options: SamplingOptions | None = None,
    generator: torch.Generator | None = None,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
) -> torch.Tensor:
    """:func:`sample_imagebart` with the calling convention of
    :func:`napari_ilat.engine.sliding.sample_grid`: ``tokens``, ``known`` (H, W), H and W >=
    the model's window; ``cond_at(r0, c0)``: the condition of the window whose top-left
    token is (r0, c0), or None. Returns (H, W) codes, known ones unchanged.

    A grid of one window is :func:`sample_imagebart` (bit for bit the same call). A larger
    grid is generated at its own scale with sliding windows, one reverse stage at a time over
    the whole grid, so every stage's encoder reads the finished coarser map x_t around each
    window: within a stage the masked tokens go in the blocks of
    :func:`~napari_ilat.engine.sliding.grid_blocks` (bands of window/4 rows, blocks of
    window/2 columns, each by the window centred on it), and the window's decoder runs in
    raster order with the guide forcing its known tokens and the ones this stage already
    generated; it samples the window's other masked tokens up to the block's last one (only
    the block's are kept; the rest are drawn again by their own block). ``progress(done,
    total)`` counts every sampled token of every stage; ``cancel`` is checked before each.
    """
    h, w = tokens.shape
    cfg = model.config
    if window != cfg.grid or h < window or w < window:
        raise ValueError(f"ImageBART samples grids of at least one {cfg.grid}x{cfg.grid}-token window, got {h}x{w}")
    cond_at = cond_at or (lambda r0, c0: None)
    if (h, w) == (window, window):
        out = sample_imagebart(
            model,
            tokens.flatten(),
            known.flatten(),
            cond_at(0, 0),
            mode=mode,
            options=options,
            generator=generator,
            cache=cache,
            progress=progress,
            cancel=cancel,
        )
        return out[0].view(h, w)
    if mode != "imagebart":
        raise ValueError(f"an ImageBART model samples in mode 'imagebart', not {mode!r}")
    return _sample_sliding(model, tokens, known, cond_at, window, options, generator, cache, progress, cancel)


@torch.inference_mode()
def _sample_sliding(model, tokens, known, cond_at, window, options, generator, cache, progress, cancel):
    """The sliding-window case of :func:`sample_imagebart_grid` (any grid of >= 1 window)."""
    cfg = model.config
    opts = options or SamplingOptions()
    tokens, known = tokens.long(), known.bool()
    masked = ~known
    # per block: its window, its tokens in the window, the window positions its decoder
    # samples (the same in every stage: they depend on the mask only)
    blocks, todo = [], masked.clone()
    for block in grid_blocks(masked, window):
        run = block_run(todo, block, window)
        if run is not None:
            blocks.append((run.win, run.target, run.stream, block[:4], block[4:]))
        todo[block[0] : block[1], block[2] : block[3]] = False
    plan = _stage_plan(cfg, 1)
    ticker = _Ticker(len(plan) * sum(len(b[2]) for b in blocks), progress, cancel)
    dtype = model.stages[0].pos_emb.dtype
    conds = {}
    x = _redraw(tokens.clone(), 1.0, cfg.vocab_size, generator, masked)  # x_T
    for t, _ in plan:
        stage = model.stage(t)
        nxt = torch.where(known, tokens, 0)  # x_{t-1}: the clean codes outside the mask
        pending = masked.clone()
        for win, target, sampled, (r, r_end, c, c_end), (r0, c0) in blocks:
            if (r0, c0) not in conds:
                conds[(r0, c0)] = cond_at(r0, c0)
            guide = guide_logits(nxt[win].flatten(), ~pending[win].flatten(), cfg.vocab_size, dtype)
            out = _denoise(
                stage, x[win].reshape(1, -1), guide, sampled, opts, generator, cache, ticker, conds[(r0, c0)]
            )
            flat = nxt[win].flatten()
            flat[target] = out[0][target]
            nxt[win] = flat.view(window, window)
            pending[r:r_end, c:c_end] = False
        x = nxt
    if is_cancelled(cancel):
        raise EditCancelled()
    return x


# --------------------------------------------------------------------------- saving / loading


def _stored(t: torch.Tensor, dtype) -> torch.Tensor:
    t = t.detach().cpu()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.contiguous()


def _parts(model: ImageBARTModel) -> list[tuple[str, str, nn.Module]]:
    """(file part, module prefix, module): the first stage and one file per reverse stage."""
    parts = [("stage1", "vqgan", model.vqgan)]
    parts += [(f"bart{t}", f"bart.stages.{t - 1}", s) for t, s in enumerate(model.bart.stages, 1)]
    return parts


def save_imagebart(model: ImageBARTModel, path, *, dtype: torch.dtype | None = None) -> Path:
    """Write ``path.json`` + ``path.stage1.safetensors`` + ``path.bart<t>.safetensors``;
    returns the JSON path. ``dtype`` (e.g. torch.float16): storage precision of float weights."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    files = {}
    for part, module_name, module in _parts(model):
        f = stem.with_name(f"{stem.name}.{part}.safetensors")
        save_file({k: _stored(v, dtype) for k, v in module.state_dict().items()}, str(f))
        files[part] = {
            "file": f.name,
            "module": module_name,
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            "dtype": str(dtype or "as saved").replace("torch.", ""),
        }
    meta = {
        "format": MODEL_FORMAT,
        "format_version": SPLIT_FORMAT_VERSION,
        "kind": KIND,
        "config": model.config.to_dict(),
        "files": files,
        **table_meta(model.vqgan),
    }
    cfg_path = stem.with_name(stem.name + ".json")
    cfg_path.write_text(json.dumps(meta, indent=2) + "\n")
    return cfg_path


def load_imagebart(cfg_path: Path, meta: dict, device="cpu", dtype=torch.float32) -> ImageBARTModel:
    """The model described by an already parsed ImageBART ``meta`` (``load_model`` calls this)."""
    try:
        config = ImageBARTModelConfig.from_dict(meta["config"])
        files = meta["files"]
        entries = [(p["file"], p.get("sha256"), p["module"]) for p in files.values()]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{cfg_path} is not a napari-ilat ImageBART config: {e}") from e
    model = ImageBARTModel(config)
    read_table(model.vqgan, meta, cfg_path)
    state = {}
    for name, sha, module in entries:
        part = read_checked_weights(cfg_path, name, sha)
        state.update({f"{module}.{k}": v for k, v in part.items()})
    model.load_state_dict(state, strict=True)  # float16-stored weights are cast here
    return model.to(device=device, dtype=dtype).eval()


__all__ = [
    "ImageBARTConfig",
    "ImageBART",
    "ImageBARTModel",
    "ImageBARTModelConfig",
    "ReverseStage",
    "geometric_betas",
    "q_step",
    "q_marginal",
    "q_pair",
    "guide_logits",
    "apply_guide",
    "sample_imagebart",
    "sample_imagebart_grid",
    "save_imagebart",
    "load_imagebart",
    "is_imagebart",
    "default_imagebart_model",
]
