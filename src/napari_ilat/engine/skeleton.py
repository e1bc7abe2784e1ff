"""The 18-keypoint pose skeleton (COCO/OpenPose order, as in the iLAT synthetic set).

Keypoints are float arrays of shape (18, 3) holding ``(x, y, visible)`` in image pixel
coordinates: ``x`` is the column, ``y`` the row, pixel centres sit on integer coordinates.
An invisible keypoint is stored as ``(-1, -1, 0)``.

"right"/"left" are the person's own sides: a figure facing the camera has its right
shoulder on the image's left.
"""

from __future__ import annotations

import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "neck",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_eye",
    "l_eye",
    "r_ear",
    "l_ear",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

NOSE, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST = 2, 3, 4
L_SHOULDER, L_ELBOW, L_WRIST = 5, 6, 7
R_HIP, R_KNEE, R_ANKLE = 8, 9, 10
L_HIP, L_KNEE, L_ANKLE = 11, 12, 13
R_EYE, L_EYE, R_EAR, L_EAR = 14, 15, 16, 17

#: Bones drawn for display (OpenPose's 17 COCO limb pairs), as keypoint index pairs.
SKELETON: tuple[tuple[int, int], ...] = (
    (NECK, R_SHOULDER),
    (NECK, L_SHOULDER),
    (R_SHOULDER, R_ELBOW),
    (R_ELBOW, R_WRIST),
    (L_SHOULDER, L_ELBOW),
    (L_ELBOW, L_WRIST),
    (NECK, R_HIP),
    (R_HIP, R_KNEE),
    (R_KNEE, R_ANKLE),
    (NECK, L_HIP),
    (L_HIP, L_KNEE),
    (L_KNEE, L_ANKLE),
    (NECK, NOSE),
    (NOSE, R_EYE),
    (R_EYE, R_EAR),
    (NOSE, L_EYE),
    (L_EYE, L_EAR),
)

#: One RGB colour (uint8) per SKELETON bone, OpenPose-like rainbow, for drawing.
SKELETON_COLORS: np.ndarray = np.array(
    [
        [255, 0, 0],
        [255, 85, 0],
        [255, 170, 0],
        [255, 255, 0],
        [170, 255, 0],
        [85, 255, 0],
        [0, 255, 0],
        [0, 255, 85],
        [0, 255, 170],
        [0, 255, 255],
        [0, 170, 255],
        [0, 85, 255],
        [0, 0, 255],
        [85, 0, 255],
        [170, 0, 255],
        [255, 0, 255],
        [255, 0, 170],
    ],
    dtype=np.uint8,
)

#: One RGB colour (uint8) per keypoint, for drawing: the bones' rainbow, one step further
#: for the 18th keypoint.
KEYPOINT_COLORS: np.ndarray = np.vstack([SKELETON_COLORS, np.array([[255, 0, 85]], np.uint8)])

#: Body parts of the synthetic figure, in the fixed depth order they are drawn
#: (back to front). Each part is one shape; its index is its label in label maps.
PART_NAMES: tuple[str, ...] = (
    "l_thigh",
    "l_shin",
    "l_foot",
    "r_thigh",
    "r_shin",
    "r_foot",
    "torso",
    "neck",
    "head",
    "r_upper_arm",
    "r_forearm",
    "r_hand",
    "l_upper_arm",
    "l_forearm",
    "l_hand",
)
PART = {name: i for i, name in enumerate(PART_NAMES)}

#: Parts a keypoint belongs to ("lies on"). A keypoint is visible iff it is inside the
#: image and the front-most part covering its pixel (coverage >= 0.5) is one of these.
KEYPOINT_PARTS: tuple[tuple[str, ...], ...] = (
    ("head",),  # nose
    ("torso", "neck"),  # neck
    ("torso", "r_upper_arm"),  # r_shoulder
    ("r_upper_arm", "r_forearm"),  # r_elbow
    ("r_forearm", "r_hand"),  # r_wrist
    ("torso", "l_upper_arm"),  # l_shoulder
    ("l_upper_arm", "l_forearm"),  # l_elbow
    ("l_forearm", "l_hand"),  # l_wrist
    ("torso", "r_thigh"),  # r_hip
    ("r_thigh", "r_shin"),  # r_knee
    ("r_shin", "r_foot"),  # r_ankle
    ("torso", "l_thigh"),  # l_hip
    ("l_thigh", "l_shin"),  # l_knee
    ("l_shin", "l_foot"),  # l_ankle
    ("head",),  # r_eye
    ("head",),  # l_eye
    ("head",),  # r_ear
    ("head",),  # l_ear
)
KEYPOINT_PART_IDS: tuple[frozenset[int], ...] = tuple(frozenset(PART[p] for p in parts) for parts in KEYPOINT_PARTS)

#: Limbs an edit can move, and the parts that move with each joint of the limb.
#: Moving the proximal joint (shoulder/hip angle) moves the whole limb; moving only the
#: distal joint (elbow/knee) moves the parts below it.
LIMB_PARTS: dict[str, tuple[str, ...]] = {
    "r_arm": ("r_upper_arm", "r_forearm", "r_hand"),
    "l_arm": ("l_upper_arm", "l_forearm", "l_hand"),
    "r_leg": ("r_thigh", "r_shin", "r_foot"),
    "l_leg": ("l_thigh", "l_shin", "l_foot"),
    "head": ("head",),
}
LIMB_DISTAL_PARTS: dict[str, tuple[str, ...]] = {
    "r_arm": ("r_forearm", "r_hand"),
    "l_arm": ("l_forearm", "l_hand"),
    "r_leg": ("r_shin", "r_foot"),
    "l_leg": ("l_shin", "l_foot"),
    "head": ("head",),
}
LIMB_NAMES: tuple[str, ...] = tuple(LIMB_PARTS)

INVISIBLE = np.array([-1.0, -1.0, 0.0], dtype=np.float32)


#: Other keypoint layouts that pose estimators write, by their number of keypoints: for each
#: of our 18, its index there (None: the neck of COCO-17, the mid-point of the shoulders).
#: COCO-17: COCO annotations, MMPose, Detectron2 (nose, eyes, ears, then left before right);
#: BODY_25: OpenPose's default model (our 18 plus a mid-hip at 8 and six foot points).
POSE_LAYOUTS: dict[int, tuple[str, tuple[int | None, ...]]] = {
    17: ("COCO-17", (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)),
    25: ("OpenPose BODY_25", (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)),
}


def keypoints_shown(keypoints: np.ndarray) -> np.ndarray:
    """Boolean (N,): which rows of (N, 2 | 3) keypoints (x, y[, visibility or confidence]) are
    there: both coordinates >= 0 and, with a third column, that value > 0. The one rule for
    every pose input (files, layers, arrays)."""
    kp = np.asarray(keypoints)
    shown = (kp[:, 0] >= 0) & (kp[:, 1] >= 0)
    if kp.shape[1] > 2:
        shown &= kp[:, 2] > 0
    return shown


def to_coco18(keypoints: np.ndarray) -> np.ndarray:
    """(17 | 25, 2 | 3) keypoints of another layout (:data:`POSE_LAYOUTS`) -> (18, 3) in ours.

    A keypoint is missing when its third value (COCO's visibility flag, OpenPose's
    confidence) is 0 or a coordinate is negative, and then comes out as :data:`INVISIBLE`.
    COCO-17 has no neck: it is the mid-point of the shoulders when both are there.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    name, index = POSE_LAYOUTS[kp.shape[0]]
    present = keypoints_shown(kp)
    out = np.tile(INVISIBLE.astype(np.float64), (NUM_KEYPOINTS, 1))
    for k, j in enumerate(index):
        if j is not None and present[j]:
            out[k] = (kp[j, 0], kp[j, 1], 1.0)
    if name == "COCO-17" and present[5] and present[6]:  # shoulders: left 5, right 6
        out[NECK] = ((kp[5, 0] + kp[6, 0]) / 2, (kp[5, 1] + kp[6, 1]) / 2, 1.0)
    return out


def visible_mask(pose: np.ndarray) -> np.ndarray:
    """Boolean (18,) array: which keypoints of a ``(18, 3)`` pose are visible."""
    return np.asarray(pose)[:, 2] > 0.5


def draw_skeleton(image: np.ndarray, pose: np.ndarray, radius: float | None = None, thickness: int = 1) -> np.ndarray:
    """Return a copy of uint8 RGB ``image`` with the pose's visible bones and keypoints drawn.

    Bones between two visible keypoints are drawn as anti-aliased lines in OpenPose
    colours; keypoints as small filled discs.
    """
    from skimage.draw import disk, line_aa

    out = np.array(image, dtype=np.float32, copy=True)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    h, w = out.shape[:2]
    pose = np.asarray(pose, dtype=np.float64)
    vis = visible_mask(pose)
    if radius is None:
        radius = max(1.2, min(h, w) / 100)
    for (a, b), colour in zip(SKELETON, SKELETON_COLORS.astype(np.float32)):
        if not (vis[a] and vis[b]):
            continue
        for o in range(-(thickness // 2), thickness - thickness // 2):
            r0, c0 = int(round(pose[a, 1])), int(round(pose[a, 0])) + o
            r1, c1 = int(round(pose[b, 1])), int(round(pose[b, 0])) + o
            rr, cc, val = line_aa(r0, c0, r1, c1)
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            rr, cc, val = rr[ok], cc[ok], val[ok, None].astype(np.float32)
            out[rr, cc] = out[rr, cc] * (1 - val) + colour * val
    for k in np.flatnonzero(vis):
        if radius >= 2.5:
            rr, cc = disk((pose[k, 1], pose[k, 0]), radius, shape=(h, w))
            out[rr, cc] = (255.0, 255.0, 255.0)
        rr, cc = disk((pose[k, 1], pose[k, 0]), radius - 1 if radius >= 2.5 else radius, shape=(h, w))
        out[rr, cc] = KEYPOINT_COLORS[k]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
