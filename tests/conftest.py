"""Shared fixtures: tiny random models (fast on a 2-core CPU) and a display check."""

from __future__ import annotations

import os
import sys

import pytest


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


#: GUI tests need a display: ``bash scripts/test.sh`` runs the suite under xvfb-run.
needs_display = pytest.mark.skipif(not has_display(), reason="needs a display (run under xvfb-run)")


def pytest_collection_modifyitems(config, items):
    """Without a display every test marked ``gui`` is skipped before its fixtures run: napari's
    Qt would otherwise abort the whole pytest process (a plain ``pytest`` on a headless box)."""
    if has_display():
        return
    skip = pytest.mark.skip(reason="needs a display (run under xvfb-run)")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_pose_model():
    from napari_ilat import ILATModel

    return ILATModel.tiny(cond="pose", resolution=32)


@pytest.fixture(scope="session")
def tiny_model():
    from napari_ilat import ILATModel

    return ILATModel.tiny(cond="none", resolution=32)


@pytest.fixture(scope="session")
def tiny_pose_model_path(tmp_path_factory, tiny_pose_model):
    from napari_ilat import save_model

    return save_model(tiny_pose_model, tmp_path_factory.mktemp("models") / "tiny_pose")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, tiny_model):
    from napari_ilat import save_model

    return save_model(tiny_model, tmp_path_factory.mktemp("models") / "tiny")
