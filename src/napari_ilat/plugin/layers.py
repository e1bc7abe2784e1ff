"""napari layers <-> the arrays :func:`napari_ilat.edit` takes, and back. No Qt here.

Shared by the dock widget (:mod:`._widget`) and the console helper (:mod:`.console`):

- :func:`gather_inputs` reads the image / mask / pose / sketch layers at the displayed 2D
  slice and returns plain numpy arrays (checked, with messages meant for the user);
- :func:`points_to_pose` turns a Points layer into (18, 3) keypoints (x = col, y = row, v)
  in the *image's* data pixels, going through world coordinates so layers with different
  scale / translate still line up;
- :func:`shapes_to_sketch` rasterises a Shapes layer's lines / paths / outlines into a
  stroke map, and :func:`shapes_to_mask` its filled shapes and strokes into a mask (a
  Shapes layer as the mask);
- :func:`moved_joint_mask` builds a mask from the keypoints that moved (auto mask).

The way back, an edit's result as a new layer over its source: :mod:`.results`.

Every function reads layers and never writes to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_ilat.engine.inputs import bounding_box, grow_mask, label_mask, normalize_mask
from napari_ilat.engine.pose_mask import moved_joint_mask
from napari_ilat.engine.skeleton import KEYPOINT_NAMES
from napari_ilat.engine.skeleton import NUM_KEYPOINTS as N_KEYPOINTS
from napari_ilat.engine.sketch import rasterize_strokes

__all__ = [
    "EditInputs",
    "InputError",
    "gather_inputs",
    "points_to_pose",
    "shapes_to_sketch",
    "shapes_to_mask",
    "moved_joint_mask",
    "gather_stack_inputs",
    "current_index",
    "pose_names",
    "mask_bbox",
]

_NAME_COLUMNS = ("name", "keypoint", "label")


class InputError(ValueError):
    """Inputs the user must fix (shown as a notification, never a traceback)."""


@dataclass
class EditInputs:
    """What :func:`napari_ilat.edit` needs, cut from the layers, plus where it came from."""

    image: np.ndarray  # (H, W) or (H, W, C): the displayed 2D slice of the image layer
    mask: np.ndarray  # (H, W) bool
    pose: np.ndarray | None = None  # (18, 3) (x, y, visible) in image pixels
    sketch: np.ndarray | None = None  # (H, W) float in [0, 1]
    index: tuple[int, ...] = ()  # indices along the image layer's leading (not shown) axes
    notes: list[str] = field(default_factory=list)  # things to tell the user
    # every slice (gather_stack_inputs): image is the whole (..., H, W[, C]) stack, mask
    # (H, W) for every slice or one per slice; rgb says whether the last axis is colour
    stack: bool = False
    rgb: bool = False
    # how the mask was made from its layer: one label of a Labels layer, grown by N px
    mask_label: int | None = None
    grow: float = 0.0
    # a large image (multiscale or lazy) is read by region: image, mask and sketch are the
    # region (the mask's bounding box and REGION_MARGIN around it) whose top-left pixel is
    # ``origin`` of the slice, and the pose is in the region's pixels; None: the whole slice
    origin: tuple[int, int] | None = None

    def read(self) -> EditInputs:
        """Read ``image`` if it is still lazy (dask, zarr: gathered without reading, so the
        widget reads it in its worker thread, not in napari's); returns self."""
        if not isinstance(self.image, np.ndarray):
            self.image = np.asarray(self.image)
        return self


# --------------------------------------------------------------------------- slices


def _spatial_ndim(layer) -> int:
    return int(layer.ndim)


def _check_2d_view(dims) -> None:
    if dims is None:
        return
    if dims.ndisplay != 2:
        raise InputError("switch the viewer to 2D (the 2D/3D button) to edit: iLAT edits one 2D slice")
    nd = dims.ndim
    if sorted(dims.displayed) != [nd - 2, nd - 1]:  # (transposed, they are the same slice)
        raise InputError(
            f"the viewer shows axes {tuple(dims.displayed)} of {nd}, another plane than the image's slices: iLAT "
            "edits slices of the last two axes (rows, columns); roll the axes back (the 'roll' button) until they "
            "are shown"
        )


def _slice_index(layer, world_point, what: str) -> tuple[int, ...]:
    """Integer indices of ``layer``'s leading axes at the viewer's current position."""
    nd = _spatial_ndim(layer)
    if nd <= 2:
        return ()
    if world_point is None:
        return tuple(0 for _ in range(nd - 2))
    data = np.asarray(layer.world_to_data(np.asarray(world_point, float)))
    shape = _layer_shape(layer)
    idx = []
    for ax in range(nd - 2):
        i = int(np.floor(data[ax] + 0.5))
        if not 0 <= i < shape[ax]:
            raise InputError(
                f"the current slice is outside the {what} layer {layer.name!r} (axis {ax} index "
                f"{i}, size {shape[ax]}); move the slider onto it"
            )
        idx.append(i)
    return tuple(idx)


def _layer_shape(layer) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(data.shape)


def plane_shape(layer) -> tuple[int, int]:
    """(rows, cols) of the 2D plane a layer's data is edited in: its last two spatial axes
    (an RGB(A) image's colour axis left out; level 0 of multiscale data)."""
    shape = _layer_shape(layer)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    return tuple(int(n) for n in shape[-2:])


def slice_count(layer) -> int:
    """How many 2D slices an image layer has (1 for a 2D or RGB image)."""
    shape = _layer_shape(layer)
    return int(np.prod(shape[: len(shape) - (3 if getattr(layer, "rgb", False) else 2)]))


def _slice_data(layer, index: tuple[int, ...], region=None, lazy: bool = False) -> np.ndarray:
    """The 2D (+ RGB) slice ``index`` of ``layer``'s (full-resolution) data (``()``: all of
    it), or only rows r0:r1, columns c0:c1 of it (``region``): lazy data reads only the
    chunks there, and with ``lazy`` not yet (:meth:`EditInputs.read` does)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    key = tuple(index)
    if region is not None:
        r0, c0, r1, c1 = region
        lead = len(_layer_shape(layer)) - (3 if getattr(layer, "rgb", False) else 2)
        key += (slice(None),) * (lead - len(key)) + (slice(r0, r1), slice(c0, c1))
    part = data[key] if key else data
    return part if lazy and not isinstance(part, np.ndarray) else np.asarray(part)


# Pixels read around the mask's bounding box from a large image: more than any model's
# window and context (the edit of the region is the edit of the whole slice), and a small
# read (a 2-megapixel region around a small mask) from a pyramid of gigapixels.
REGION_MARGIN = 1024


def reads_by_region(image) -> bool:
    """Whether edits read only a region of ``image``: a multiscale (pyramid) or lazy (dask,
    zarr, a memory-mapped file: not held in memory) image, which may be far larger than
    memory; its result layer then holds the edited region only, placed over it."""
    data = image.data[0] if getattr(image, "multiscale", False) else image.data
    lazy = not isinstance(data, np.ndarray) or isinstance(data, np.memmap)
    return bool(getattr(image, "multiscale", False)) or lazy


def world_point(viewer) -> np.ndarray | None:
    if viewer is None:
        return None
    return np.asarray(viewer.dims.point, float)


def on_slice(layer, coords: np.ndarray, world_point) -> np.ndarray:
    """Bool (N,): which of ``layer``'s (N, ndim) data coordinates napari shows at
    ``world_point``: those whose leading (not displayed) coordinates lie within half a step
    of the slice, napari's own rule for points and shapes. A 2D layer's are all shown
    (it is drawn on every slice); with no viewer position, slice 0 of the layer's axes."""
    coords = np.asarray(coords, float).reshape(len(coords), -1)
    lead = int(layer.ndim) - 2
    if lead <= 0 or not len(coords):
        return np.ones(len(coords), bool)
    if world_point is None:
        here = np.zeros(lead)
    else:
        here = np.asarray(layer.world_to_data(np.asarray(world_point, float)), float)[:lead]
    return np.all(np.abs(coords[:, :lead] - here) < 0.5, axis=1)


def current_index(layer, viewer=None, what: str = "image") -> tuple[int, ...]:
    """The indices of ``layer``'s leading axes at the viewer's position (no data read)."""
    return _slice_index(layer, world_point(viewer), what)


# --------------------------------------------------------------------------- pose


def pose_names(points) -> list[str] | None:
    """The keypoint names of a Points layer (feature 'name', 'keypoint' or 'label'), or None."""
    feats = getattr(points, "features", None)
    if feats is not None:
        for col in _NAME_COLUMNS:
            if col in feats.columns:
                return [str(v) for v in feats[col]]
    props = getattr(points, "properties", {}) or {}
    for col in _NAME_COLUMNS:
        if col in props:
            return [str(v) for v in props[col]]
    return None


def _to_image_pixels(layer, coords: np.ndarray, image, world_point) -> np.ndarray:
    """(N, layer.ndim) data coords of ``layer`` -> (N, 2) (row, col) data coords of ``image``."""
    out = np.empty((len(coords), 2))
    lead = None if world_point is None else np.asarray(world_point, float)
    for i, c in enumerate(coords):
        w = np.asarray(layer.data_to_world(c), float)
        if image is None:
            out[i] = w[-2:]
            continue
        if lead is not None and len(lead) >= image.ndim:
            full = lead[-image.ndim :].copy()
            full[-2:] = w[-2:]
            w = full
        out[i] = np.asarray(image.world_to_data(w), float)[-2:]
    return out


def points_to_pose(points, image=None, world_point=None) -> np.ndarray:
    """A Points layer -> (18, 3) keypoints (x = column, y = row, visible) in ``image`` pixels.

    Named points (a feature column 'name' / 'keypoint' / 'label' holding the names in
    :data:`~napari_ilat.engine.skeleton.KEYPOINT_NAMES`) may be any subset, in any order; missing
    ones are invisible. Unnamed points must be exactly 18, in COCO/OpenPose order. A boolean
    feature 'visible' (if present) marks invisible points. napari stores points as (row, col);
    the conversion goes through world coordinates, so the Points and Image layers may have
    different scale / translate.
    """
    data = np.asarray(points.data, float).reshape(len(points.data), -1)
    visible = np.ones(len(data), bool)
    feats = getattr(points, "features", None)
    if feats is not None and "visible" in feats.columns:
        visible = np.asarray(feats["visible"], dtype=bool)
    names = pose_names(points)
    if points.ndim > 2 and world_point is not None:  # an nD layer: the keypoints of the slice shown
        here = on_slice(points, data, world_point)
        data, visible = data[here], visible[here]
        names = None if names is None else [n for n, h in zip(names, here) if h]
    rc = _to_image_pixels(points, data, image, world_point) if len(data) else np.zeros((0, 2))

    pose = np.tile(np.array([-1.0, -1.0, 0.0]), (N_KEYPOINTS, 1))
    if names is not None and any(n in KEYPOINT_NAMES for n in names):
        seen = set()
        for k, name in enumerate(names):
            if name in ("", "nan", "None"):
                continue
            if name not in KEYPOINT_NAMES:
                raise InputError(
                    f"pose layer {points.name!r}: point {k} is named {name!r}, not a keypoint name; "
                    f"use one of: {', '.join(KEYPOINT_NAMES)}"
                )
            if name in seen:
                raise InputError(f"pose layer {points.name!r}: keypoint {name!r} appears twice")
            seen.add(name)
            j = KEYPOINT_NAMES.index(name)
            if visible[k]:
                pose[j] = (rc[k, 1], rc[k, 0], 1.0)
        if not seen:
            raise InputError(f"pose layer {points.name!r} has no named keypoints")
        return pose
    if len(data) != N_KEYPOINTS:
        where = " on this slice" if points.ndim > 2 and world_point is not None else ""
        raise InputError(
            f"pose layer {points.name!r} has {len(data)} points{where}; a pose needs exactly {N_KEYPOINTS} "
            f"in COCO/OpenPose order ({', '.join(KEYPOINT_NAMES)}), or points named with a "
            "'name' feature"
        )
    pose[visible, 0] = rc[visible, 1]
    pose[visible, 1] = rc[visible, 0]
    pose[visible, 2] = 1.0
    return pose


def world_pose_to_image(pose_world, image, world_point=None) -> np.ndarray:
    """(18, 3) pose in world (x, y, v) -> the same in ``image`` data pixels."""
    pose = np.array(pose_world, float)
    vis = pose[:, 2] > 0 if pose.shape[1] > 2 else np.ones(len(pose), bool)
    out = np.tile(np.array([-1.0, -1.0, 0.0]), (len(pose), 1))
    for k in np.flatnonzero(vis):
        w = np.array([pose[k, 1], pose[k, 0]])
        if world_point is not None and len(world_point) >= image.ndim:
            full = np.asarray(world_point, float)[-image.ndim :].copy()
            full[-2:] = w
            w = full
        r, c = np.asarray(image.world_to_data(w), float)[-2:]
        out[k] = (c, r, 1.0)
    return out


# --------------------------------------------------------------------------- sketch


def _ellipse_outline(corners: np.ndarray, n: int = 64) -> np.ndarray:
    c = corners.mean(0)
    u = (corners[1] - corners[0]) / 2.0
    v = (corners[3] - corners[0]) / 2.0
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return c + np.cos(t) * u + np.sin(t) * v


_CLOSED = ("rectangle", "polygon", "ellipse")


def _shown_shapes(shapes, image, world_point, origin=(0, 0), every_slice: bool = False):
    """(index, kind, (N, 2) row/col vertices in ``image`` pixels, less ``origin``) of each
    shape napari shows at ``world_point`` (an nD layer's shapes drawn on other slices are
    left out, unless ``every_slice``); an ellipse as a 64-gon of its outline."""
    data = [np.asarray(verts, float) for verts in shapes.data]
    if not data:
        return
    shown = on_slice(shapes, np.concatenate(data), world_point)  # one transform for all vertices
    shown |= every_slice
    ends = np.cumsum([len(verts) for verts in data])
    for i, (verts, kind) in enumerate(zip(data, shapes.shape_type)):
        if not shown[ends[i] - len(verts) : ends[i]].all():
            continue
        if kind == "ellipse":
            verts = _ellipse_outline(verts)
        yield i, kind, _to_image_pixels(shapes, verts, image, world_point) - np.asarray(origin, float)


def shapes_to_sketch(
    shapes, shape: tuple[int, int], width: float = 3.0, image=None, world_point=None, origin=(0, 0)
) -> np.ndarray:
    """Rasterise a Shapes layer into an (H, W) float stroke map in [0, 1] in ``image`` pixels
    (the map's pixel (0, 0) at ``origin``: a region of the image).

    Lines and paths are drawn as strokes of ``width`` pixels; rectangles, polygons and
    ellipses as their outlines (a sketch is edges, not filled regions). Of an nD layer only
    the shapes on the slice shown count, as napari draws them.
    """
    strokes = []
    for _, kind, rc in _shown_shapes(shapes, image, world_point, origin):
        if kind in _CLOSED and len(rc) > 2:
            rc = np.vstack([rc, rc[:1]])  # closed outline
        strokes.append(rc)
    # the training data's rasteriser: GUI strokes and training strokes are the same pixels
    return rasterize_strokes(strokes, tuple(shape[:2]), width).astype(np.float64)


def _edge_width_pixels(shapes, i: int, image, world_point) -> float:
    """Shape ``i``'s edge width (layer data units, as napari draws it) in ``image`` pixels."""
    width = float(np.asarray(shapes.edge_width, float).reshape(-1)[i])
    v0 = np.asarray(shapes.data[i], float)[0]
    steps = [v0.copy(), v0.copy(), v0.copy()]
    steps[1][-2] += width
    steps[2][-1] += width
    rc = _to_image_pixels(shapes, np.array(steps), image, world_point)
    return float(np.mean([np.hypot(*(rc[1] - rc[0])), np.hypot(*(rc[2] - rc[0]))]))


def shapes_to_mask(shapes, shape: tuple[int, int], image=None, world_point=None, origin=(0, 0)) -> np.ndarray:
    """Rasterise a Shapes layer into an (H, W) bool mask in ``image`` pixels (pixel (0, 0) at
    ``origin``): rectangles, polygons and ellipses filled (the pixels whose centres they
    cover, as napari's *Convert to labels*), lines and paths as strokes of their edge width
    as napari draws them (at least 1 px). Of an nD layer only the shapes on the slice shown
    count."""
    from skimage.draw import polygon2mask

    out = np.zeros(tuple(shape[:2]), bool)
    strokes, widths = [], []
    for i, kind, rc in _shown_shapes(shapes, image, world_point, origin):
        if kind in _CLOSED and len(rc) > 2:
            out |= polygon2mask(out.shape, rc)
        else:
            strokes.append(rc)
            widths.append(max(1.0, _edge_width_pixels(shapes, i, image, world_point)))
    if strokes:
        out |= rasterize_strokes(strokes, out.shape, widths) >= 0.5
    return out


def _shapes_box(shapes, image, world_point, plane, every_slice=False) -> tuple[int, int, int, int] | None:
    """(r0, c0, r1, c1): the pixels of ``plane`` the shapes shown (``every_slice``: on any
    slice) may cover (their vertices, strokes at their edge width), or None when none."""
    lo, hi = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
    for i, kind, rc in _shown_shapes(shapes, image, world_point, every_slice=every_slice):
        pad = 1.0 if kind in _CLOSED else 1.0 + _edge_width_pixels(shapes, i, image, world_point) / 2
        lo, hi = np.minimum(lo, rc.min(0) - pad), np.maximum(hi, rc.max(0) + pad)
    if not np.isfinite(lo).all():
        return None
    r0, c0 = (max(0, int(np.floor(v))) for v in lo)
    r1, c1 = (min(n, int(np.ceil(v)) + 1) for v, n in zip(hi, plane))
    return (r0, c0, r1, c1) if r0 < r1 and c0 < c1 else None


# --------------------------------------------------------------------------- gather


def _check_layer_kinds(image, mask, pose, sketch, label=None) -> None:
    from napari.layers import Image, Labels, Points, Shapes

    if image is None:
        raise InputError("no image layer: open an image (or File > Open Sample > napari-ilat)")
    if not isinstance(image, Image):
        raise InputError(f"{getattr(image, 'name', image)!r} is not an Image layer")
    if mask is None:
        raise InputError(
            "no mask layer: add a Labels layer and paint the region to regenerate (or draw it on a Shapes layer)"
        )
    if not isinstance(mask, (Labels, Shapes)):
        raise InputError(f"{getattr(mask, 'name', mask)!r} is not a Labels or Shapes layer")
    if pose is not None and not isinstance(pose, Points):
        raise InputError(f"{pose.name!r} is not a Points layer")
    if sketch is not None and not isinstance(sketch, Shapes):
        raise InputError(f"{sketch.name!r} is not a Shapes layer")
    if label is not None and not isinstance(mask, Labels):
        raise InputError(f"only one label: that is for a Labels layer, and {mask.name!r} is a Shapes layer")
    if sketch is not None and sketch is mask:
        raise InputError(
            f"the Shapes layer {mask.name!r} is chosen as both the mask and the sketch: draw the region to "
            "regenerate and the strokes that guide it on two layers"
        )


def _check_colour_axis(image) -> None:
    """Refuse a small colour image napari shows as a stack of 3- or 4-pixel-wide slices."""
    shape = _layer_shape(image)
    if not image.rgb and len(shape) >= 3 and shape[-1] in (3, 4):
        raise InputError(
            f"napari shows image {image.name!r} ({'x'.join(map(str, shape))}) as {shape[-3]} slices of "
            f"{shape[-2]}x{shape[-1]} pixels, not in colour: it reads a last axis of 3 or 4 as RGB(A) only when "
            "both sides exceed 30 pixels; open it with viewer.add_image(data, rgb=True)"
        )


def _is_shapes(layer) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes)


def gather_inputs(
    image, mask, pose=None, sketch=None, *, viewer=None, sketch_width: float = 3.0, label=None, grow: float = 0
) -> EditInputs:
    """Cut the arrays for one edit out of the layers at the viewer's displayed 2D slice.

    ``label``: regenerate only where the Labels layer ``mask`` holds this label (one object
    of a segmentation), not every non-zero one; ``grow``: grow the mask by this many pixels
    (:func:`~napari_ilat.engine.inputs.grow_mask`)."""
    _check_layer_kinds(image, mask, pose, sketch, label)
    _check_colour_axis(image)
    dims = getattr(viewer, "dims", None)
    point = world_point(viewer)
    notes: list[str] = []
    if image.ndim > 2:
        _check_2d_view(dims)
    index = _slice_index(image, point, "image")
    plane = plane_shape(image)
    no_pixel = InputError(
        f"the Shapes layer {mask.name!r} covers no pixel of this slice of {image.name!r}: draw a "
        "rectangle, polygon or ellipse over the region to regenerate"
    )
    # where the mask lies: a Labels layer's painted pixels, or its shapes (a Shapes layer)
    labels = q = None
    if _is_shapes(mask):
        if (box := _shapes_box(mask, image, point, plane)) is None:
            raise no_pixel
    else:  # in its own pixels, and how they lie on the image's (q: None when the same)
        labels = _labels_mask(mask, point, label)
        q = _plane_map(mask, image, point, labels.shape)
        if (box := mask_bbox(labels) if q is None else _mapped_box(labels, q, plane)) is None:
            raise _off_image(mask, image)
        if q is not None:
            notes.append(_grid_note(mask, image))
    region = _region(box, plane, grow) if reads_by_region(image) else None  # only around the mask
    r0, c0, r1, c1 = region or (0, 0, *plane)
    if region is not None:  # a shape over most of a slide would read it all
        _check_read_fits(image, region, index)
    img = _slice_data(image, index, region, lazy=True)  # read by EditInputs.read
    notes += _source_notes(image, region)
    if index:
        where = ", ".join(f"axis {ax} = {i}" for ax, i in enumerate(index))
        notes.append(f"edited the displayed slice only ({where})")
    if img.ndim == 3 and not image.rgb:
        raise InputError(f"image layer {image.name!r} has an unexpected slice shape {img.shape}")

    if labels is None:
        m = shapes_to_mask(mask, (r1 - r0, c1 - c0), image, point, (r0, c0))
    else:
        m = labels[r0:r1, c0:c1] if q is None else _map_labels(labels, q, (r0, c0, r1, c1))
    if not m.any():
        raise no_pixel if labels is None else _off_image(mask, image)
    m = _grow(m, grow, notes)
    kp, sk = _conditions(pose, sketch, image, point, m.shape, sketch_width, (r0, c0))
    if sk is not None:
        if not (sk[m] > 0).any():
            notes.append(
                f"no sketch strokes inside the mask ({sketch.name!r}); the sketch only guides the masked region"
            )
    return EditInputs(
        image=img,
        mask=m,
        pose=kp,
        sketch=sk,
        index=index,
        notes=notes,
        mask_label=label,
        grow=float(grow),
        origin=None if region is None else (r0, c0),
    )


def _source_notes(image, region) -> list[str]:
    """What the user is told about where the pixels come from."""
    if region is None:
        return ["multiscale image: edited at full resolution (level 0)"] if getattr(image, "multiscale", False) else []
    r0, c0, r1, c1 = region
    return [
        f"large image: read (at full resolution) and edited around the mask only (rows {r0}..{r1 - 1}, "
        f"columns {c0}..{c1 - 1}); the result layer holds the edited region, placed over the image"
    ]


def _conditions(pose, sketch, image, point, shape, sketch_width, origin):
    """(pose, sketch) for an edit of the ``shape`` pixels at ``origin`` of the slice: the
    keypoints (x, y) and the stroke map in those pixels (None for a layer not chosen)."""
    kp = None if pose is None else points_to_pose(pose, image, point)
    if kp is not None:
        kp[kp[:, 2] > 0, :2] -= (origin[1], origin[0])
    sk = None if sketch is None else shapes_to_sketch(sketch, shape, sketch_width, image, point, origin)
    return kp, sk


def _region(box: tuple[int, int, int, int], plane: tuple[int, int], grow) -> tuple[int, int, int, int]:
    """``box`` and REGION_MARGIN (+ ``grow``) pixels around it, within ``plane``."""
    pad = REGION_MARGIN + (int(np.ceil(grow)) if np.isfinite(grow) and grow >= 0 else 0)
    return max(0, box[0] - pad), max(0, box[1] - pad), min(plane[0], box[2] + pad), min(plane[1], box[3] + pad)


def mask_bbox(m: np.ndarray) -> tuple[int, int, int, int]:
    """(r0, c0, r1, c1): the bounding box of a non-empty 2D mask."""
    r0, r1, c0, c1 = bounding_box(m)
    return r0, c0, r1, c1


def _grow(m: np.ndarray, grow: float, notes: list[str]) -> np.ndarray:
    try:
        out = grow_mask(m, grow)
    except ValueError as e:
        raise InputError(str(e)) from e
    if grow:
        notes.append(f"mask grown by {grow:g} px ({int(out.sum()) - int(m.sum())} pixels added)")
    return out


def _labels_mask(mask, point, label=None, index=None) -> np.ndarray:
    """A Labels layer's bool mask in its own pixels, at the slice shown (``index``: that
    slice of its leading axes): non-zero, or where it holds ``label``."""
    m_index = index if index is not None else _slice_index(mask, point, "mask") if mask.ndim > 2 else ()
    m = _slice_data(mask, m_index)
    try:  # the engine's rule (non-zero = regenerate), the same as edit()'s
        return normalize_mask(m) if label is None else label_mask(m, label, f"mask {mask.name!r} on this slice")
    except ValueError as e:
        if m.size and not np.any(m):
            raise InputError(f"mask {mask.name!r} is empty on this slice: paint the region to regenerate") from e
        raise InputError(str(e) if label is not None else f"mask {mask.name!r}: {e}") from e


def _plane_map(mask, image, point, shape: tuple[int, int]) -> np.ndarray | None:
    """How the image's pixels sit on the pixels of a Labels layer's ``shape`` plane shown at
    ``point``, as napari draws both in world coordinates: (3, 2) rows q0, qr, qc with the
    layer's (row, col) of image pixel (r, c) = q0 + r qr + c qc; None when they are the same
    pixels (same size and place)."""
    base = np.r_[np.asarray(_slice_index(mask, point, "mask"), float), 0.0, 0.0]
    steps = np.array([base, base, base])
    steps[1, -2] += 1
    steps[2, -1] += 1
    p = _to_image_pixels(mask, steps, image, point)  # image (row, col) of layer pixels (0, 0), (1, 0), (0, 1)
    inv = np.linalg.inv(np.stack([p[1] - p[0], p[2] - p[0]], axis=1))  # image pixels -> layer pixels
    q = np.array([-inv @ p[0], inv[:, 0], inv[:, 1]])
    same = np.allclose(q, [[0, 0], [1, 0], [0, 1]], rtol=0, atol=1e-9) and tuple(shape) == plane_shape(image)
    return None if same else q


def _mapped_box(m: np.ndarray, q: np.ndarray, plane: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(r0, c0, r1, c1): the image pixels a mask ``m`` in a Labels layer's pixels may cover
    (:func:`_plane_map`), or None when it lies outside the image."""
    if not m.any():
        return None
    j0, k0, j1, k1 = mask_bbox(m)
    corners = np.array([(j, k) for j in (j0 - 0.5, j1 - 0.5) for k in (k0 - 0.5, k1 - 0.5)])
    rc = np.linalg.solve(q[1:].T, (corners - q[0]).T).T  # layer pixels -> image pixels
    r0, c0 = (max(0, int(np.floor(v)) - 1) for v in rc.min(0))
    r1, c1 = (min(n, int(np.ceil(v)) + 2) for v, n in zip(rc.max(0), plane))
    return (r0, c0, r1, c1) if r0 < r1 and c0 < c1 else None


def _map_labels(m: np.ndarray, q: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A mask ``m`` in a Labels layer's pixels on the image pixels rows r0:r1, columns c0:c1
    (``box``): each image pixel takes the layer pixel its centre falls in (napari draws
    pixel j over [j - 1/2, j + 1/2)), False off the layer."""
    from scipy.ndimage import affine_transform

    r0, c0, r1, c1 = box
    matrix = q[1:].T  # columns: the layer's (row, col) per image row, per image column
    # grid-constant + order 0: floor(x + 1/2) inside the layer, cval outside it
    out = affine_transform(
        m.astype(np.uint8), matrix, q[0] + matrix @ [r0, c0], (r1 - r0, c1 - c0), order=0, mode="grid-constant"
    )
    return out > 0


def _grid_note(mask, image) -> str:
    return (
        f"mask {mask.name!r} has other pixels than image {image.name!r} (its size, scale or position differ): "
        "mapped onto the image's pixels as napari draws it"
    )


def _off_image(mask, image, where: str = " on this slice") -> InputError:
    return InputError(
        f"mask {mask.name!r} covers no pixel of image {image.name!r}{where} (napari draws it elsewhere): "
        "paint the region to regenerate over the image"
    )


def _same_grid(mask, image) -> bool:
    """Whether a Labels layer's pixels are the image's, along every axis (same place)."""
    if mask.ndim != image.ndim:
        return False
    for p in np.vstack([np.zeros(image.ndim), np.eye(image.ndim)]):
        if not np.allclose(mask.world_to_data(image.data_to_world(p)), p, rtol=0, atol=1e-9):
            return False
    return True


def _check_read_fits(image, region=None, index: tuple[int, ...] | None = None) -> None:
    """Refuse, before reading it, a stack whose pixels and result cannot be held: lazy data
    (dask, zarr: a big stack napari shows a slice at a time) is read (the ``region`` of every
    slice), and the result is a copy, so a stack larger than memory would get napari killed.
    With ``index``: the region of that one slice (a pyramid's or a lazy image's)."""
    from napari_ilat.engine.editing import check_fits

    data = image.data[0] if getattr(image, "multiscale", False) else image.data
    shape = list(data.shape)
    at = len(shape) - (3 if image.rgb else 2)
    if region is not None:
        shape[at : at + 2] = region[2] - region[0], region[3] - region[1]
    if index is not None:
        shape = shape[at:]
    size = int(np.prod(shape)) * np.dtype(data.dtype).itemsize
    need = size if isinstance(data, np.ndarray) and region is None else 2 * size  # + the pixels read
    if index is None:
        what, advice = f"every slice of {image.name!r}", "edit slice by slice, or a crop of the stack"
    else:
        what, advice = f"the region of {image.name!r} around the mask", "draw a smaller mask"
    what += f" ({'x'.join(map(str, shape))}: its pixels read and the result)"
    try:
        check_fits(need, what, advice)
    except ValueError as e:
        raise InputError(str(e)) from e


def gather_stack_inputs(
    image, mask, pose=None, sketch=None, *, viewer=None, sketch_width: float = 3.0, label=None, grow: float = 0
) -> EditInputs:
    """The arrays for editing every 2D slice of an nD image layer
    (:func:`napari_ilat.engine.stack.edit_stack`): the whole stack (full resolution for
    multiscale data), the mask as one 2D plane for every slice or a stack of the image's
    size (each slice its own), and the pose / sketch as for the displayed slice; ``label``
    and ``grow`` as for :func:`gather_inputs`."""
    _check_layer_kinds(image, mask, pose, sketch, label)
    _check_colour_axis(image)
    dims = getattr(viewer, "dims", None)
    point = world_point(viewer)
    shape = _layer_shape(image)
    lead = shape[: len(shape) - (3 if image.rgb else 2)]
    if not lead or int(np.prod(lead)) < 2:
        raise InputError(f"image {image.name!r} has a single 2D slice; 'every slice' is for stacks")
    _check_2d_view(dims)
    for layer, what in ((pose, "pose"), (sketch, "sketch")):
        if layer is not None and layer.ndim > 2:  # its points / shapes may differ per slice
            raise InputError(
                f"every slice guides every slice with one 2D {what}, and {layer.name!r} is a {layer.ndim}D layer "
                f"(its {what} may differ per slice): edit slice by slice, or use a 2D {what} layer"
            )
    plane = plane_shape(image)
    notes = [f"every slice: {int(np.prod(lead))} slices of {plane[0]}x{plane[1]} pixels, each edited on its own"]
    by_region = reads_by_region(image)
    empty = InputError(f"mask {mask.name!r} is empty: paint the region to regenerate")
    if _is_shapes(mask):
        if mask.ndim > 2 and mask.ndim != image.ndim:
            raise InputError(
                f"the Shapes layer {mask.name!r} is {mask.ndim}D and the image {image.name!r} {image.ndim}D: for "
                "every slice draw the mask on a 2D Shapes layer (the same for all) or one with the image's axes"
            )
        box = _shapes_box(mask, image, point, plane, every_slice=True)
        if box is None:
            raise InputError(f"the Shapes layer {mask.name!r} covers no pixel of {image.name!r}")
        region = _region(box, plane, grow) if by_region else None
        r0, c0, r1, c1 = region or (0, 0, *plane)
        if mask.ndim <= 2:
            m = shapes_to_mask(mask, (r1 - r0, c1 - c0), image, point, (r0, c0))
        else:
            m = _shapes_stack_mask(mask, image, tuple(lead), (r1 - r0, c1 - c0), (r0, c0))
            notes.append(
                f"each slice has its own mask (the shapes of {mask.name!r} drawn on it); slices with none are copied"
            )
        if not m.any():
            raise empty
    elif mask.ndim == 2 and (q := _plane_map(mask, image, point, _layer_shape(mask))) is not None:
        # a 2D Labels layer on other pixels than the image's: mapped onto them, one mask for all
        labels = _labels_mask(mask, point, label, index=())
        if (box := _mapped_box(labels, q, plane)) is None:
            raise _off_image(mask, image, "")
        region = _region(box, plane, grow) if by_region else None
        r0, c0, r1, c1 = region or (0, 0, *plane)
        if not (m := _map_labels(labels, q, (r0, c0, r1, c1))).any():
            raise _off_image(mask, image, "")
        notes.append(_grid_note(mask, image))
    elif (m_shape := _layer_shape(mask)) == plane or (m_shape == tuple(lead) + plane and _same_grid(mask, image)):
        m = np.asarray(_slice_data(mask, ()))
        if mask.ndim > 2:
            notes.append(f"each slice has its own mask ({mask.name!r} is a stack); slices with none are copied")
        if not m.any():
            raise empty
        if label is not None:
            try:
                m = label_mask(m, label, f"mask {mask.name!r}")
            except ValueError as e:
                raise InputError(str(e)) from e
        region = _region(mask_bbox(m.reshape(-1, *plane).any(0)), plane, grow) if by_region else None
        r0, c0, r1, c1 = region or (0, 0, *plane)
        m = m[..., r0:r1, c0:c1]
    else:
        raise InputError(
            f"mask {mask.name!r} has shape {m_shape}: for every slice paint a 2D mask (the same for all; any size "
            f"and place) or a Labels stack of the image's size {tuple(lead) + plane} and place (each slice its own)"
        )
    notes += _source_notes(image, region)
    m = _grow(m, grow, notes)
    _check_read_fits(image, region)
    img = _slice_data(image, (), region, lazy=True)  # read by EditInputs.read
    kp, sk = _conditions(pose, sketch, image, point, m.shape[-2:], sketch_width, (r0, c0))
    return EditInputs(
        image=img,
        mask=m,
        pose=kp,
        sketch=sk,
        notes=notes,
        stack=True,
        rgb=bool(image.rgb),
        mask_label=label,
        grow=float(grow),
        origin=None if region is None else (r0, c0),
    )


def _shapes_stack_mask(shapes, image, lead: tuple[int, ...], plane: tuple[int, int], origin=(0, 0)) -> np.ndarray:
    """(*lead, H, W) bool: for each slice of ``image``, the mask of the shapes of an nD
    Shapes layer drawn on that slice (as napari shows them there), pixel (0, 0) at ``origin``."""
    out = np.zeros(lead + tuple(plane), bool)
    for j in np.ndindex(*lead):
        here = np.asarray(image.data_to_world(np.r_[j, 0.0, 0.0]), float)  # slice j's world position
        out[j] = shapes_to_mask(shapes, plane, image, here, origin)
    return out
