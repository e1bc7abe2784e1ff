"""Run an edit on the current viewer's layers from napari's console (or any script).

>>> from napari_ilat.plugin.console import edit_layers
>>> layer = edit_layers(image="pose scene", mask="suggested mask", pose="pose", seed=3)
>>> four = edit_layers(image="pose scene", mask="suggested mask", pose="pose", seed=3, samples=4)
>>> best = keep_candidate(four, 2)  # the edit with seed 5, as a layer of its own

The same conversions as the dock widget (displayed 2D slice, points -> keypoints through
world coordinates, shapes -> strokes), and the same step that adds the result
(:func:`napari_ilat.plugin.results.add_edit_result`: placement over the source, name with the
seed used, metadata). It runs in the calling thread (the console waits for it); the layers
given are not modified.
"""

from __future__ import annotations

from napari_ilat.plugin import layers as _layers
from napari_ilat.plugin import results as _results

__all__ = ["edit_layers", "keep_candidate"]


def _layer(viewer, ref, what: str, optional: bool = False):
    if ref is None:
        if optional:
            return None
        raise ValueError(f"give the {what} layer (a name or a layer)")
    if isinstance(ref, str):
        if ref not in viewer.layers:
            names = ", ".join(repr(layer.name) for layer in viewer.layers) or "none"
            raise ValueError(f"no layer named {ref!r} in the viewer (layers: {names})")
        return viewer.layers[ref]
    return ref


def _viewer(viewer):
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            raise ValueError("no napari viewer is open; pass viewer=... or open one with napari.Viewer()")
    return viewer


def edit_layers(
    viewer=None,
    image=None,
    mask=None,
    pose=None,
    sketch=None,
    *,
    sketch_width: float = 3.0,
    every_slice: bool = False,
    label: int | None = None,
    grow: float = 0,
    add: bool = True,
    **edit_kwargs,
):
    """Edit ``image`` where ``mask`` is painted; add and return the result as a new Image layer.

    Parameters
    ----------
    viewer : napari.Viewer, default ``napari.current_viewer()``.
    image, mask : layer names (or layers): an Image layer, and a Labels layer (non-zero =
        regenerate) or a Shapes layer (its filled shapes and its strokes at their edge width).
    pose : optional Points layer with the 18 keypoints (named via a 'name' feature, or in
        COCO/OpenPose order).
    sketch : optional Shapes layer; lines / paths / outlines are rasterised ``sketch_width``
        pixels wide into the stroke map.
    every_slice : edit every 2D slice of an nD image (the widget's *every slice*:
        :func:`napari_ilat.engine.stack.edit_stack`; a 2D mask for all or one per slice).
    label : regenerate only where the Labels layer ``mask`` holds this label (one object of a
        segmentation), not every non-zero label.
    grow : grow the mask by this many pixels (an object's soft edge and shadow too).
    add : False returns ``(data, layer_kwargs)`` instead of adding a layer.
    **edit_kwargs : passed to :func:`napari_ilat.edit` (model, mode, samples, seed,
        temperature, top_k, top_p, greedy, guidance, device, feather, blend, palette, progress, cancel).

    Raises ``ValueError`` with a message for the user on bad input.
    """
    from napari_ilat.engine.editing import edit_with_info

    viewer = _viewer(viewer)
    img = _layer(viewer, image, "image")
    mask_layer = _layer(viewer, mask, "mask")
    gather = _layers.gather_stack_inputs if every_slice else _layers.gather_inputs
    inputs = gather(
        img,
        mask_layer,
        _layer(viewer, pose, "pose", optional=True),
        _layer(viewer, sketch, "sketch", optional=True),
        viewer=viewer,
        sketch_width=sketch_width,
        label=label,
        grow=grow,
    )
    for note in inputs.notes:
        print(f"napari-ilat: {note}")
    inputs.read()
    if every_slice:
        from napari_ilat.engine.stack import edit_stack

        result = edit_stack(inputs.image, inputs.mask, inputs.pose, inputs.sketch, rgb=inputs.rgb, **edit_kwargs)
    else:
        result = edit_with_info(inputs.image, inputs.mask, inputs.pose, inputs.sketch, **edit_kwargs)
    return _results.add_edit_result(viewer, img, inputs, result, edit_kwargs, mask_name=mask_layer.name, add=add)


def keep_candidate(candidates, k: int | None = None, viewer=None):
    """Add candidate ``k`` of a candidates layer (``edit_layers(..., samples=N)``; a name or the
    layer) as a layer of its own and return it: the single edit with its seed, placed exactly
    where the candidates layer shows it. ``k=None``: the candidate the viewer shows. The
    candidates layer is not modified. Raises ``ValueError`` for a layer without candidates or
    a ``k`` out of range."""
    viewer = _viewer(viewer)
    return _results.keep_candidate(viewer, _layer(viewer, candidates, "candidates"), k)
