"""napari-ilat: local image editing with an Image Local Autoregressive Transformer.

The core (models, sampling, data, training) is pure torch/numpy and never imports Qt or
napari; the napari layer (widget, sample data, console helpers) sits on top of it.
The public names below are imported on first use, so ``import napari_ilat.data`` (and
napari's plugin discovery) does not pay for importing torch.
"""

__version__ = "0.1.0.dev0"

_LAZY = {
    "edit": "editing",
    "EditCancelled": "sampler",
    "ILATModel": "model",
    "load_model": "model",
    "save_model": "model",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
