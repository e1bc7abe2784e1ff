"""Input normalisation: the one place where images, masks, poses and sketches become what the
engine works on. :func:`napari_ilat.edit`, ``napari-ilat edit`` (files) and the dock widget
(layers) all go through these functions, so a 16-bit mask or sketch means the same everywhere.

The rules (docs/api.md):

- **image**: (H, W) or (H, W, 1|3|4), real numbers or bool (not complex, strings or
  objects), at least 8x8 pixels.
- **mask**: (H, W), or (H, W, C) read from a colour file; real numbers or bool. A pixel is
  masked when it is non-zero in any colour channel. Alpha (the 4th channel, or the 2nd of
  grey+alpha): a uniform alpha is ignored (an opaque PNG); a varying one is read too: a
  fully transparent pixel (alpha 0) is never masked, and when the colour channels are zero
  at every non-transparent pixel (a mask painted in the alpha channel only) the mask is
  ``alpha != 0``.
- **sketch**: (H, W) (or (H, W, C): the mean of the colour channels), 1 = stroke, 0 = empty.
  bool: True = stroke; uint8 / uint16: divided by the dtype's maximum (255 / 65535), like
  an image; any other dtype (float, int32, int64): values in [0, 1] are used as they are and
  a maximum above 1 means 8-bit values, divided by 255 (above 255 is an error). The result
  is clipped to [0, 1].
- **pose**: (18, 2|3) keypoints (x = column, y = row[, visible]) in image pixels; a
  keypoint is invisible when visible == 0 or x or y is negative. 17 rows are COCO-17 (COCO
  annotations, MMPose, Detectron2) and 25 rows OpenPose's BODY_25, converted to our 18
  (:func:`napari_ilat.engine.skeleton.to_coco18`). A visible keypoint more
  than one image width / height outside the image is an error (a pose in other units or for
  another image); one just outside the image is fine (a limb leaving the frame). When every
  visible keypoint lies in the top-left third of the image, a ``UserWarning`` says the pose
  was probably made for a smaller image; when they all lie within 0-1, not all on whole
  pixels, it is an error (normalised coordinates, as MediaPipe writes them).
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_ilat.engine.skeleton import NUM_KEYPOINTS

__all__ = ["check_image", "normalize_mask", "normalize_sketch", "check_pose", "label_mask", "grow_mask", "bounding_box"]


def check_image(image) -> np.ndarray:
    """``image`` as an array, checked: (H, W) or (H, W, 1|3|4), numeric, >= 8x8."""
    image = np.asarray(image)
    ok_shape = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if image.ndim == 3 and image.shape[2] == 2:  # ambiguous: grey + alpha, or a 2-channel stack
        raise ValueError(
            f"image must be 2D greyscale (H, W) or colour (H, W, 3|4), got shape {image.shape} (two "
            "channels): pass the channel to edit, image[..., c] (for grey + alpha, the grey "
            "image[..., 0]; the CLI does this itself for a grey+alpha PNG and keeps its alpha)"
        )
    if not ok_shape:
        if image.ndim == 3 and image.shape[0] in (3, 4) and min(image.shape[1:]) > 4:
            hint = (  # torch / PIL-to-tensor order
                "channels first? pass them last: image.transpose(1, 2, 0) (numpy) or .permute(1, 2, 0) "
                "(torch); for a stack of 3 or 4 slices, pass the 2D slice you want to edit"
            )
        else:
            hint = "for a stack, pass the 2D slice you want to edit"
        raise ValueError(f"image must be 2D greyscale (H, W) or colour (H, W, 3|4), got shape {image.shape}; {hint}")
    if not _real(image.dtype):
        raise ValueError(f"image must hold real numbers or bool, got dtype {image.dtype}")
    if min(image.shape[:2]) < 8:
        raise ValueError(f"image is too small to edit ({image.shape[:2]}); need at least 8x8 pixels")
    return image


def _real(dtype) -> bool:
    """bool, integers or floats: not complex, strings, objects, dates."""
    return np.issubdtype(dtype, np.bool_) or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _colour_channels(a: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W, C') without alpha: 2 channels = grey + alpha, 4 = RGB + alpha."""
    return a[..., :1] if a.shape[2] == 2 else a[..., :3]


def _plane(a, shape, what: str) -> np.ndarray:
    """A per-pixel input as (H, W, C) (C >= 1, alpha kept), checked against ``shape``."""
    try:
        a = np.asarray(a)
    except (TypeError, ValueError) as e:  # ragged nested lists
        raise ValueError(f"{what} must be a 2D (H, W) array: {e}") from e
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"{what} must be a 2D (H, W) array, got shape {a.shape}")
    if shape is not None and a.shape[:2] != tuple(shape[:2]):
        raise ValueError(
            f"{what} shape {a.shape[:2]} does not match the image's {tuple(shape[:2])}; "
            f"draw the {what} on a layer of the same size as the image"
        )
    if not _real(a.dtype):
        raise ValueError(f"{what} must hold real numbers or bool, got dtype {a.dtype}")
    return a


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the half-open bounding box of a non-empty 2D mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def normalize_mask(mask, shape=None) -> np.ndarray:
    """Bool (H, W) mask: non-zero in any colour channel = regenerate (see the module doc).

    ``shape``: the image's shape to check against (None: no check). Raises ``ValueError``
    on NaN / inf or an empty mask.
    """
    a = _plane(mask, shape, "mask")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError("mask contains NaN or inf; use 0 for keep and 1 (or any label) for regenerate")
    colour = (_colour_channels(a) != 0).any(-1)
    m = colour
    if a.shape[2] in (2, 4):
        alpha = a[..., -1]
        if alpha.size and alpha.min() != alpha.max():  # a varying alpha is part of the mask
            seen = alpha != 0
            m = seen if not colour[seen].any() else colour & seen
    if not m.any():
        raise ValueError("mask is empty: paint the region to regenerate (any non-zero label)")
    return m


def label_mask(labels, label, what: str = "mask") -> np.ndarray:
    """Bool, ``labels``' shape: where a label image (a segmentation, a Labels layer: one
    value per object) holds ``label`` (an integer, or several), to regenerate some objects
    of many (non-zero would regenerate them all). Raises ``ValueError`` for a colour image
    or a label not there."""
    a = np.asarray(labels)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} has values of type {a.dtype}; a label image holds integers")
    if a.ndim == 3 and a.shape[-1] in (3, 4) and not (a == a[..., :1]).all():
        raise ValueError(f"{what} is a colour image; a label needs a label image (one channel, one value per object)")
    wanted = list(label) if isinstance(label, (list, tuple, np.ndarray)) else [label]
    for v in wanted:
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or v == 0:
            raise ValueError(f"label must be a non-zero integer (0 is the background), got {v!r}")
    if not wanted:
        raise ValueError("no label given")
    m = np.isin(a, wanted)
    if m.ndim == 3 and m.shape[-1] in (3, 4):  # a grey label image stored as RGB(A)
        m = m[..., 0]
    missing = [v for v in wanted if not (a == v).any()]
    if missing:
        present = np.unique(a[a != 0])
        listed = ", ".join(str(v) for v in present[:10]) + (", ..." if len(present) > 10 else "")
        which = f"label {missing[0]}" if len(missing) == 1 else "labels " + ", ".join(map(str, missing))
        raise ValueError(f"{what} has no pixel of {which} (labels there: {listed or 'none'})")
    return m


def grow_mask(mask, pixels: float) -> np.ndarray:
    """Bool, ``mask``'s shape: every pixel within ``pixels`` (Euclidean, >= 0) of a masked one,
    plane by plane over the last two axes. A segmentation's mask hugs its object; grown by a
    few pixels it also covers the object's soft edge and shadow, which would otherwise be
    left for the model to continue."""
    from scipy import ndimage

    if isinstance(pixels, bool) or not isinstance(pixels, (int, float, np.integer, np.floating)):
        raise ValueError(f"grow must be a number of pixels >= 0, got {pixels!r}")
    if not (np.isfinite(pixels) and pixels >= 0):
        raise ValueError(f"grow must be a number of pixels >= 0, got {pixels!r}")
    m = np.asarray(mask, bool)
    out = m.copy()
    if pixels == 0:
        return out
    planes = out.reshape(-1, *m.shape[-2:])
    for plane in planes:
        if plane.any():
            plane[...] = ndimage.distance_transform_edt(~plane) <= pixels
    return out


def normalize_sketch(sketch, shape=None) -> np.ndarray:
    """float64 (H, W) stroke map in [0, 1], 1 = stroke (the scaling rule: the module doc)."""
    s = _colour_channels(_plane(sketch, shape, "sketch"))
    if s.dtype == bool:
        return s.any(-1).astype(np.float64)
    if s.dtype in (np.uint8, np.uint16):
        scale = float(np.iinfo(s.dtype).max)
        s = s.astype(np.float64)
    else:
        s = s.astype(np.float64)
        if not np.isfinite(s).all():
            raise ValueError("sketch contains NaN or inf; use values in [0, 1] (1 = stroke)")
        top = float(s.max()) if s.size else 0.0
        if top > 255:
            raise ValueError(f"sketch values go up to {top:g}; give strokes in [0, 1], 0..255, or as a uint16 array")
        scale = 255.0 if top > 1 else 1.0
    return np.clip(s.mean(-1) / scale, 0.0, 1.0)


def check_pose(pose, shape=None) -> np.ndarray:
    """float64 (18, 2|3) keypoints, checked (17 or 25 rows converted to 18); with the image's
    ``shape``, also against its size (the rule: the module doc)."""
    from napari_ilat.engine.skeleton import POSE_LAYOUTS, to_coco18

    try:
        kp = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"pose must be an array of shape ({NUM_KEYPOINTS}, 2) or ({NUM_KEYPOINTS}, 3) of numbers "
            f"(x, y[, visible]) per keypoint: {e}"
        ) from e
    rows = (NUM_KEYPOINTS, *POSE_LAYOUTS)
    if kp.ndim != 2 or kp.shape[0] not in rows or kp.shape[1] not in (2, 3):
        others = ", ".join(f"{n} rows: {name}" for n, (name, _) in POSE_LAYOUTS.items())
        raise ValueError(
            f"pose must be an array of shape ({NUM_KEYPOINTS}, 2) or ({NUM_KEYPOINTS}, 3) with "
            f"(x, y[, visible]) per keypoint in COCO/OpenPose order ({others}), got shape {kp.shape}"
        )
    if not np.isfinite(kp).all():
        raise ValueError("pose contains NaN or inf; mark missing keypoints with x = y = -1")
    if kp.shape[0] != NUM_KEYPOINTS:
        kp = to_coco18(kp)
    if shape is not None:
        _check_pose_in_image(kp, tuple(shape[:2]))
    return kp


def _check_pose_in_image(kp: np.ndarray, shape: tuple[int, int]) -> None:
    from napari_ilat.engine.skeleton import KEYPOINT_NAMES, keypoints_shown

    h, w = shape
    vis = keypoints_shown(kp)
    far = vis & ((kp[:, 0] > 2 * w) | (kp[:, 1] > 2 * h))
    if far.any():
        k = int(np.flatnonzero(far)[0])
        raise ValueError(
            f"pose keypoint {KEYPOINT_NAMES[k]!r} at x={kp[k, 0]:g}, y={kp[k, 1]:g} is far outside the "
            f"{h}x{w} image (more than its size beyond the edge); give keypoints in this image's pixels "
            "(x = column, y = row), or mark it invisible with x = y = -1"
        )
    shown = kp[vis, :2]
    if len(shown) >= 2 and shown.max() <= 1 and ((shown > 0) & (shown < 1)).any():
        # fractions of the image (MediaPipe, normalised COCO exports): the figure would be a
        # pixel in the corner, and the edit would ignore it
        raise ValueError(
            f"every visible pose keypoint lies within 0-1 (x up to {shown[:, 0].max():g}, y up to "
            f"{shown[:, 1].max():g}): normalised coordinates? Give keypoints in this image's pixels: "
            f"x times its width ({w}), y times its height ({h})"
        )
    if len(shown) >= 2 and shown[:, 0].max() < w / 3 and shown[:, 1].max() < h / 3:
        warnings.warn(
            f"every pose keypoint lies in the top-left third of the {h}x{w} image: was the pose made "
            "for a smaller image? Keypoints are in this image's pixels (x = column, y = row).",
            UserWarning,
            stacklevel=3,
        )
