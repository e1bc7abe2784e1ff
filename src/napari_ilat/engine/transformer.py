"""The local-autoregressive (LA) transformer of iLAT, in one file.

Sequence layout (DESIGN.md section 3), for one image with token grid z_1..z_N, known set K
(tokens outside the quantized edit mask) and masked set U = u_1 < u_2 < ... (raster order):

    [ C_1 .. C_c | S | z_k (k in K, raster order) | g_1 .. g_m ]
      conditions   start  known prefix                generation stream, m = |U|

A known token is embedded as content + its position. Stream entry g_j carries the *previous*
masked token's content + position (g_1 carries S) plus a separate "query" embedding of the
position u_j it must predict, and its output is the distribution of z_{u_j}. The attention
mask over this permuted sequence is

    allowed[i, j] = j < c                     (everyone sees the conditions)
                 or (i >= c and j < p)        (S, known tokens and stream see the prefix)
                 or (i >= p and j <= i)       (the stream is causal)

with p = c + 1 + |K|. Conditions see only conditions, the prefix never sees the stream.
Un-permuted (stream entry g_j placed at position u_j) this is exactly the paper's M_LA:
M[i, j] = k_j or (j <= i and not k_i). Unlike the official single-stream code, the first
masked token after a run of known tokens still sees every earlier generated token, so
training and sampling agree.

Two consequences carry the whole speed story: the prefix does not depend on generated tokens
(its keys/values are computed once and cached), and with K = {} the very same network is a
plain raster autoregressive model (Taming-style), which is how the `taming` mode and ~15% of
training sequences use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_ilat.engine.conditions import N_KEYPOINTS, PoseEncoder, SketchEncoder
from napari_ilat.engine.posemap import PoseMapEncoder, SketchMapEncoder

CONDITIONS = ("none", "pose", "sketch")


@dataclass
class TransformerConfig:
    vocab_size: int = 512  # codebook size K of the first stage
    grid: int = 16  # tokens per side; N = grid * grid
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 256
    dropout: float = 0.0
    cond: str = "none"  # "none" | "pose" | "sketch"
    sketch_patch: int = 8  # pixels per token side (= first-stage factor f)
    pose_freqs: int = 0  # Fourier-feature octaves on the keypoint coordinates (0 = raw (x, y, v))
    # also give every token the embedding of its own cell of the condition map (the pose
    # rendered as blobs and sticks, or the sketch), added to its input (posemap.py)
    cond_map: bool = False

    def __post_init__(self):
        if self.cond not in CONDITIONS:
            raise ValueError(f"cond must be one of {CONDITIONS}, got {self.cond!r}")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head")
        if not 0 <= self.pose_freqs <= 16:
            raise ValueError(f"pose_freqs must be in 0..16, got {self.pose_freqs}")

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        return cls(**d)


# --------------------------------------------------------------------------- masks


def la_mask(known: torch.Tensor, n_cond: int = 0) -> torch.Tensor:
    """The paper's LA attention mask in the *un-permuted* view, as an inspectable function.

    ``known``: (N,) bool, True where M_q == 0. Returns a bool matrix of size
    (n_cond + 1 + N) over [C, S, z_1..z_N] (True = may attend): conditions see conditions
    only; every other row sees all conditions, S and every known token; masked rows also
    see masked tokens at or before themselves; known rows never see masked tokens.
    """
    known = known.bool().flatten()
    k = torch.cat([torch.ones(1, dtype=torch.bool, device=known.device), known])  # S is known
    n = k.numel()
    idx = torch.arange(n, device=known.device)
    t2t = k[None, :] | ((idx[None, :] <= idx[:, None]) & ~k[:, None])
    m = torch.zeros(n_cond + n, n_cond + n, dtype=torch.bool, device=known.device)
    m[:, :n_cond] = True  # T2C = 1 and C2C = 1; C2T stays 0
    m[n_cond:, n_cond:] = t2t
    return m


def permuted_mask(n_known: torch.Tensor, n_cond: int, length: int) -> torch.Tensor:
    """Attention mask actually used, over the permuted sequence [C, S, known, stream].

    ``n_known``: (B,) number of known tokens per sequence; ``length``: how much of the
    sequence is present (n_cond + 1 + N for the whole of it; less for a prefix, e.g. the
    cached sampler's prompt). Returns (B, 1, length, length) bool, True = may attend.
    """
    idx = torch.arange(length, device=n_known.device)
    rows, cols = idx[:, None], idx[None, :]
    p = (n_cond + 1 + n_known)[:, None, None]
    allowed = (cols < n_cond) | ((rows >= n_cond) & (cols < p)) | ((rows >= p) & (cols <= rows))
    return allowed[:, None]


def permutation(known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool known -> (order (B, N): known positions then masked positions, each in
    raster order; n_known (B,)). Stable sort keeps raster order within each group."""
    order = torch.sort((~known).to(torch.uint8), dim=1, stable=True).indices
    return order, known.sum(1)


# --------------------------------------------------------------------------- blocks


class KVCache:
    """Preallocated keys/values of every layer, filled left to right.

    Writing in place (instead of torch.cat per step) keeps a sampling step's cost
    independent of how much is cached already, apart from the attention itself."""

    def __init__(self, cfg: TransformerConfig, batch: int, max_len: int, like: torch.Tensor):
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, cfg.n_embd // cfg.n_head)
        self.k = like.new_empty(shape)
        self.v = like.new_empty(shape)
        self.length = 0


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int):
        super().__init__()
        self.n_head = cfg.n_head
        self.layer = layer
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x, mask, cache: KVCache | None = None):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for y in (q, k, v))
        if cache is not None:
            start = cache.length
            cache.k[self.layer, :, :, start : start + t] = k  # broadcasts a batch-1 prompt
            cache.v[self.layer, :, :, start : start + t] = v
            if start:  # attend everything cached so far (the prompt attends only itself)
                k = cache.k[self.layer, :, :, : start + t]
                v = cache.v[self.layer, :, :, : start + t]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg, layer)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd),
            nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x, mask, cache=None):
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


# --------------------------------------------------------------------------- model


class LATransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        d, n = cfg.n_embd, cfg.n_tokens
        self.start = cfg.vocab_size  # index of [S] in tok_emb
        self.tok_emb = nn.Embedding(cfg.vocab_size + 1, d)
        self.pos_emb = nn.Parameter(torch.zeros(n, d))  # where a content token sits
        self.query_emb = nn.Parameter(torch.zeros(n, d))  # which position a stream entry predicts
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for p in (self.pos_emb, self.query_emb):
            nn.init.normal_(p, std=0.02)
        # Condition encoders keep PyTorch's default (fan-in scaled) init: with the GPT-style
        # std=0.02 a 3-input MLP starts out nearly blind to the keypoints.
        if cfg.cond == "pose":
            self.cond_enc = PoseEncoder(d, N_KEYPOINTS, cfg.pose_freqs)
        elif cfg.cond == "sketch":
            self.cond_enc = SketchEncoder(d, cfg.sketch_patch, cfg.grid)
        if cfg.cond_map and cfg.cond == "pose":
            self.cond_map = PoseMapEncoder(d, cfg.grid)
        elif cfg.cond_map and cfg.cond == "sketch":
            self.cond_map = SketchMapEncoder(d, cfg.sketch_patch)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # -- embeddings ---------------------------------------------------------

    def encode_condition(self, cond, batch: int) -> torch.Tensor:
        """Condition tensor -> (B, c, d) tokens; no condition (or an unconditional model) -> c = 0.

        A conditional model given ``cond=None`` runs unconditionally (it is trained with
        condition dropout for exactly that)."""
        if cond is None or self.config.cond == "none":
            w = self.tok_emb.weight
            return w.new_zeros(batch, 0, w.shape[1])
        c = self.cond_enc(cond)
        return c.expand(batch, -1, -1) if c.shape[0] == 1 else c

    def condition_cells(self, cond, batch: int) -> torch.Tensor | None:
        """Per-token condition embeddings (B, N, d) in raster order (``cond_map`` models with
        a condition), else None. Added to the input of the token at, or predicting, each
        position: known tokens in the prefix and stream entries alike."""
        if cond is None or not self.config.cond_map or self.config.cond == "none":
            return None
        cells = self.cond_map(cond)
        return cells.expand(batch, -1, -1) if cells.shape[0] == 1 else cells

    @staticmethod
    def cells_at(cells: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """cells (1 or B, N, d) at raster ``positions`` (B, ...) -> (B, ..., d)."""
        if cells.shape[0] == 1:
            return cells[0][positions]
        flat = positions.reshape(positions.shape[0], -1)
        out = cells.gather(1, flat[..., None].expand(-1, -1, cells.shape[-1]))
        return out.reshape(*positions.shape, cells.shape[-1])

    def content(self, tokens, positions):
        """Embedding of token ids sitting at raster positions (same shapes)."""
        return self.tok_emb(tokens) + self.pos_emb[positions]

    def stream_input(self, prev_tokens, prev_positions, query_positions, cells=None):
        """Stream entry: previous masked token (content + position; S with no position when
        prev_positions < 0) plus the query embedding of the position to predict (and, with
        ``cells``, that position's cell of the condition map)."""
        first = prev_positions < 0
        pos = self.pos_emb[prev_positions.clamp(min=0)] * (~first)[..., None]
        x = self.tok_emb(prev_tokens) + pos + self.query_emb[query_positions]
        return x if cells is None else x + self.cells_at(cells, query_positions)

    def embed_sequence(self, tokens, order, n_known, cond_tokens, cells=None):
        """Full permuted sequence [C, S, known, stream] -> (B, T, d) input embeddings.
        ``cells``: per-token condition embeddings (:meth:`condition_cells`) or None."""
        b, n = tokens.shape
        tok_sorted = tokens.gather(1, order)
        slot = torch.arange(n, device=tokens.device)[None, :].expand(b, n)
        in_stream = slot >= n_known[:, None]
        first = slot == n_known[:, None]
        prev_slot = (slot - 1).clamp(min=0)
        prev_tok = torch.where(first, self.start, tok_sorted.gather(1, prev_slot))
        prev_pos = torch.where(first, -1, order.gather(1, prev_slot))
        stream = self.stream_input(prev_tok, prev_pos, order)
        body = torch.where(in_stream[..., None], stream, self.content(tok_sorted, order))
        if cells is not None:  # known slot: its own cell; stream slot: the cell it predicts
            body = body + self.cells_at(cells, order)
        s = self.tok_emb.weight[self.start].expand(b, 1, -1)
        return torch.cat([cond_tokens, s, body], dim=1)

    # -- forward ------------------------------------------------------------

    def run(self, x, mask, cache: KVCache | None = None):
        """Blocks over x (B, t, d). With a cache, x's keys/values are appended to it and x
        attends to everything cached before it (``mask`` then covers the prompt only)."""
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, mask, cache)
        if cache is not None:
            cache.length += x.shape[1]
        return x

    def logits(self, hidden):
        return self.head(self.ln_f(hidden))

    def forward(self, tokens, known, cond=None):
        """Training / reference forward over the whole permuted sequence.

        ``tokens``: (B, N) ground-truth token ids; ``known``: (B, N) bool (False = masked, to
        be predicted; all False = a plain causal Taming sequence). Returns
        (logits (B, N, V) in permuted order — row n_known + j predicts z_{u_j} —, order,
        n_known); use :func:`masked_token_loss` for the loss.
        """
        b, n = tokens.shape
        if n != self.config.n_tokens:
            raise ValueError(f"expected {self.config.n_tokens} tokens per image, got {n}")
        order, n_known = permutation(known)
        cond_tokens = self.encode_condition(cond, b)
        x = self.embed_sequence(tokens, order, n_known, cond_tokens, self.condition_cells(cond, b))
        mask = permuted_mask(n_known, cond_tokens.shape[1], x.shape[1])
        hidden = self.run(x, mask)
        return self.logits(hidden[:, cond_tokens.shape[1] + 1 :]), order, n_known


def masked_token_loss(logits, tokens, order, n_known):
    """Cross-entropy on masked tokens only (stream rows), averaged over masked tokens."""
    target = tokens.gather(1, order)
    slot = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
    stream = slot >= n_known[:, None]
    return F.cross_entropy(logits[stream], target[stream])
