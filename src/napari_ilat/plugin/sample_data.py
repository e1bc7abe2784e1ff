"""File > Open Sample > napari-ilat: a synthetic pose scene and a natural photograph.

The pose sample is a held-out (test split) synthetic scene: the image, a suggested mask,
the 18 keypoints as a Points layer (named with a 'name' feature; invisible ones left out)
and the skeleton as a Shapes layer of lines that follows the points as you drag them.
Sample functions return layer-data tuples (npe2 protocol); the skeleton is linked to the
points when both layers arrive in a viewer (:func:`install_skeleton_autolink`).
"""

from __future__ import annotations

import weakref

import numpy as np

from napari_ilat.engine.skeleton import KEYPOINT_COLORS, KEYPOINT_NAMES, SKELETON, SKELETON_COLORS

#: The pose sample: a test-split scene (never trained on) whose edit bends a hanging arm across
#: the body; a typical edit of the bundled model (docs/benchmarks.md, "Where the error is").
POSE_SAMPLE_SEED = 151
POSE_SAMPLE_RESOLUTION = 128
_KEY = "napari_ilat"  # metadata key
#: Keypoint diameter and bone width in image pixels, for the sample's ~100 px figures
POINT_SIZE = 3.0
BONE_WIDTH = 1.2

# the engine's OpenPose-like rainbow (napari_ilat.engine.skeleton), as napari's 0..1 floats
BONE_COLOURS = SKELETON_COLORS / 255.0  # one per SKELETON bone
KEYPOINT_COLOURS = KEYPOINT_COLORS / 255.0  # one per keypoint


def pose_sample_pair(seed: int = POSE_SAMPLE_SEED, resolution: int = POSE_SAMPLE_RESOLUTION):
    """The edit pair behind the pose sample (source scene, target pose, mask)."""
    from napari_ilat.data.pose_scenes import make_edit_pair

    return make_edit_pair(seed, resolution)


def pose_layer_data(
    pose: np.ndarray, name: str = "pose", reference=None, skeleton: str = "skeleton", size: float = POINT_SIZE
):
    """Layer-data tuple for a Points layer holding the visible keypoints of an (18, 3) pose
    (``size``: the points' diameter in image pixels)."""
    pose = np.asarray(pose, float)
    vis = np.flatnonzero(pose[:, 2] > 0)
    names = [KEYPOINT_NAMES[k] for k in vis]
    meta = {
        _KEY: {
            "kind": "pose",
            "skeleton": skeleton,
            "reference_pose": (pose if reference is None else np.asarray(reference, float)).tolist(),
        }
    }
    return (
        pose[vis][:, 1::-1].copy(),  # napari points are (row, col)
        {
            "name": name,
            "features": {"name": names},
            "face_color": KEYPOINT_COLOURS[vis],
            "border_color": "white",
            "border_width": 0.15,
            "size": size,
            "text": {
                "string": "{name}",
                "size": 7,
                "color": "white",
                "anchor": "upper_left",
                "translation": [-1.5, 1.5],
                "visible": False,
            },
            "metadata": meta,
        },
        "points",
    )


def skeleton_lines(points) -> tuple[list[np.ndarray], np.ndarray]:
    """(lines, colours) of the bones between the named keypoints present in a Points layer."""
    from napari_ilat.plugin.layers import pose_names

    names = pose_names(points) or []
    where = {n: i for i, n in enumerate(names) if n in KEYPOINT_NAMES}
    data = np.asarray(points.data, float)
    lines, colours = [], []
    for b, (a, c) in enumerate(SKELETON):
        na, nc = KEYPOINT_NAMES[a], KEYPOINT_NAMES[c]
        if na in where and nc in where:
            lines.append(data[[where[na], where[nc]]])
            colours.append(BONE_COLOURS[b])
    return lines, np.array(colours).reshape(-1, 3)


def skeleton_layer_data(pose: np.ndarray, points_name: str = "pose", name: str = "skeleton", width: float = BONE_WIDTH):
    """Layer-data tuple for a Shapes layer of the bones between the visible keypoints of an
    (18, 3) pose (``width`` in image pixels), linked to the Points layer ``points_name`` when
    both are in a viewer."""
    pose = np.asarray(pose, float)
    lines, colours = [], []
    for b, (a, c) in enumerate(SKELETON):
        if pose[a, 2] > 0 and pose[c, 2] > 0:
            lines.append(pose[[a, c]][:, 1::-1].copy())
            colours.append(BONE_COLOURS[b])
    return (
        lines,
        {
            "name": name,
            "shape_type": "line",
            "edge_color": np.array(colours),
            "edge_width": width,
            "metadata": {_KEY: {"kind": "skeleton", "points": points_name}},
        },
        "shapes",
    )


def pose_sample():
    """Synthetic pose scene, suggested mask, keypoints (Points) and skeleton (Shapes)."""
    pair = pose_sample_pair()
    install_skeleton_autolink()
    return [
        (pair.source, {"name": "pose scene", "metadata": {_KEY: {"kind": "scene", "seed": POSE_SAMPLE_SEED}}}, "image"),
        (pair.mask.astype(np.uint8), {"name": "suggested mask", "opacity": 0.35}, "labels"),
        skeleton_layer_data(pair.source_pose),
        pose_layer_data(pair.source_pose),
    ]


def photo_sample():
    """A natural photograph (scikit-image's 'chelsea', bundled offline) with a mask on one eye."""
    import skimage.data
    from skimage.draw import ellipse

    image = np.asarray(skimage.data.chelsea())
    mask = np.zeros(image.shape[:2], np.uint8)
    rr, cc = ellipse(137, 318, 30, 36, shape=mask.shape)
    mask[rr, cc] = 1
    return [
        (image, {"name": "chelsea"}, "image"),
        (mask, {"name": "suggested mask", "opacity": 0.35}, "labels"),
    ]


# --------------------------------------------------------------------------- skeleton link

_linked: weakref.WeakSet = weakref.WeakSet()  # skeleton Shapes layers already linked
_viewers: weakref.WeakSet = weakref.WeakSet()


def link_skeleton(points, shapes) -> None:
    """Redraw ``shapes`` (lines) from ``points``' named keypoints whenever the points change."""
    if shapes in _linked:
        return
    shapes_ref, points_ref = weakref.ref(shapes), weakref.ref(points)

    def update(event=None):
        pts, shp = points_ref(), shapes_ref()
        if pts is None or shp is None:
            return
        lines, colours = skeleton_lines(pts)
        width = float(np.atleast_1d(shp.edge_width)[0]) if len(shp.data) else BONE_WIDTH
        with shp.events.data.blocker():
            shp.data = []
        if lines:
            shp.add_lines(lines, edge_color=colours, edge_width=width)
        shp.refresh()

    points.events.data.connect(update)
    points.events.features.connect(update)
    _linked.add(shapes)
    update()


def ilat_meta(layer) -> dict:
    """What napari-ilat wrote into a layer's metadata (kind, source, ...); {} for others."""
    return (getattr(layer, "metadata", None) or {}).get(_KEY, {}) or {}


def autolink_layers(layers) -> None:
    """Link every skeleton Shapes layer to its pose Points layer (by the names in metadata)."""
    from napari.layers import Points, Shapes

    for shp in layers:
        m = ilat_meta(shp)
        if not isinstance(shp, Shapes) or m.get("kind") != "skeleton" or shp in _linked:
            continue
        for pts in layers:
            if isinstance(pts, Points) and pts.name == m.get("points") and ilat_meta(pts).get("kind") == "pose":
                link_skeleton(pts, shp)
                break


def install_skeleton_autolink(viewer=None) -> None:
    """Link skeletons to their points in ``viewer`` (default: the current one), now and for
    layers added later. Safe to call many times."""
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
    if viewer is None:
        return
    if viewer not in _viewers:
        _viewers.add(viewer)
        layers_ref = weakref.ref(viewer.layers)

        def on_insert(event=None):
            layers = layers_ref()
            if layers is not None:
                autolink_layers(layers)

        viewer.layers.events.inserted.connect(on_insert)
    autolink_layers(viewer.layers)
