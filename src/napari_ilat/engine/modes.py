"""The editing modes: the one list the engine, the dock widget, the CLI and the benchmarks use.

A mode is an encoder (two-stream or plain) and a token order for the sampler
(:data:`napari_ilat.engine.sampler.MODES`), or, for ``imagebart``, the other engine
(:mod:`napari_ilat.engine.imagebart`), which needs a model of its own kind. Adding one here
makes it appear in the widget's mode list and ``napari-ilat edit --mode``, and, if it runs
on an iLAT model, in ``napari-ilat bench quality``; nothing else holds a list of modes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    """One way of running an edit."""

    name: str  # what edit(mode=...) takes
    label: str  # what the GUI shows
    two_stream: bool  # the masked-conv (two-stream) encoder, else the plain one
    order: str  # the sampler's token order: "ilat" (local AR), "taming" (raster AR), "imagebart"
    help: str
    model_kind: str = "ilat"  # the model it needs: an iLAT model, or an ImageBART one (engine/imagebart.py)


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("ilat", "iLAT", True, "ilat", "two-stream VQGAN + local autoregression (the product)"),
        Mode("ilat*", "iLAT*", False, "ilat", "plain encoder + local autoregression (ablation)"),
        Mode("taming", "Taming", False, "taming", "plain encoder, raster AR with context from above/left"),
        Mode(
            "imagebart",
            "ImageBART",
            False,
            "imagebart",
            "plain encoder, coarse-to-fine reverse diffusion over tokens (needs an ImageBART model)",
            model_kind="imagebart",
        ),
    )
}
#: The mode names, in display order.
MODE_NAMES: tuple[str, ...] = tuple(MODES)


def get_mode(name: str) -> Mode:
    """The :class:`Mode` called ``name``; ``ValueError`` naming the valid ones otherwise."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {', '.join(MODE_NAMES)}, got {name!r}") from None


def modes_for(model_kind: str) -> tuple[str, ...]:
    """The names of the modes that run on a model of ``model_kind`` ("ilat" or "imagebart")."""
    return tuple(m.name for m in MODES.values() if m.model_kind == model_kind)


def mode_label(name: str) -> str:
    """The GUI label of a mode (the name itself for an unknown one)."""
    mode = MODES.get(name)
    return mode.label if mode is not None else str(name)
