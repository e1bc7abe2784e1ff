"""An edit's result -> a napari layer, exactly over its source: name, placement, metadata,
candidates. No Qt here. Shared by the dock widget and the console helper, which both end
in :func:`add_edit_result`; :func:`keep_candidate` makes one candidate a layer of its own.

Every function reads layers and never writes to them (it only adds new ones).
"""

from __future__ import annotations

import numpy as np

from napari_ilat.engine.modes import mode_label
from napari_ilat.plugin.layers import EditInputs, InputError, mask_bbox

__all__ = [
    "result_name",
    "placement",
    "result_layer_data",
    "add_result_layer",
    "result_metadata",
    "add_edit_result",
    "is_candidates",
    "shown_candidate",
    "candidate_layer_data",
    "keep_candidate",
    "as_slice_data",
    "add_below_annotations",
]


def result_name(
    source_name: str, mode: str, seed: int, samples: int, index: tuple[int, ...], slices: int = 0, region=False
) -> str:
    """``<source> [iLAT seed 3]``; N candidates: ``[iLAT seeds 3..6]`` (candidate k, the slider's
    position k, is the single edit with seed 3 + k); every one of N slices: ``[iLAT seeds
    3..6, every slice]`` (slice j with seed 3 + j); the edited region of a large image:
    ``[iLAT seed 3, region]``."""
    n = slices or samples
    seeds = f"seed {seed}" if n == 1 else f"seeds {seed}..{seed + n - 1}"
    bits = [f"{mode_label(mode)} {seeds}"]
    if slices:
        bits.append("every slice")
    if region:
        bits.append("region")
    if index:
        bits.append("slice " + ",".join(map(str, index)))
    return f"{source_name} [{', '.join(bits)}]"


def _embed(matrix: np.ndarray, n_lead: int) -> np.ndarray:
    n = matrix.shape[0]
    out = np.eye(n + n_lead)
    out[n_lead:, n_lead:] = matrix
    return out


def placement(source, index: tuple[int, ...] = (), candidates: bool = False, corner=(0, 0)) -> dict:
    """scale / translate / rotate / shear / affine that put a 2D array exactly over the slice
    ``index`` of ``source`` (one slice thick, so it shows on that slice only), its pixel
    (0, 0) over the slice's pixel ``corner`` (row, column), with an optional leading
    candidate axis of unit scale."""
    from napari.utils.transforms import CompositeAffine
    from napari.utils.transforms.transform_utils import expand_upper_triangular

    nd = int(source.ndim)
    scale = np.asarray(source.scale, float)
    translate = np.asarray(source.translate, float)
    rotate = np.asarray(source.rotate, float)
    shear = np.asarray(source.shear, float)
    shear_m = expand_upper_triangular(shear) if shear.ndim == 1 else shear
    affine = np.asarray(source.affine.affine_matrix, float)
    if index or any(corner):
        comp = CompositeAffine(scale=scale, translate=translate, rotate=rotate, shear=shear_m, ndim=nd)
        offset = np.zeros(nd)
        offset[: len(index)] = index
        offset[-2:] = corner
        translate = np.asarray(comp(offset), float)
    if candidates:
        scale = np.concatenate([[1.0], scale])
        translate = np.concatenate([[0.0], translate])
        rotate, shear_m, affine = _embed(rotate, 1), _embed(shear_m, 1), _embed(affine, 1)
    return dict(scale=scale, translate=translate, rotate=rotate, shear=shear_m, affine=affine)


def as_slice_data(array: np.ndarray, index: tuple[int, ...], candidates: bool) -> np.ndarray:
    """Insert one singleton axis per leading index (after the candidate axis, if any)."""
    if not index:
        return array
    c = 1 if candidates else 0
    return array.reshape(array.shape[:c] + (1,) * len(index) + array.shape[c:])


def result_layer_data(
    result: np.ndarray, source, inputs: EditInputs, name: str, candidates: bool, metadata=None, corner=(0, 0)
):
    """(data, kwargs) for ``viewer.add_image``: the result exactly over its source.

    2D source: the result as is, or (N, H, W[, C]) for N candidates (a slider). nD source:
    the edited slice as a layer one slice thick at the slice's position, so it shows on
    that slice only. Scale, translate, rotate, shear and affine are the source's (the
    candidate axis is prepended with unit scale); a region of the slice (``corner``: its
    top-left pixel) lies over that region.
    """
    kwargs = dict(name=name, rgb=bool(source.rgb), blending=source.blending, metadata=dict(metadata or {}))
    kwargs.update(placement(source, inputs.index, candidates, corner))
    if not source.rgb:
        kwargs.update(
            colormap=source.colormap.name,
            contrast_limits=list(source.contrast_limits),
            gamma=source.gamma,
        )
    return as_slice_data(result, inputs.index, candidates), kwargs


def add_below_annotations(viewer, add):
    """Call ``add()`` (which appends a layer) and move the new layer down to just below the
    lowest Points / Shapes layer that sits above every image, so keypoints and strokes stay
    on top (and draggable) while results and masks cover the image."""
    from napari.layers import Image, Labels

    layers = viewer.layers
    layer = add()
    here = len(layers) - 1  # napari appends; compare by index (a proxied viewer wraps layers)
    below = [i for i, lay in enumerate(layers) if i != here and isinstance(lay, (Image, Labels))]
    target = (below[-1] + 1) if below else 0
    if target < here:
        layers.move(here, target)
    return layer


def add_result_layer(viewer, data, kwargs):
    """Add the result as an Image layer above the images / masks, below points and shapes."""
    return add_below_annotations(viewer, lambda: viewer.add_image(data, **kwargs))


_NOT_RECORDED = frozenset({"progress", "cancel"})


def result_metadata(source_name: str, mask_name: str | None, index: tuple[int, ...], params: dict, result) -> dict:
    """The ``napari_ilat`` metadata of a result layer: where it came from and how it was
    made (``result``: the engine's EditResult, so the seed is the one actually used)."""
    meta = {
        "source": source_name,
        "mask": mask_name,
        "slice": list(index),
        "model": result.model,
        "mode": result.mode,
        "samples": result.samples,
        "seed": result.seed,
        # candidate k (every slice: slice j, in C order) is the single edit with this seed;
        # None: a slice with nothing masked, copied
        "seeds": [None if v is None else int(v) for v in result.seeds],
        "device": result.device,
        "seconds": round(float(result.seconds), 3),
        "palette_used": bool(result.palette),  # params' "palette" is the setting (auto, on, off)
        "scale": round(float(result.scale), 4),  # image pixels per model pixel of the edited window
    }
    for k, v in params.items():
        if k not in meta and k not in _NOT_RECORDED:
            meta[k] = v if isinstance(v, (bool, int, float, str, type(None))) else str(v)
    return {"napari_ilat": meta}


def is_candidates(layer) -> bool:
    """An Image layer holding N > 1 candidates of one edit (the leading axis a slider)."""
    from napari.layers import Image

    from napari_ilat.plugin.sample_data import ilat_meta

    meta = ilat_meta(layer)
    return isinstance(layer, Image) and meta.get("samples", 1) > 1 and len(meta.get("seeds", ())) > 1


def shown_candidate(layer, viewer) -> int:
    """The candidate a candidates layer shows at the viewer's current position."""
    point = np.asarray(viewer.dims.point, float)[-int(layer.ndim) :]
    k = int(np.round(layer.world_to_data(point)[0]))
    return min(max(k, 0), len(layer.data) - 1)


def candidate_layer_data(layer, k: int):
    """(data, kwargs) for ``viewer.add_image``: candidate ``k`` of a candidates layer as a layer
    of its own, exactly where the candidates layer showed it, named and recorded as the single
    edit with its seed (what Generate with that seed and one candidate gives).

    napari's own *Split Stack* is no substitute: it sets additive blending, new contrast
    limits, and drops rotate / shear / affine."""
    from napari.utils.transforms.transform_utils import expand_upper_triangular

    from napari_ilat.plugin.sample_data import ilat_meta

    meta = dict(ilat_meta(layer))
    seeds = list(meta["seeds"])
    if not 0 <= k < len(seeds):
        raise InputError(f"candidate {k} does not exist: {layer.name!r} has {len(seeds)} (0..{len(seeds) - 1})")
    index = tuple(meta.get("slice") or ())
    meta.update(samples=1, seed=seeds[k], seeds=[seeds[k]], candidate_of=layer.name, candidate=k)
    name = result_name(meta["source"], meta["mode"], seeds[k], 1, index, region="region" in meta)
    shear = np.asarray(layer.shear, float)
    shear = expand_upper_triangular(shear) if shear.ndim == 1 else shear
    kwargs = dict(
        name=name,
        rgb=bool(layer.rgb),
        blending=layer.blending,
        opacity=layer.opacity,
        metadata={"napari_ilat": meta},
        scale=np.asarray(layer.scale, float)[1:],
        translate=np.asarray(layer.translate, float)[1:],
        rotate=np.asarray(layer.rotate, float)[1:, 1:],
        shear=shear[1:, 1:],
        affine=np.asarray(layer.affine.affine_matrix, float)[1:, 1:],
    )
    if not layer.rgb:
        kwargs.update(colormap=layer.colormap.name, contrast_limits=list(layer.contrast_limits), gamma=layer.gamma)
    return np.array(layer.data[k], copy=True), kwargs


def keep_candidate(viewer, layer, k: int | None = None):
    """Add candidate ``k`` (default: the one shown) of a candidates layer as a layer of its own
    (:func:`candidate_layer_data`) and return it; the candidates layer is not modified."""
    if not is_candidates(layer):
        raise InputError(f"{layer.name!r} is not a layer of candidates (Generate with candidates > 1)")
    k = shown_candidate(layer, viewer) if k is None else int(k)
    data, kwargs = candidate_layer_data(layer, k)
    return add_result_layer(viewer, data, kwargs)


def _edited_region(result: np.ndarray, inputs: EditInputs) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The bounding box of the mask and of every pixel that any candidate (or slice) changed,
    cut out of a region edit's result, and where it lies in the slice: (row, column,
    height, width)."""
    colour = inputs.rgb if inputs.stack else inputs.image.ndim == 3
    lead = result.ndim - 2 - int(colour)  # candidates, or a stack's slices
    changed = np.asarray(result != inputs.image).any(axis=tuple(range(lead)) + ((result.ndim - 1,) if colour else ()))
    mask = inputs.mask.reshape(-1, *inputs.mask.shape[-2:]).any(0)
    r0, c0, r1, c1 = mask_bbox(changed | mask)
    cut = result[(slice(None),) * lead + (slice(r0, r1), slice(c0, c1))]
    return np.ascontiguousarray(cut), (inputs.origin[0] + r0, inputs.origin[1] + c0, r1 - r0, c1 - c0)


def add_edit_result(
    viewer,
    source,
    inputs: EditInputs,
    result,
    params: dict | None = None,
    mask_name: str | None = None,
    add: bool = True,
):
    """Add an edit's result as a new Image layer over ``source`` (named after it, with the
    seed used, and :func:`result_metadata`); the widget and the console both end here.

    ``result``: the engine's EditResult. ``add=False`` returns ``(data, layer_kwargs)``
    instead of adding. The selected layer stays selected; with N candidates the slider is
    set to the first.
    """
    candidates = result.samples > 1
    slices = len(result.seeds) if inputs.stack else 0
    region = inputs.origin is not None
    name = result_name(source.name, result.mode, result.seed, result.samples, inputs.index, slices, region)
    meta = result_metadata(source.name, mask_name, inputs.index, dict(params or {}), result)
    image, corner = result.image, (0, 0)
    if region:  # a large image: the layer holds the pixels the edit changed (their bounding box)
        image, box = _edited_region(result.image, inputs)
        corner = box[:2]
        meta["napari_ilat"]["region"] = list(box)
    if inputs.stack:
        meta["napari_ilat"]["slice"] = "every"
    if inputs.mask_label is not None:
        meta["napari_ilat"]["mask_label"] = int(inputs.mask_label)
    if inputs.grow:
        meta["napari_ilat"]["grow"] = inputs.grow
    data, kwargs = result_layer_data(image, source, inputs, name, candidates, meta, corner)
    if not add:
        return data, kwargs
    active = viewer.layers.selection.active  # keep e.g. the keypoints selected
    layer = add_result_layer(viewer, data, kwargs)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    if candidates:
        viewer.dims.set_current_step(0, 0)
    return layer
