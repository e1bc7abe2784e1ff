"""The single-stream ("GPT") transformer layout of the published models, and its sampler.

taming-transformers' minGPT and iLAT's reference transformer both read one *shifted*
sequence: slot s holds the previous token z_{s-1} (slot 0 a start vector) at position
``n_cond + s``, and its output predicts z_s. Our own LA transformer (transformer.py) uses a
two-stream permuted layout instead, so converted weights run on this module:

    [ C_1 .. C_c | S | z_0 .. z_{N-2} ]       positions 0 .. c+N-1 of one table
      conditions   slot 0   slots 1 .. N-1      (iLAT: c = 257 = sketch start + 256 sketch tokens;
                                                 taming unconditional: c = 0, S = its SOS token)

``taming`` mode is plain raster autoregression (conditions see conditions, slots are causal).
``ilat`` mode is the LA mask as iLAT trained it, with each row's flag taken from its *input*
token (M[i, j] = k_j or (j <= i and not k_i) over the slots, k_s = "z_{s-1} is known"): the
slots holding known tokens form a bidirectional prefix, the slots holding masked tokens a
causal stream. In that permuted order it is our ``permuted_mask`` again, and the prefix does
not depend on generated tokens, so the sampler caches it. The row predicting the first masked
token after a known one is a prefix row: it does not see earlier generated tokens (the
reference's first-token quirk; those are the weights' training conditions, docs/convert.md).
A causal-trained taming transformer run this way is the paper's "Taming*".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from napari_ilat.engine.sketch_vq import SketchVQEncoder
from napari_ilat.engine.transformer import Block, KVCache, permutation, permuted_mask
from napari_ilat.engine.vqgan import VQGANConfig

GPT_CONDITIONS = ("none", "sketch")
TRAINED_MASKS = ("la", "causal")


@dataclass
class GPTConfig:
    """A single-stream transformer (``layout`` "gpt"); the fields shared with
    TransformerConfig mean the same."""

    vocab_size: int = 1024  # image codebook size
    grid: int = 16
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_positions: int = 256  # rows of the position table (>= n_cond + grid * grid)
    dropout: float = 0.0
    cond: str = "none"  # "none" | "sketch" (tokens of a sketch VQGAN, sketch_vq)
    sketch_patch: int = 16  # pixels per token side (= first-stage factor f)
    sketch_vq: VQGANConfig | None = None  # the sketch VQGAN's encoder (cond "sketch")
    head_mlp: bool = False  # iLAT: ln_f -> dense -> GELU -> LayerNorm before the output head
    head_bias: bool = False
    trained_mask: str = "la"  # "la" (iLAT) | "causal" (taming: ilat mode then runs "Taming*")
    source: str = ""  # where the weights came from, e.g. "taming-transformers"
    layout: str = "gpt"

    def __post_init__(self):
        if isinstance(self.sketch_vq, dict):
            self.sketch_vq = VQGANConfig.from_dict(self.sketch_vq)
        if self.layout != "gpt":
            raise ValueError(f"GPTConfig.layout must be 'gpt', got {self.layout!r}")
        if self.cond not in GPT_CONDITIONS:
            raise ValueError(f"cond must be one of {GPT_CONDITIONS} for a GPT-layout transformer, got {self.cond!r}")
        if self.cond == "sketch" and self.sketch_vq is None:
            raise ValueError("cond 'sketch' needs sketch_vq (the sketch VQGAN's config)")
        if self.trained_mask not in TRAINED_MASKS:
            raise ValueError(f"trained_mask must be one of {TRAINED_MASKS}, got {self.trained_mask!r}")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head")
        if self.n_positions < self.n_cond + self.n_tokens:
            raise ValueError(
                f"n_positions {self.n_positions} < {self.n_cond} condition + {self.n_tokens} image positions"
            )

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def n_slots(self) -> int:
        """Image slots: N (slot s holds z_{s-1}, slot 0 the start), plus slot N holding the last
        token where the position table has room for it (iLAT: it is context under the LA mask)."""
        return min(self.n_tokens + 1, self.n_positions - self.n_cond)

    @property
    def n_cond(self) -> int:
        """Condition positions before slot 0 (iLAT sketch: start + one token per cell)."""
        if self.cond == "sketch":
            return 1 + self.n_tokens
        return 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sketch_vq"] = None if self.sketch_vq is None else self.sketch_vq.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        return cls(**d)


class GPTTransformer(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        d = cfg.n_embd
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.start = nn.Parameter(torch.zeros(d))  # slot 0's input (iLAT z_sp; taming tok_emb[sos])
        self.pos_emb = nn.Parameter(torch.zeros(cfg.n_positions, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        if cfg.head_mlp:
            self.head_dense = nn.Linear(d, d)
            self.head_act = nn.GELU()
            self.head_ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=cfg.head_bias)
        if cfg.cond == "sketch":
            self.cond_enc = SketchVQEncoder(cfg.sketch_vq)
            self.cond_emb = nn.Embedding(cfg.sketch_vq.n_embed, d)
            self.cond_start = nn.Parameter(torch.zeros(d))
        for p in self.parameters():  # random weights for tests; converted models overwrite all
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    # -- embeddings ---------------------------------------------------------

    @property
    def requires_condition(self) -> bool:
        """A conditional converted model was never trained without its condition."""
        return self.config.cond != "none"

    def encode_condition(self, cond, batch: int) -> torch.Tensor:
        """(B, n_cond, d) condition part of the sequence, positions included."""
        w = self.tok_emb.weight
        if self.config.cond == "none":
            return w.new_zeros(batch, 0, w.shape[1])
        if cond is None:
            raise ValueError(
                "this converted model is sketch-conditioned and has no unconditional mode: give a sketch "
                "(outside the mask it is computed from the image)"
            )
        ids = self.cond_enc(cond)
        c = torch.cat([self.cond_start.expand(ids.shape[0], 1, -1), self.cond_emb(ids)], dim=1)
        c = c + self.pos_emb[: c.shape[1]]
        return c.expand(batch, -1, -1) if c.shape[0] == 1 else c

    def slot(self, prev_tokens, slots):
        """Input of slot s >= 1: token z_{s-1} (``prev_tokens``) at position n_cond + s."""
        return self.tok_emb(prev_tokens) + self.pos_emb[self.config.n_cond + slots]

    def start_slot(self, batch: int):
        return (self.start + self.pos_emb[self.config.n_cond]).expand(batch, 1, -1)

    def run(self, x, mask, cache: KVCache | None = None):
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, mask, cache)
        if cache is not None:
            cache.length += x.shape[1]
        return x

    def logits(self, hidden):
        h = self.ln_f(hidden)
        if self.config.head_mlp:
            h = self.head_ln(self.head_act(self.head_dense(h)))
        return self.head(h)

    # -- forward ------------------------------------------------------------

    def forward(self, tokens, known, cond=None, mode: str = "ilat"):
        """Logits (B, N, V) in raster order, row s predicting z_s, over the whole sequence.

        ``known``: (B, N) bool; ``mode``: "ilat" (LA mask, flags from the input tokens) or
        "taming" (causal; ``known`` is ignored)."""
        b, n = tokens.shape
        if n != self.config.n_tokens:
            raise ValueError(f"expected {self.config.n_tokens} tokens per image, got {n}")
        cond_tokens = self.encode_condition(cond, b)
        c = cond_tokens.shape[1]
        m = self.config.n_slots - 1  # slots 1..m hold z_0 .. z_{m-1}
        if mode == "ilat":
            order, n_in = permutation(known[:, :m])  # slot s >= 1 is "known" if z_{s-1} is
        elif mode == "taming":
            order = torch.arange(m, device=tokens.device).expand(b, -1)
            n_in = torch.zeros(b, dtype=torch.long, device=tokens.device)
        else:
            raise ValueError(f"mode must be 'ilat' or 'taming', got {mode!r}")
        body = self.slot(tokens.gather(1, order), order + 1)  # slot order+1 holds z_order
        x = torch.cat([cond_tokens, self.start_slot(b), body], dim=1)
        hidden = self.run(x, permuted_mask(n_in, c, x.shape[1]))
        rows = torch.empty_like(order)
        rows.scatter_(1, order, torch.arange(m, device=tokens.device).expand(b, -1))
        rows = torch.cat([rows.new_full((b, 1), -1), rows], dim=1)[:, :n] + c + 1  # row of slot s < N
        return self.logits(hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1])))


def transformer_config_from_dict(d: dict):
    """TransformerConfig (our layout, the default) or GPTConfig (``"layout": "gpt"``)."""
    if d.get("layout", "ilat") == "gpt":
        return GPTConfig.from_dict(d)
    from napari_ilat.engine.transformer import TransformerConfig

    return TransformerConfig.from_dict(d)


def build_transformer(cfg) -> nn.Module:
    """The transformer module a config describes (GPTTransformer or LATransformer)."""
    if isinstance(cfg, GPTConfig):
        return GPTTransformer(cfg)
    from napari_ilat.engine.transformer import LATransformer

    return LATransformer(cfg)


@torch.inference_mode()
def sample_gpt(
    model: GPTTransformer,
    tokens: torch.Tensor,
    known: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    mode: str = "ilat",
    samples: int = 1,
    options=None,
    generator: torch.Generator | None = None,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    return_logits: bool = False,
):
    """:func:`napari_ilat.engine.sampler.sample_tokens` for a GPT-layout transformer (same
    arguments and results). ``ilat``: masked tokens in raster order under the LA mask;
    ``taming``: tokens before the first masked one teacher-forced, every later one sampled."""
    from napari_ilat.engine.sampler import EditCancelled, SamplingOptions, is_cancelled, pick

    opts = options or SamplingOptions()
    tokens, known = tokens.flatten(), known.flatten().bool()
    n = tokens.numel()
    if mode == "ilat":
        targets = (~known).nonzero().flatten().tolist()
    elif mode == "taming":
        masked = (~known).nonzero()
        first = int(masked[0]) if len(masked) else n
        targets = list(range(first, n))
    else:
        raise ValueError(f"mode must be 'ilat' or 'taming', got {mode!r}")
    out = tokens.clone()[None].repeat(samples, 1)
    step_logits = []
    dev = tokens.device
    n_slots = model.config.n_slots

    def emit(j, u, logits):
        if return_logits:
            step_logits.append(logits)
        out[:, u] = pick(logits, opts, generator)
        if progress is not None:
            progress(j + 1, len(targets))

    if targets and not is_cancelled(cancel):
        if not cache:  # reference: the whole sequence for every token
            for j, u in enumerate(targets):
                if is_cancelled(cancel):
                    raise EditCancelled()
                emit(j, u, model(out, known.expand(samples, -1), cond, mode)[:, u])
        else:
            cond_tokens = model.encode_condition(cond, 1)
            c = cond_tokens.shape[1]
            if mode == "ilat":
                # prompt: [C, S, slots whose input is known]; stream: slots holding masked tokens
                prefix = (known[: n_slots - 1].nonzero().flatten() + 1).tolist()
            else:
                prefix = list(range(1, targets[0] + 1))  # teacher-forced, causal
            n_stream = n_slots - 1 - len(prefix)
            slots = torch.tensor(prefix, dtype=torch.long, device=dev)
            x = torch.cat([cond_tokens, model.start_slot(1), model.slot(tokens[slots - 1], slots)[None]], dim=1)
            n_in = torch.tensor([len(prefix) if mode == "ilat" else 0], device=dev)
            kv = KVCache(model.config, samples, x.shape[1] + n_stream, cond_tokens)
            hidden = model.run(x, permuted_mask(n_in, c, x.shape[1]), kv)[0]
            row = {0: c, **{s: c + 1 + i for i, s in enumerate(prefix)}}  # prompt row of each slot

            def feed(s):  # slot s (input z_{s-1}, already in out) into the cache
                x = model.slot(out[:, s - 1], torch.full((samples,), s, device=dev))
                return model.logits(model.run(x[:, None], None, kv)[:, -1])

            for j, u in enumerate(targets):
                if is_cancelled(cancel):
                    raise EditCancelled()
                if u in row:  # a prompt row predicts z_u (ilat: the first-token quirk)
                    emit(j, u, model.logits(hidden[row[u]]).expand(samples, -1))
                else:
                    emit(j, u, feed(u))
                if mode == "ilat" and u + 1 < n_slots and (u + 1 == n or known[u + 1]):
                    feed(u + 1)  # holds the generated z_u: context for later stream slots
    if is_cancelled(cancel):
        raise EditCancelled()
    if return_logits:
        v = model.config.vocab_size
        return out, (torch.stack(step_logits, 1) if step_logits else out.new_zeros(samples, 0, v))
    return out
