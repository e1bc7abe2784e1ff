"""Pose JSON files: what ``napari-ilat edit --pose`` and napari's *File > Open* (the plugin's
reader) read.

``[[x, y, v], ...]`` (18 rows, COCO/OpenPose order, x = column, y = row, v = 0 for
invisible), ``{"keypoints": [...]}``, or ``{"nose": [x, y], "neck": [x, y, v], ...}`` (missing
names are invisible); what pose estimators write is read too: OpenPose's ``--write_json``
files (``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}``, one person, the COCO-18 or
BODY_25 model) and COCO-17 keypoints (COCO annotations, MMPose, Detectron2: 17 rows or 51
flat numbers), converted to our 18 (:func:`napari_ilat.engine.skeleton.to_coco18`). An
optional ``"image_size": [height, width]`` (the demo writes it) gives a warning when the
image has another size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from napari_ilat.engine.skeleton import INVISIBLE, KEYPOINT_NAMES


def read_pose(path, shape=None) -> np.ndarray:
    """Keypoints from a pose JSON file (the formats: the module doc), as an array for
    :func:`napari_ilat.engine.inputs.check_pose` (18, 17 or 25 rows); with the image's
    ``shape``, a warning when the JSON's ``image_size`` differs. ValueError names the file
    and the entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if isinstance(data, dict) and "image_size" in data:
        size = data.pop("image_size")
        ok = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)
        if not ok:
            raise ValueError(f"{path}: image_size must be [height, width], got {size!r}")
        if shape is not None and tuple(size) != tuple(shape[:2]):
            warnings.warn(
                f"{path.name} was made for a {size[0]}x{size[1]} image, this image is "
                f"{shape[0]}x{shape[1]}: keypoints are in image pixels, so they may be misplaced",
                UserWarning,
                stacklevel=2,
            )
    if isinstance(data, dict) and "people" in data:  # OpenPose's --write_json output
        people = data["people"]
        if not isinstance(people, list) or not people:
            raise ValueError(f"{path}: 'people' is empty: the pose estimator found nobody")
        if len(people) > 1:
            raise ValueError(
                f"{path} holds {len(people)} people; an edit follows one pose: keep only the person to edit in 'people'"
            )
        if not isinstance(people[0], dict) or "pose_keypoints_2d" not in people[0]:
            raise ValueError(f"{path}: the person in 'people' has no 'pose_keypoints_2d'")
        data = people[0]["pose_keypoints_2d"]
    if isinstance(data, dict) and "keypoints" in data:
        data = data["keypoints"]
    if isinstance(data, dict):
        pose = np.tile(INVISIBLE.astype(np.float64), (len(KEYPOINT_NAMES), 1))
        for name, xy in data.items():
            if name not in KEYPOINT_NAMES:
                raise ValueError(f"{path}: unknown keypoint {name!r}; names are {', '.join(KEYPOINT_NAMES)}")
            ok = isinstance(xy, list) and len(xy) in (2, 3)
            ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xy)
            if not ok:
                raise ValueError(
                    f"{path}: keypoint {name!r} must be [x, y] or [x, y, visible] numbers, got {json.dumps(xy)}"
                )
            pose[KEYPOINT_NAMES.index(name)] = (xy[0], xy[1], xy[2] if len(xy) > 2 else 1.0)
        return pose
    try:
        pose = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: keypoints must be 18 rows of [x, y] or [x, y, visible] numbers ({e})") from e
    if pose.ndim == 1 and len(pose) in (17 * 3, 18 * 3, 25 * 3):  # flat x, y, v triplets (COCO, OpenPose)
        pose = pose.reshape(-1, 3)
    return pose
