"""The command line (``napari-ilat ...``): one module per subcommand, dispatched by main."""

from napari_ilat.cli.main import main

__all__ = ["main"]
