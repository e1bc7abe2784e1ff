"""Sampling masked tokens from the LA transformer: the cached sampler and its reference.

Why the cached sampler is fast: in the permuted sequence [C, S, known, stream] nothing in
the prefix depends on generated tokens, so its keys/values are computed once (one batched
forward) and every one of the |U| steps is a single-token forward against that cache. Cost
grows with the masked area, not with the image. The reference sampler does what the
official code did (recompute the whole sequence for every token) and exists for tests and
benchmarks.

Repeated Generate on the same image and mask (a new seed, more candidates) gives the same
prompt again, so its keys/values and first logits can be kept: ``sample_tokens(...,
prompts=store)`` looks them up in ``store`` (a dict; edit() keeps one per first-stage cache
entry, so it shares that cache's bounds) under the model (identity, weights version, dtype
and device), the mode, the tokens, the known set, the condition and the prompt's length,
and otherwise computes and stores them (at most ``PROMPTS_KEPT``, oldest dropped first). A
hit returns the very tensors a recomputation makes, so the output is the same bit for bit
(tested).

Modes:
- ``ilat``: known tokens form the prefix, masked tokens are generated in raster order.
- ``taming``: vanilla raster AR on the same network (empty known set): tokens before the
  first masked one are teacher-forced, every token after it is sampled with context from
  above/left only; the caller composites the masked ones into the image.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from napari_ilat.engine.reuse import weights_version
from napari_ilat.engine.transformer import KVCache, LATransformer, permutation, permuted_mask

MODES = ("ilat", "taming")
PROMPTS_KEPT = 4  # prompts per store: a few conditions (moved keypoints, new strokes) back and forth


class EditCancelled(Exception):
    """Raised when the cancel signal is set; nothing partial is returned."""


@dataclass
class SamplingOptions:
    temperature: float = 1.0
    top_k: int | None = None  # keep the k most likely codes
    top_p: float | None = None  # nucleus: smallest set with probability mass >= top_p
    greedy: bool = False  # argmax; ignores temperature / top-k / top-p
    # Classifier-free guidance on the condition (pose, sketch): logits = uncond + g * (cond -
    # uncond), with the unconditional logits from the same network run without the condition
    # (it is trained with condition dropout for that). 1 = the conditional model as trained;
    # > 1 follows the condition more closely. No effect without a condition.
    guidance: float = 1.0
    # (V,) bool: the only codes that may be drawn (the context palette, engine/palette.py),
    # applied before everything else, greedy included; None = every code
    allowed: torch.Tensor | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")


def pick(logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator | None):
    """(B, V) logits -> (B,) token ids."""
    if opts.allowed is not None:
        logits = logits.masked_fill(~opts.allowed.to(logits.device), float("-inf"))
    if opts.greedy:
        return logits.argmax(-1)
    logits = logits.float() / opts.temperature
    if opts.top_k is not None and opts.top_k < logits.shape[-1]:
        kth = torch.topk(logits, opts.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if opts.top_p is not None and opts.top_p < 1:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= opts.top_p  # always keeps the top code
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def guide(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: log p_u + scale * (log p_c - log p_u), row by row."""
    dtype = torch.promote_types(cond_logits.dtype, torch.float32)  # bf16/fp16 -> fp32, fp64 stays
    lc, lu = cond_logits.to(dtype).log_softmax(-1), uncond_logits.to(dtype).log_softmax(-1)
    return lu + scale * (lc - lu)


def is_guided(model, cond, opts: SamplingOptions) -> bool:
    """Whether sampling runs the unconditional branch too (guidance != 1 and a condition);
    ValueError for a model that has no unconditional mode."""
    if opts.guidance == 1.0 or cond is None or model.config.cond == "none":
        return False
    if getattr(model, "requires_condition", False) or getattr(model.config, "layout", "ilat") == "gpt":
        raise ValueError(
            "guidance needs a model trained with condition dropout (it runs the model without "
            "the condition too); this converted model has no unconditional mode: use guidance 1"
        )
    return True


@dataclass
class _Plan:
    order: torch.Tensor  # (N,) raster positions: known first, then the stream's targets
    n_known: int  # prefix length in image tokens
    n_forced: int  # stream entries whose targets are given (teacher forcing, taming mode)

    n_steps_limit: int | None = None  # generate only this many (sample_tokens' ``steps``)

    @property
    def n_steps(self) -> int:
        n = len(self.order) - self.n_known - self.n_forced
        return n if self.n_steps_limit is None else min(n, self.n_steps_limit)


def _plan(known: torch.Tensor, mode: str) -> _Plan:
    if mode == "ilat":
        order, n_known = permutation(known[None])
        return _Plan(order[0], int(n_known[0]), 0)
    if mode == "taming":
        masked = (~known).nonzero()
        first = int(masked[0]) if len(masked) else len(known)
        return _Plan(torch.arange(len(known), device=known.device), 0, first)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _prompt_key(model, mode, tokens, known, cond, length) -> tuple:
    """What a prompt's keys/values depend on (the masked ids are never read)."""
    ids = torch.where(known, tokens, -1)
    c = None if cond is None else (tuple(cond.shape), str(cond.dtype), cond.cpu().double().numpy().tobytes())
    w = model.tok_emb.weight
    version = weights_version(model)
    return (id(model), version, str(w.dtype), str(w.device), mode, int(length), ids.cpu().numpy().tobytes(), c)


def _prompt(model, mode, tokens, known, out, order, n_known, cond, cond_tokens, cells, length, kv, prompts):
    """Run the prompt (its first ``length`` sequence entries) into ``kv`` and return the
    logits of its last entry; with a ``prompts`` store, the same from an earlier run."""
    key = None if prompts is None else _prompt_key(model, mode, tokens, known, cond, length)
    hit = None if key is None else prompts.get(key)
    if hit is not None and hit[3]() is not model:  # an id() reused by another model
        hit = None
    if hit is None:
        x = model.embed_sequence(out[:1], order[None], n_known, cond_tokens, cells)[:, :length]
        hidden = model.run(x, permuted_mask(n_known, cond_tokens.shape[1], length), kv)
        hit = (kv.k[:, :1, :, :length].clone(), kv.v[:, :1, :, :length].clone(), model.logits(hidden[:, -1]))
        hit += (weakref.ref(model),)
        if key is not None:
            while len(prompts) >= PROMPTS_KEPT:  # oldest first (dicts keep insertion order)
                prompts.pop(next(iter(prompts)))
            prompts[key] = hit
    else:
        kv.k[:, :, :, :length], kv.v[:, :, :, :length] = hit[0], hit[1]
        kv.length = length
    return hit[2]


def _first_steps(out, tokens, known, mode, steps):
    """Keep only the first ``steps`` generated entries of a full run (input ids elsewhere)."""
    plan = _plan(known.flatten().bool(), mode)
    keep = plan.order[plan.n_known + plan.n_forced : plan.n_known + plan.n_forced + steps]
    res = tokens.flatten().clone()[None].repeat(out.shape[0], 1)
    res[:, keep] = out[:, keep]
    return res


def is_cancelled(cancel) -> bool:
    """``cancel``: None, a threading.Event or a callable returning bool."""
    if cancel is None:
        return False
    return cancel.is_set() if hasattr(cancel, "is_set") else bool(cancel())


@torch.inference_mode()
def sample_tokens(
    model: LATransformer,
    tokens: torch.Tensor,
    known: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    mode: str = "ilat",
    samples: int = 1,
    options: SamplingOptions | None = None,
    generator: torch.Generator | None = None,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    return_logits: bool = False,
    steps: int | None = None,
    prompts: dict | None = None,
):
    """Fill the masked tokens of one image, ``samples`` candidates in one batch.

    ``tokens``: (N,) ids (values at masked positions are ignored); ``known``: (N,) bool;
    ``cond``: condition tensor with batch 1 (or None). ``progress(done, total)`` is called
    after every generated token; ``cancel`` (a threading.Event or a callable returning bool)
    is checked before every step and raises :class:`EditCancelled`.
    Returns (samples, N) ids with known tokens unchanged in ``ilat`` mode (in ``taming`` mode
    every token after the first masked one is resampled); with ``return_logits`` also the
    (samples, steps, V) logits that produced them. ``steps``: generate only the first
    ``steps`` stream entries (the others keep their input ids); the sliding-window sampler
    uses it to fill one run of a big grid per window (``progress`` then counts to ``steps``).
    ``prompts``: a dict in which the cached sampler keeps and finds the prompt's keys/values
    (module doc); None computes them.
    """
    opts = options or SamplingOptions()
    guided = is_guided(model, cond, opts)  # before the converted layout: it has no guidance
    if getattr(model.config, "layout", "ilat") == "gpt":  # converted published weights
        from napari_ilat.engine.gpt import sample_gpt

        kw = dict(samples=samples, options=options, generator=generator, cache=cache, progress=progress)
        if steps is not None:  # the converted layout generates every stream entry: keep the first ones
            out = sample_gpt(model, tokens, known, cond, mode=mode, cancel=cancel, **kw)
            return _first_steps(out, tokens, known, mode, steps)
        return sample_gpt(model, tokens, known, cond, mode=mode, cancel=cancel, return_logits=return_logits, **kw)
    tokens, known = tokens.flatten(), known.flatten().bool()
    plan = _plan(known, mode)
    if steps is not None:
        plan.n_steps_limit = max(0, min(int(steps), plan.n_steps))
    order = plan.order
    out = tokens.clone()[None].repeat(samples, 1)
    # the conditional branch, and with guidance the unconditional one (no condition tokens,
    # no condition cells): both read the same sampled tokens
    branches = [(cond, model.encode_condition(cond, 1), model.condition_cells(cond, 1))]
    if guided:
        branches.append((None, model.encode_condition(None, 1), None))
    n_known = torch.tensor([plan.n_known], device=tokens.device)
    step_logits = []

    def emit(j, logits):
        if guided:
            logits = guide(logits[0], logits[1], opts.guidance)
        else:
            logits = logits[0]
        if return_logits:
            step_logits.append(logits)
        out[:, order[plan.n_known + j]] = pick(logits, opts, generator)
        if progress is not None:
            progress(j - plan.n_forced + 1, plan.n_steps)

    first = plan.n_forced  # first stream entry whose target we sample
    if cache:
        # One forward over the prompt (prefix + teacher-forced stream entries) fills the cache.
        caches, first_logits = [], []
        for c, cond_tokens, cells in branches:
            length = cond_tokens.shape[1] + 1 + plan.n_known + first + 1
            kv = KVCache(model.config, samples, length + plan.n_steps - 1, cond_tokens)
            caches.append(kv)
            if plan.n_steps and not is_cancelled(cancel):
                first_logits.append(
                    _prompt(model, mode, tokens, known, out, order, n_known, c, cond_tokens, cells, length, kv, prompts)
                )
        if len(first_logits) == len(branches):
            emit(first, [lg.expand(samples, -1) for lg in first_logits])
        for j in range(first + 1, first + plan.n_steps):
            if is_cancelled(cancel):
                raise EditCancelled()
            prev, query = order[plan.n_known + j - 1], order[plan.n_known + j]
            logits = []
            for (_, _, cells), kv in zip(branches, caches):
                x = model.stream_input(out[:, prev], prev.expand(samples), query.expand(samples), cells)
                hidden = model.run(x[:, None], None, kv)  # a stream row may see all before it
                logits.append(model.logits(hidden[:, -1]))
            emit(j, logits)
    else:
        # Reference: the whole sequence is recomputed for every generated token.
        orders = order[None].expand(samples, -1)
        for j in range(first, first + plan.n_steps):
            if is_cancelled(cancel):
                raise EditCancelled()
            logits = []
            for _, cond_tokens, cells in branches:
                stream0 = cond_tokens.shape[1] + 1 + plan.n_known  # the first stream entry
                full = stream0 + len(order) - plan.n_known
                mask = permuted_mask(n_known, cond_tokens.shape[1], full)
                x = model.embed_sequence(
                    out, orders, n_known.expand(samples), cond_tokens.expand(samples, -1, -1), cells
                )
                logits.append(model.logits(model.run(x, mask)[:, stream0 + j]))
            emit(j, logits)
    if is_cancelled(cancel):
        raise EditCancelled()
    if return_logits:
        v = model.config.vocab_size
        return out, (torch.stack(step_logits, 1) if step_logits else out.new_zeros(samples, 0, v))
    return out
