"""napari-ilat: local image editing with an Image Local Autoregressive Transformer.

The package is layered, each folder importing only the ones before it (docs/architecture.md):
``engine`` (models, sampling, conditions, edit(); torch/numpy/scipy only) -> ``data`` (the
offline training and test data) -> ``evaluation`` (metrics, quality and speed benchmarks) ->
``train`` -> the front ends ``cli`` and ``plugin`` (all napari and Qt code).
The public names below are imported on first use, so ``import napari_ilat.data`` (and
napari's plugin discovery) does not pay for importing torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version source is pyproject.toml's [project] version
    __version__ = version("napari-ilat")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
del PackageNotFoundError, version

_LAZY = {
    "edit": "engine.editing",
    "edit_with_info": "engine.editing",
    "EditResult": "engine.editing",
    "edit_stack": "engine.stack",
    "moved_joint_mask": "engine.pose_mask",
    "StackResult": "engine.stack",
    "EditCancelled": "engine.sampler",
    "ILATModel": "engine.model",
    "load_model": "engine.model",
    "save_model": "engine.model",
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
