#!/usr/bin/env bash
# Installs everything napari-ilat needs for development, tests and the demo on a fresh
# Debian/Ubuntu machine: the X/Qt system libraries (as root, when apt is there) and the
# package itself with its test extras, torch constrained to the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0
libxcb-xfixes0 libdbus-1-3 libegl1 libgl1 libfontconfig1"

if command -v apt-get >/dev/null 2>&1; then
    missing=$(dpkg-query -W -f='${Package} ${Status}\n' $APT_PACKAGES 2>/dev/null \
              | grep -c "install ok installed" || true)
    if [ "$missing" != "$(echo $APT_PACKAGES | wc -w)" ]; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
    fi
fi

PYTHON=${PYTHON:-python3}
$PYTHON -m pip install -q -c constraints.txt -e ".[testing]"
