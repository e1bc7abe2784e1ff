"""Pose JSON files in napari: open one (*File > Open*, or drop it on the viewer) as the
keypoints and skeleton layers the widget edits, and save a pose Points layer as one.

Opened: every format ``napari-ilat edit --pose`` reads (ours; OpenPose's ``--write_json``
files; COCO-17 keypoints: :mod:`napari_ilat.engine.pose_json`), as named points and a
skeleton that follows them, like the pose sample's. A JSON file that is not a pose is left to
other readers. Saved (*File > Save Selected Layers...* with a ``.json`` name): ``{"keypoints":
{"nose": [x, y, 1], ...}}`` in the layer's data coordinates (x = column, y = row), which
``napari-ilat edit --pose`` and this reader read back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_ilat.engine.skeleton import KEYPOINT_NAMES

#: JSON files larger than this are not offered to the pose reader (napari asks every reader)
MAX_POSE_FILE_BYTES = 1 << 20


def _pose(path) -> np.ndarray:
    """(18, 3) keypoints of a pose JSON; ValueError (naming the file) when it holds none."""
    from napari_ilat.engine.inputs import check_pose
    from napari_ilat.engine.pose_json import read_pose

    pose = check_pose(read_pose(path))
    if pose.shape[1] == 2:
        pose = np.column_stack([pose, np.ones(len(pose))])
    pose[(pose[:, 0] < 0) | (pose[:, 1] < 0), 2] = 0
    if not (pose[:, 2] > 0).any():
        raise ValueError(f"{path}: every keypoint is missing")
    return pose


def _pose_shaped(path) -> bool:
    """Whether a JSON file is meant as a pose (then a reading error is the user's to see)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    if isinstance(data, dict):
        return bool({"people", "keypoints", "pose_keypoints_2d"} & set(data) or set(KEYPOINT_NAMES) & set(data))
    return False


def get_reader(path):
    """npe2 reader: a function that makes the layers of a pose JSON, or None for other files."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).lower().endswith(".json"):
        return None
    try:  # a pose file is a few KiB: a big JSON (a data set's annotations) is not parsed here
        if Path(path).stat().st_size > MAX_POSE_FILE_BYTES:
            return None
    except OSError:
        return None
    try:
        _pose(path)
    except (ValueError, OSError):
        # a pose file that cannot be used (several people, bad entries) is claimed, so that
        # opening it says why (napari shows the reader's error); other JSON is left alone
        return read_pose_layers if _pose_shaped(path) else None
    return read_pose_layers


def read_pose_layers(path):
    """Layer-data tuples: the skeleton (Shapes) and the named keypoints (Points)."""
    from napari_ilat.plugin.sample_data import (
        BONE_WIDTH,
        POINT_SIZE,
        install_skeleton_autolink,
        pose_layer_data,
        skeleton_layer_data,
    )

    if isinstance(path, list):
        path = path[0]
    pose = _pose(path)  # ValueError says what is wrong with the file
    install_skeleton_autolink()
    stem = Path(path).stem
    # points and bones sized to the figure (the sample's sizes are for ~100 px figures): on
    # a photo of a 2000 px tall person those would be invisible specks
    vis = pose[pose[:, 2] > 0, :2]
    extent = float(np.ptp(vis, axis=0).max()) if len(vis) > 1 else 0.0
    scale = max(1.0, extent / 100.0)
    return [
        skeleton_layer_data(pose, points_name=f"{stem} pose", name=f"{stem} skeleton", width=BONE_WIDTH * scale),
        pose_layer_data(pose, name=f"{stem} pose", size=POINT_SIZE * scale),
    ]


def write_pose(path: str, data, meta: dict) -> list[str]:
    """npe2 writer for a Points layer: its keypoints as pose JSON (module doc)."""
    from napari.layers import Points

    from napari_ilat.plugin.layers import points_to_pose

    # a layer without scale / translate: its world coordinates are the data coordinates
    layer = Points(np.asarray(data, float), features=meta.get("features"), name=meta.get("name", "points"))
    pose = points_to_pose(layer)  # InputError (a ValueError) names what is wrong
    keypoints = {
        KEYPOINT_NAMES[k]: [round(float(pose[k, 0]), 3), round(float(pose[k, 1]), 3), 1]
        for k in np.flatnonzero(pose[:, 2] > 0)
    }
    Path(path).write_text(json.dumps({"keypoints": keypoints}, indent=1) + "\n")
    return [path]
