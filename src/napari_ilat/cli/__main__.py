"""``python -m napari_ilat.cli`` (what torchrun launches)."""

import sys

from napari_ilat.cli.main import main

sys.exit(main())
