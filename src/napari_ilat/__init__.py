"""napari-ilat: local image editing with an Image Local Autoregressive Transformer.

The core (models, sampling, data, training) is pure torch/numpy and never imports Qt or
napari; the napari layer (widget, sample data, console helpers) sits on top of it.
"""

__version__ = "0.1.0.dev0"

from .edit import EditCancelled, edit  # noqa: E402
from .model import ILATModel, load_model, save_model  # noqa: E402

__all__ = ["edit", "EditCancelled", "ILATModel", "load_model", "save_model", "__version__"]
