#!/usr/bin/env bash
# Installs napari-ilat with its test extras and runs the whole test suite under a
# virtual X server (napari's canvas needs a real X display; offscreen Qt cannot draw it).
# Runs everything by default; pytest arguments pass through, e.g. a quick run:
#   bash scripts/test.sh -m "not slow"          (or -m "not gui" without napari/Qt)
# ruff (lint + format check, scripts/lint.sh) runs first: a lint failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/lint.sh
exec xvfb-run -a -s "-screen 0 1280x1024x24" python3 -m pytest "$@"
