"""Offline data: synthetic pose scenes, natural-image patches, masks and sketches.

Nothing here touches the network: the only inputs are seeds and the photographs that ship
inside scikit-image. Every sample is a pure function of its seed; train / validation /
test are disjoint seed ranges (:mod:`.splits`). See docs/data.md.

Conventions: images uint8 HxWx3; masks bool HxW (True = regenerate); poses float32 (18, 3)
of (x = column, y = row, visible) with invisible = (-1, -1, 0); edge maps / sketches
float32 HxW in [0, 1] with 1 = stroke. The torch datasets convert to CHW tensors in [-1, 1].
"""

from napari_ilat.data.backgrounds import (
    COLOR_PHOTOS,
    GREY_PHOTOS,
    crop_photo,
    load_photo,
    procedural_texture,
    random_background,
)
from napari_ilat.data.masks import MASK_KINDS, RATE_TOLERANCE, box_mask, brush_mask, limb_mask, random_mask
from napari_ilat.data.natural import NaturalSample, make_natural_sample, natural_patch
from napari_ilat.data.pose_scenes import (
    Articulation,
    EditPair,
    Figure,
    Scene,
    SceneConfig,
    dilate,
    forward_kinematics,
    limb_footprint,
    make_edit_pair,
    make_scene,
    render_figure,
)
from napari_ilat.data.splits import SPLIT_SEED_RANGES, SPLITS, check_split, split_of_seed, split_seeds
from napari_ilat.engine.skeleton import (
    KEYPOINT_NAMES,
    LIMB_NAMES,
    NUM_KEYPOINTS,
    PART_NAMES,
    SKELETON,
    SKELETON_COLORS,
    draw_skeleton,
)
from napari_ilat.engine.sketch import compose_sketch, rasterize_strokes, to_grey255, xdog


def __getattr__(name):  # torch-backed datasets are imported lazily
    if name in ("PoseEditDataset", "NaturalPatchDataset", "image_to_tensor", "tensor_to_image"):
        from napari_ilat.data import datasets

        return getattr(datasets, name)
    raise AttributeError(name)


__all__ = [
    "COLOR_PHOTOS",
    "GREY_PHOTOS",
    "crop_photo",
    "load_photo",
    "procedural_texture",
    "random_background",
    "MASK_KINDS",
    "RATE_TOLERANCE",
    "box_mask",
    "brush_mask",
    "limb_mask",
    "random_mask",
    "NaturalSample",
    "make_natural_sample",
    "natural_patch",
    "Articulation",
    "EditPair",
    "Figure",
    "Scene",
    "SceneConfig",
    "dilate",
    "forward_kinematics",
    "limb_footprint",
    "make_edit_pair",
    "make_scene",
    "render_figure",
    "KEYPOINT_NAMES",
    "LIMB_NAMES",
    "NUM_KEYPOINTS",
    "PART_NAMES",
    "SKELETON",
    "SKELETON_COLORS",
    "draw_skeleton",
    "compose_sketch",
    "rasterize_strokes",
    "to_grey255",
    "xdog",
    "SPLIT_SEED_RANGES",
    "SPLITS",
    "check_split",
    "split_of_seed",
    "split_seeds",
    "PoseEditDataset",
    "NaturalPatchDataset",
    "image_to_tensor",
    "tensor_to_image",
]
