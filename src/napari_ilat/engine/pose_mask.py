"""The mask of a pose edit: capsules around the limbs whose keypoints moved.

What the widget's *Auto mask from moved keypoints* paints, and what ``napari-ilat edit
--mask-from-pose OLD.json`` and ``moved_joint_mask(old, new, shape)`` give a script: the limbs
of the old pose and of the new one, each bone with a moved end drawn as a capsule, so the
regenerated region holds both the limb to remove and the limb to draw. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from napari_ilat.engine.inputs import check_pose
from napari_ilat.engine.skeleton import SKELETON, keypoints_shown
from napari_ilat.engine.sketch import rasterize_strokes

__all__ = [
    "moved_joint_mask",
    "hidden_kept",
    "default_mask_radius",
    "median_bone_length",
    "figure_ratio",
    "figure_off_scale",
    "figure_scale_warning",
    "figure_scale_limit_warning",
    "FIGURE_SCALE_BAND",
    "FIGURE_SCALE_WARN",
    "FIGURE_ENLARGE_MAX_TOKENS",
    "FIGURE_ENLARGE_MIN_SIZE",
    "RADIUS_PER_BONE",
    "RADIUS_MARGIN",
]

#: Face keypoints (nose, eyes, ears): a moved one masks the head, not a bone.
FACE_KEYPOINTS = frozenset({0, 14, 15, 16, 17})

#: A limb capsule's half-width in auto masks: RADIUS_PER_BONE x the median length of the figure's
#: visible bones + RADIUS_MARGIN px, so the mask is a property of the figure, not of the image
#: (the rule before, 6% of the image's side, gave a ~95 px figure in a 1024 px photograph
#: capsules of 61 px half-width where this gives 6). A limb's half-width is about 0.2 of its
#: bone's length in our synthetic figures. Chosen on the validation split by the edit a user
#: gets (the rule before against 0.15 / 0.2 / 0.25 / 0.3 / 0.4 x the median bone + 1-3 px;
#: docs/benchmarks.md, scripts/auto_mask_radius.py): smaller capsules leave less to regenerate
#: until they leave old limb behind.
RADIUS_PER_BONE = 0.25
RADIUS_MARGIN = 2.0


def median_bone_length(*poses) -> float | None:
    """The median length of the visible, non-face bones of the longest-boned of ``poses``
    (as :func:`moved_joint_mask` takes them), or None when none has a bone (of length > 0:
    keypoints piled on one point measure nothing)."""
    lengths = []
    for pose in poses:
        pose = check_pose(pose)
        vis = keypoints_shown(pose)
        pairs = [(a, b) for a, b in SKELETON if vis[a] and vis[b] and not {a, b} <= FACE_KEYPOINTS]
        bones = [length for a, b in pairs if (length := np.hypot(*(pose[a, :2] - pose[b, :2]))) > 0]
        if bones:
            lengths.append(float(np.median(bones)))
    return max(lengths) if lengths else None


def default_mask_radius(shape, *poses) -> float:
    """Half-width of a limb capsule for auto masks: ``RADIUS_PER_BONE`` x the figure's
    :func:`median_bone_length` + ``RADIUS_MARGIN``; with no bone, ~6% of the image's shorter
    side, >= 3 px."""
    bone = median_bone_length(*poses)
    if bone is not None:
        return RADIUS_PER_BONE * bone + RADIUS_MARGIN
    return max(3.0, 0.06 * min(shape[:2]))


#: The pose training figures' median bone length as a fraction of the model's resolution (the
#: train split's scenes at 128 px, 400 of them: 11.8-32.6 px, median 17.5). A pose model draws
#: limbs at that scale whatever the image's.
FIGURE_BONE = 17.5 / 128
#: A figure whose median bone is more than FIGURE_SCALE_BAND times longer (a person 500 px tall
#: in a photograph) or shorter than FIGURE_BONE x the model's resolution is off scale: edit()
#: with resolution="auto" edits it at its own scale. Chosen on the validation
#: split (scripts/pose_scale.py, docs/benchmarks.md "Figures larger or smaller than the training
#: figures"): editing at the figure's scale gained nothing for figures 0.8-1.75x the usual size
#: (-0.2 to -0.5 dB: resampling costs detail) and from +0.7 dB at 1.75-2x up to +3.7 dB at 4x;
#: for small figures, +1.3 dB and more below about 0.6x.
FIGURE_SCALE_BAND = 1.75
#: Warned about (resolution="native", or a figure "auto" cannot shrink enough) past this factor:
#: figures the model never saw (the training figures span 0.67-1.86x FIGURE_BONE's size).
FIGURE_SCALE_WARN = 2.5
#: "auto" enlarges a small figure's image only as far as the mask's bounding box stays within
#: this many tokens at model scale (64 x 64: 15-23 s of a 2-core CPU for a box the mask fills,
#: `bench native`, docs/benchmarks.md): the edit's time grows with the square of the enlargement, and a figure
#: whose bones are a pixel long would otherwise ask for an image hundreds of times larger.
FIGURE_ENLARGE_MAX_TOKENS = 64 * 64
#: When that budget stops the enlargement part of the way, "auto" enlarges at all only if the
#: figure then reaches this fraction of the training figures' size; smaller, the edit stays at
#: the image's own scale. Measured (scripts/pose_scale.py, 100 test pairs shrunk 0.1-0.2x, each
#: enlarged at most 1.5, 2 or 3x or fully; docs/benchmarks.md "Very small figures"): against not
#: enlarging, a figure brought to 0.2-0.3x the training size lost 0.44 +- 0.11 dB in the mask,
#: one left below 0.2x 0.16 +- 0.11, 0.3-0.4x +0.05 +- 0.14, 0.4-0.5x +0.40, fully enlarged +2.2.
FIGURE_ENLARGE_MIN_SIZE = 0.3


def figure_ratio(pose, resolution: int) -> float | None:
    """How many times larger ``pose``'s figure is (its :func:`median_bone_length`) than the
    figures a pose model of ``resolution`` px was trained on, at the model's own pixel scale;
    None when the pose has no bone."""
    bone = median_bone_length(pose)
    return None if bone is None else bone / (FIGURE_BONE * resolution)


def figure_off_scale(ratio: float | None, band: float = FIGURE_SCALE_BAND) -> bool:
    """Whether a :func:`figure_ratio` is more than ``band`` times off, either way."""
    return ratio is not None and not 1 / band <= ratio <= band


def _figure_is(ratio: float) -> str:
    size = f"{ratio:.2g}" if ratio < 10 else f"{ratio:.0f}"  # 0.011, 0.55, 5.9, 170 (not 1.7e+02)
    return f"the figure is about {size}x the size of the pose model's training figures"


def figure_scale_warning(pose, resolution: int) -> str | None:
    """A warning when ``pose``'s figure is far from the size a pose model of ``resolution`` px
    was trained on (at its own pixel scale), or None."""
    bone, usual = median_bone_length(pose), FIGURE_BONE * resolution
    ratio = None if bone is None else bone / usual
    if not figure_off_scale(ratio, FIGURE_SCALE_WARN):
        return None
    way, k = ("down", ratio) if ratio > 1 else ("up", 1 / ratio)
    return (
        f"{_figure_is(ratio)} (median bone "
        f"{bone:.0f} px, against about {usual:.0f} px): the model draws limbs at its own scale, so "
        f"{way}scale the image about {k:.1f}x for this edit, or edit with resolution 'auto' (the default), which does"
    )


def figure_scale_limit_warning(
    ratio: float, scale: float, resolution: int, shape, declined: float | None = None
) -> str | None:
    """A warning when a figure :func:`figure_ratio` times the training size could be rescaled only
    ``scale`` times (image pixels per model pixel: a large figure's image at most shrunk to one
    model window of ``resolution`` px, a small one's enlarged at most until the mask's box holds
    FIGURE_ENLARGE_MAX_TOKENS tokens) and is still off scale (past FIGURE_SCALE_WARN: a size the
    model never saw), or None. ``declined``: the scale the budget allowed a small figure, not
    used since it left the figure below FIGURE_ENLARGE_MIN_SIZE (``scale`` is then 1)."""
    if not figure_off_scale(ratio / scale, FIGURE_SCALE_WARN):
        return None
    if ratio < 1:
        budget = f"(at most {FIGURE_ENLARGE_MAX_TOKENS} tokens in the mask's box)"
        if declined is not None:
            done = (
                f"could enlarge the image only {1 / declined:.1f}x {budget}, which would leave the figure "
                f"about {ratio / declined:.2g}x the training figures' size: too small for enlarging to "
                f"help (measured worse than not enlarging), so it is edited at the image's own scale,"
            )
        elif scale < 1:
            done = f"enlarges the image only {1 / scale:.1f}x {budget}:"
        else:
            done = f"cannot enlarge the image {budget}:"
        return (
            f"{_figure_is(ratio)}, and for a mask this large the edit {done} the limbs come back about "
            f"{scale / ratio:.1f}x too thick for it; mask only around the figure, or crop around it and "
            f"enlarge the crop about {1 / ratio:.0f}x"
        )
    shrinks = (
        f"shrinks only {scale:.1f}x (to the model's {resolution} px window)"
        if scale > 1
        else f"is the model's {resolution} px window already"
    )
    return (
        f"{_figure_is(ratio)}, but this {min(shape[:2])} px image {shrinks}: the "
        f"limbs come back about {ratio / scale:.1f}x too thin for it; pad the image to about "
        f"{int(np.ceil(ratio * resolution))} px a side so that the edit can shrink it fully"
    )


def hidden_kept(old_pose, new_pose) -> np.ndarray:
    """``new_pose`` (checked, float64) with each keypoint it hides but ``old_pose`` shows put back,
    visible, at its old place: the pose as a drag leaves it (a user moves points, never hides one)."""
    old, new = check_pose(old_pose), check_pose(new_pose).copy()
    hidden = keypoints_shown(old) & ~keypoints_shown(new)
    new[hidden, :2] = old[hidden, :2]
    if new.shape[1] > 2:
        new[hidden, 2] = 1.0
    return new


def moved_joint_mask(
    old_pose, new_pose, shape, radius: float | None = None, tol: float = 0.5, hidden_moved: bool = True
) -> np.ndarray:
    """Bool (H, W) mask: the union of the limb capsules, at the old and the new positions, of
    every bone with a keypoint that moved more than ``tol`` px (or appeared / disappeared).

    Poses are (18, 2|3) (x, y[, v]) in image pixels (or COCO-17 / OpenPose-25 rows, as
    :func:`~napari_ilat.engine.inputs.check_pose` reads them). Face keypoints (nose, eyes, ears)
    mark the whole head: a disc of twice the radius around each old and new position.
    ``radius``: the capsules' half-width in pixels (None or 0: :func:`default_mask_radius`).
    ``hidden_moved=False``: a keypoint ``new_pose`` hides but ``old_pose`` shows is taken as
    unmoved, hidden behind the edit (a hip under a forearm bent across it), as a drag in the
    widget leaves it; with True (the widget, where only deleting a point hides it) its bones
    are masked.
    """
    old, new = check_pose(old_pose), check_pose(new_pose)
    if not hidden_moved:
        new = hidden_kept(old, new)
    h, w = shape[:2]
    if radius is None or radius <= 0:
        radius = default_mask_radius(shape, old, new)
    vo, vn = keypoints_shown(old), keypoints_shown(new)
    moved = (vo != vn) | (vo & vn & (np.hypot(*(old[:, :2] - new[:, :2]).T) > tol))
    strokes, widths = [], []
    for pose, v in ((old, vo), (new, vn)):
        for a, b in SKELETON:
            if (moved[a] or moved[b]) and v[a] and v[b] and not ({a, b} <= FACE_KEYPOINTS):
                strokes.append(pose[[a, b]][:, 1::-1])  # (x, y) -> (row, col)
                widths.append(2 * radius)
        for k in np.flatnonzero(moved & v):
            strokes.append(pose[[k]][:, 1::-1])  # a dot
            widths.append(2 * (2 * radius if k in FACE_KEYPOINTS else radius))
    return rasterize_strokes(strokes, (h, w), widths) > 0
