"""How responsive napari stays while the widget generates (DESIGN.md section 8: no Qt event
loop stall over 100 ms).

A QTimer ticks every ``interval_ms`` on the main thread; the longest gap between ticks,
minus the interval, is the longest stall. The edit runs exactly as in the GUI: the dock
widget, its threaded napari worker, its progress polling, and the result layer being added
(and drawn) on the main thread. Needs a display (xvfb-run is fine).

    from napari_ilat.plugin.bench_gui import run_gui_benchmark
    run_gui_benchmark()              # default-size random model, 128 px, 30% masked
    run_gui_benchmark(model="tiny")  # ILATModel.tiny at 32 px
    run_gui_benchmark(lazy=20000)    # a lazy 20000 x 20000 pyramid, a Shapes mask at its centre
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def _model(model, size: int):
    from napari_ilat.engine.model import ILATModel, ModelConfig, load_model

    if model is None or model == "default":
        return ILATModel(ModelConfig()).eval(), "random ILATModel(ModelConfig())"
    if model == "tiny":
        return ILATModel.tiny(resolution=32), "ILATModel.tiny(resolution=32)"
    if isinstance(model, ILATModel):
        return model, getattr(model.config, "name", "model")
    return load_model(model), str(model)


def _scene(size: int, mask_fraction: float):
    from napari_ilat.plugin.sample_data import pose_sample_pair

    pair = pose_sample_pair(resolution=size)
    mask = np.zeros((size, size), np.uint8)
    side = int(round(size * np.sqrt(mask_fraction)))
    r0 = (size - side) // 2
    mask[r0 : r0 + side, r0 : r0 + side] = 1
    return pair.source, mask


def _lazy_scene(size: int, mask_fraction: float, extent: int):
    """A lazy (dask) pyramid of ``extent`` x ``extent`` RGB pixels (the pose scene tiled; never
    held in memory whole) and a rectangle (corners, in pixels) at its centre masking
    ``mask_fraction`` of a ``size`` px window: what a slide scan and a Shapes mask are."""
    import dask.array as da

    image, _ = _scene(size, mask_fraction)
    reps = -(-extent // size)
    big = da.tile(da.from_array(image, chunks=image.shape), (reps, reps, 1))[:extent, :extent]
    side = int(round(size * np.sqrt(mask_fraction)))
    r0 = extent // 2 - side // 2
    return [big, big[::4, ::4], big[::16, ::16]], np.array([[r0, r0], [r0 + side - 1, r0 + side - 1]], float)


def run_gui_benchmark(
    model=None,
    size: int = 128,
    mask_fraction: float = 0.3,
    interval_ms: int = 10,
    samples: int = 1,
    seed: int = 0,
    threads: int | None = None,
    repeats: int = 1,
    lazy: int = 0,
) -> dict:
    """Longest Qt event-loop stall (ms) during real threaded generations with the widget.

    ``model``: None / "default" (random default-size model), "tiny", an ILATModel or a path.
    ``threads``: torch threads in the worker (default: all cores but one). ``lazy`` N > 0:
    edit a lazy N x N pyramid (:func:`_lazy_scene`) through a Shapes mask instead: its
    region around the mask is read in the worker, the result is that region.
    Returns a dict of numbers (stall max / p99 / mean, ticks, generation seconds, tokens).
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("the GUI benchmark needs a display; run it under xvfb-run")
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_ilat.plugin.widget import ILATWidget, worker_threads

    mdl, model_label = _model(model, size)
    viewer = napari.Viewer(show=True)
    try:
        if lazy:
            pyramid, rect = _lazy_scene(size, mask_fraction, lazy)
            viewer.add_image(pyramid, name="image", multiscale=True, rgb=True)
            viewer.add_shapes([rect], shape_type="rectangle", name="mask")
        else:
            image, mask = _scene(size, mask_fraction)
            viewer.add_image(image, name="image")
            viewer.add_labels(mask, name="mask")
        widget = ILATWidget(viewer, threads=threads)
        viewer.window.add_dock_widget(widget)
        widget.add_model(mdl, "bench")
        widget.mask.value = viewer.layers["mask"]
        widget.seed.value, widget.samples.value, widget.device.value = seed, samples, "cpu"
        app_loop = QEventLoop()
        runs = []
        for _ in range(repeats):
            gaps: list[float] = []
            stamps: list[float] = []
            last = [time.perf_counter()]
            done_at = [None]
            n_layers = len(viewer.layers)

            def tick(gaps=gaps, stamps=stamps, last=last, done_at=done_at):
                now = time.perf_counter()
                gaps.append(now - last[0])
                stamps.append(now)
                last[0] = now
                if not widget.running and done_at[0] is None:
                    done_at[0] = now
                if done_at[0] is not None and now - done_at[0] > 0.5:  # result drawn, loop idle
                    app_loop.quit()

            timer = QTimer()
            timer.setInterval(interval_ms)
            timer.timeout.connect(tick)
            t0 = time.perf_counter()
            timer.start()
            widget.generate()  # returns at once: the worker thread does the work
            app_loop.exec()
            timer.stop()
            if len(viewer.layers) == n_layers:
                raise RuntimeError(f"generation produced no layer: {widget.status.value}")
            stalls = np.maximum(np.array(gaps) * 1000 - interval_ms, 0)
            # ticks that arrived before the result was handed back = the generation proper
            t_ret = done_at[0] - widget.last_timing.get("add_layer_s", 0.0)
            gen = stalls[np.array(stamps) <= t_ret]
            runs.append(
                {
                    "max_stall_while_generating_ms": float(gen.max()) if len(gen) else 0.0,
                    "add_result_layer_ms": 1000 * widget.last_timing.get("add_layer_s", float("nan")),
                    "max_stall_ms": float(stalls.max()),
                    "p99_stall_ms": float(np.percentile(stalls, 99)),
                    "mean_tick_ms": float(np.mean(gaps) * 1000),
                    "ticks": len(gaps),
                    "stalls_over_100ms": int((stalls > 100).sum()),
                    "generate_s": float(done_at[0] - t0),
                }
            )
        worst = max(runs, key=lambda r: r["max_stall_ms"])
        return {
            "model": model_label,
            "size": size,
            "lazy": lazy,
            "result_layer": widget.last_result.name,
            "result_shape": list(widget.last_result.data.shape),
            "mask_fraction": mask_fraction,
            "tokens": int(widget.progress.max),
            "samples": samples,
            "interval_ms": interval_ms,
            "threads": threads if threads is not None else worker_threads(),
            "cpu_count": os.cpu_count(),
            **worst,
            "runs": runs,
        }
    finally:
        viewer.close()
