"""Edit every 2D plane of a stack (a time-lapse, a z-stack) with one mask or a mask per plane.

Each plane is edited exactly as it would be alone: plane ``j`` (in C order over the leading
axes, planes with nothing masked included) is the single :func:`~napari_ilat.engine.editing.
edit` of that plane with ``seed + j``, so any one plane can be redone, or compared, on its
own; a plane whose mask is empty is copied unchanged. The same pose and sketch guide every
plane. Progress counts tokens over the whole stack; cancelling stops within one token and
returns nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from napari_ilat.engine.editing import (
    cached_model,
    check_fits,
    check_seed,
    draw_seed,
    edit_with_info,
)
from napari_ilat.engine.inputs import normalize_mask

__all__ = ["StackResult", "edit_stack"]


@dataclass
class StackResult:
    """What :func:`edit_stack` returns."""

    image: np.ndarray  # the stack's dtype and shape
    seed: int  # plane j was edited with seed + j
    seeds: tuple  # per plane (C order): its seed, or None where nothing was masked (copied)
    mode: str
    model: str
    device: str
    seconds: float
    guidance: float = 1.0
    palette: bool = False  # whether the context palette restricted the codes of any plane
    scale: float = 1.0  # image pixels per model pixel of the planes' windows (the farthest from 1, where they differ)

    @property
    def samples(self) -> int:  # one result per plane, never candidates
        return 1

    @property
    def edited(self) -> int:
        return sum(s is not None for s in self.seeds)


class _StackProgress:
    """Tokens over the whole stack for a ``progress(done, total)`` callback. A plane's total is
    known once it starts, so planes not reached yet are counted at the last plane's total
    (exact for one mask shared by every plane, the common case)."""

    def __init__(self, progress, planes: int):
        self.progress, self.left, self.done_before, self.current = progress, planes, 0, 0

    def start_plane(self):
        self.left -= 1

    def end_plane(self, tokens: int):
        self.done_before += tokens

    def __call__(self, done: int, total: int):
        self.current = total
        if self.progress is not None:
            self.progress(self.done_before + done, self.done_before + total * (1 + self.left))


def _masks(mask, lead: tuple[int, ...], plane: tuple[int, int], shape) -> tuple[np.ndarray, bool]:
    """(mask, per_plane): a bool mask per plane (the stack's leading shape + plane; non-zero =
    regenerate, as a Labels stack is), or one for every plane by the engine's mask rule."""
    mask = np.asarray(mask)
    if mask.shape == lead + plane:
        if np.issubdtype(mask.dtype, np.floating) and not np.isfinite(mask).all():
            raise ValueError("mask contains NaN or inf; use 0 for keep and 1 (or any label) for regenerate")
        if not mask.any():
            raise ValueError("mask is empty on every plane: paint the region to regenerate (any non-zero label)")
        return mask != 0, True
    if mask.shape[:2] != plane or mask.ndim > 3:
        raise ValueError(
            f"mask shape {mask.shape} fits neither one plane {plane} nor the stack's planes {lead + plane} "
            f"(image shape {tuple(shape)})"
        )
    return normalize_mask(mask), False


def edit_stack(
    stack,
    mask,
    pose=None,
    sketch=None,
    *,
    rgb: bool = False,
    seed: int | None = None,
    progress=None,
    cancel=None,
    model=None,
    **edit_kwargs,
) -> StackResult:
    """Edit every 2D plane of ``stack``: ``(..., H, W)``, or ``(..., H, W, C)`` with ``rgb=True``.

    ``mask``: ``(H, W)`` for every plane, or one per plane (``stack``'s leading shape +
    ``(H, W)``). ``pose`` / ``sketch`` as for :func:`edit`, the same for every plane.
    ``edit_kwargs``: :func:`edit`'s sampling and blending options, except ``samples`` (one
    edit per plane). Raises ``ValueError`` for a stack without planes to edit, a mask of
    another shape, or a result that would not fit in memory; ``EditCancelled`` when
    cancelled.
    """
    if "samples" in edit_kwargs and edit_kwargs.pop("samples") != 1:
        raise ValueError("a stack edit makes one edit per plane: candidates are for one plane (samples=1)")
    stack = np.asarray(stack)
    n_plane = 3 if rgb else 2
    if stack.ndim < n_plane + 1:
        raise ValueError(
            f"a stack needs leading axes before its {'(H, W, C)' if rgb else '(H, W)'} planes, got shape "
            f"{stack.shape}; edit a single image with edit()"
        )
    lead = tuple(stack.shape[: stack.ndim - n_plane])
    plane = tuple(stack.shape[len(lead) : len(lead) + 2])
    mask, per_plane = _masks(mask, lead, plane, stack.shape)
    n = int(np.prod(lead))
    seed = check_seed(seed, n, f"{n}] (plane j uses seed + j")
    if seed is None:
        seed = draw_seed()
    check_fits(
        stack.nbytes, f"the result, a copy of this {'x'.join(map(str, stack.shape))} stack,", "edit fewer planes"
    )
    if model is not None:
        model = cached_model(model)  # loaded once, not per plane

    t0 = time.perf_counter()
    out = np.array(stack, copy=True)
    seeds: list[int | None] = []
    info = None
    palette, scale = False, 1.0
    counter = _StackProgress(progress, n)
    for j, index in enumerate(np.ndindex(*lead)):
        counter.start_plane()
        m = mask[index] if per_plane else mask
        if not np.any(m):
            seeds.append(None)
            continue
        try:
            info = edit_with_info(
                stack[index],
                m,
                pose,
                sketch,
                model=model,
                seed=seed + j,
                progress=counter,
                cancel=cancel,
                **edit_kwargs,
            )
        except ValueError as e:  # which plane, when it is one plane's data (e.g. NaN in it)
            raise ValueError(f"plane {', '.join(map(str, index))}: {e}") from e
        counter.end_plane(counter.current)
        out[index] = info.image
        seeds.append(seed + j)
        palette = palette or info.palette
        scale = max(scale, info.scale, key=lambda v: abs(v - 1))
    return StackResult(
        image=out,
        seed=seed,
        seeds=tuple(seeds),
        mode=info.mode,
        model=info.model,
        device=info.device,
        seconds=time.perf_counter() - t0,
        guidance=info.guidance,
        palette=palette,
        scale=scale,
    )
