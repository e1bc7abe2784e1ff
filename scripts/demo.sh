#!/usr/bin/env bash
# The main job on a fresh machine: install napari-ilat (scripts/install.sh), then open
# napari with the pose sample and the iLAT widget docked, one arm moved and regenerated.
# Without a display (no $DISPLAY / $WAYLAND_DISPLAY) it runs the same edit headless and
# writes before/after/side-by-side PNGs to ./ilat-demo/. Extra arguments go to
# `napari-ilat demo` (e.g. --headless, -o DIR, --seed N).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PYTHON=${PYTHON:-python3}
exec "$PYTHON" -m napari_ilat.cli demo "$@"
