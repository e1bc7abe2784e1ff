"""The iLAT dock widget: pick layers and options, press Generate (or Shift-G).

The Qt side is thin. On Generate the main thread cuts numpy arrays out of the layers
(:func:`._layers.gather_inputs`), a napari worker thread runs :func:`napari_ilat.edit` on
them (:func:`run_job`: arrays in, array out, no Qt; lazy pixels are read there too), and
the main thread adds the result as a new layer (:func:`._results.add_edit_result`).
Progress is a pair of integers the worker writes and a QTimer on the main thread reads
four times a second (``POLL_MS``), so a fast model cannot flood the event loop with
signals, and repaints do not take the worker's CPU. Cancel sets a
``threading.Event`` that the sampler checks after every token.

``ILATWidget(viewer, synchronous=True)`` runs the job in the calling thread (tests, scripts);
``threads=N`` sets the worker's torch threads (default :func:`worker_threads`: all cores but
one). Both are public attributes and may be changed between runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import warnings
import weakref
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication, QSizePolicy

from napari_ilat.engine.defaults import DEFAULT_GUIDANCE, DEFAULT_TOP_K, PALETTE_SUPPORT
from napari_ilat.engine.modes import MODES
from napari_ilat.engine.pose_mask import FIGURE_SCALE_BAND, default_mask_radius, moved_joint_mask
from napari_ilat.plugin import layers as _layers
from napari_ilat.plugin import results as _results
from napari_ilat.plugin.layers import EditInputs, InputError
from napari_ilat.plugin.sample_data import ilat_meta

log = logging.getLogger(__name__)

LOAD_FILE = "load file..."
AUTO_MODEL = "auto"
GENERATE_KEY = "Shift-G"
# How often the progress bar and status line follow the worker. Every repaint of the window
# costs CPU the worker needs (napari's canvas is composited with it; under software OpenGL,
# much): on 2 cores a pose edit took 2.4-2.9 s in the worker polled every 50 ms, 1.4-1.7 s
# every 100 ms, 0.55-1.25 s every 250 ms, 0.4 s alone (docs/benchmarks.md, bench gui).
POLL_MS = 250
MAX_HINT_SHAPES = 200  # Shapes layers with more lines / paths get no unused-strokes hint


def available_modes() -> list[tuple[str, str]]:
    """(label, name) of every mode the engine has (napari_ilat.engine.modes.MODES)."""
    return [(m.label, m.name) for m in MODES.values()]


def available_devices() -> list[tuple[str, str]]:
    """("auto", "cpu", "cuda:N (GPU name)", "mps") as (label, device) pairs."""
    import torch

    out = [("auto", "auto"), ("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i} ({torch.cuda.get_device_name(i)})", f"cuda:{i}"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append(("mps", "mps"))
    return out


def _duration(seconds: float) -> str:
    """A rough duration for a status line: "40 s", "12 min", "1.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _across_the_dock(widget) -> None:
    """Give a label-less widget the whole width: magicgui keeps an empty label column beside
    it, in which a wrapped status line ("cancelled: nothing added") took three narrow lines
    and fell below the fold of a short window."""
    holder = widget.native.parent()
    layout = holder.layout() if holder is not None else None
    if layout is None or layout.count() != 2 or layout.itemAt(1).widget() is not widget.native:
        return  # another magicgui layout: leave it as it is
    layout.itemAt(0).widget().hide()
    widget.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)


# --------------------------------------------------------------------------- the job


@dataclass
class JobState:
    """Shared between the worker (writes) and the main thread (reads)."""

    done: int = 0
    total: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)
    what: str = "token"  # what done / total count (the status line says it)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)

    def counting(self, what: str) -> None:
        """From now on done / total count ``what`` (and start again from nothing)."""
        self.what, self.done, self.total = what, 0, 0


@dataclass
class JobResult:
    status: str  # "ok" | "cancelled" | "error"
    result: object = None  # the engine's EditResult (array, seed used, ...) when "ok"
    message: str = ""
    seconds: float = 0.0
    warnings: list = field(default_factory=list)  # the engine's warnings (shown as notifications)

    @property
    def array(self) -> np.ndarray | None:
        return None if self.result is None else self.result.image


def run_job(inputs: EditInputs, params: dict, state: JobState, threads: int | None = None) -> JobResult:
    """Run one edit on plain arrays; never raises, never touches Qt (runs in the worker).

    ``params["seed"]`` None: the engine draws one and the result reports it."""
    from napari_ilat.engine.editing import EditCancelled, edit_with_info, prepare_palette

    t0 = time.perf_counter()
    old_threads = None
    try:
        if threads:
            import torch

            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        inputs.read()  # lazy pixels (dask, zarr) are read here, not in napari's thread
        # a model without a colour table and the palette forced on: that table first, as its
        # own count of progress (a minute or more of a CPU) that Cancel stops
        state.counting("colour of code")
        model_args = {k: params[k] for k in ("model", "mode", "palette") if k in params}
        prepare_palette(
            pose=inputs.pose, sketch=inputs.sketch, progress=state.progress, cancel=state.cancel, **model_args
        )
        state.counting("token")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if inputs.stack:  # every slice: one edit per slice, slice j with seed + j
                from napari_ilat.engine.stack import edit_stack

                params = {k: v for k, v in params.items() if k != "samples"}
                edit_fn = partial(edit_stack, rgb=inputs.rgb)
            else:
                edit_fn = edit_with_info
            out = edit_fn(
                inputs.image,
                inputs.mask,
                inputs.pose,
                inputs.sketch,
                progress=state.progress,
                cancel=state.cancel,
                **params,
            )
        # once each (every slice repeats a slice's warnings)
        messages = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
        return JobResult("ok", out, seconds=time.perf_counter() - t0, warnings=messages)
    except EditCancelled:
        return JobResult("cancelled", seconds=time.perf_counter() - t0)
    except (ValueError, FileNotFoundError, OSError) as e:  # (OSError: a store that cannot be read)
        return JobResult("error", message=str(e), seconds=time.perf_counter() - t0)
    except Exception as e:  # a bug: say so, keep the traceback in the log, never a dialog
        log.error("napari-ilat: edit failed\n%s", traceback.format_exc())
        return JobResult("error", message=f"edit failed ({type(e).__name__}: {e}); details in the log")
    finally:
        if old_threads is not None:
            import torch

            torch.set_num_threads(old_threads)


def worker_threads() -> int:
    """Torch threads for a GUI edit: leave one core to Qt / napari."""
    return max(1, (os.cpu_count() or 2) - 1)


# --------------------------------------------------------------------------- the widget


class _CloseWatcher(QObject):
    """Calls ``callback`` when the watched window gets a close event."""

    def __init__(self, callback, parent=None):
        super().__init__(parent)
        self._callback = callback

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close:
            self._callback()
        return False


class ILATWidget(Container):
    """Dock widget for local editing with iLAT."""

    @property
    def native(self):
        """The dock's widget: the scroll area around the controls. napari docks ``.native``,
        which for a scrollable magicgui container is the widget inside the scroll area, and
        docked alone it cannot shrink: the window could not get shorter than the controls
        (about 810 px), so on a laptop screen Generate and the status line fell off its
        bottom (magicgui#431)."""
        return self.root_native_widget

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,  # noqa: F821
        synchronous: bool = False,
        threads: int | None = None,
    ):
        """``synchronous``: run edits in the calling thread (no worker, no progress polling).
        ``threads``: torch threads for the worker (None: :func:`worker_threads`)."""
        super().__init__(labels=True, scrollable=True)
        # napari hands plugins a PublicOnlyProxy; keep the real viewer so layers compare by
        # identity (the proxy wraps every layer in a new proxy object on each access)
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.synchronous = synchronous
        self.threads = threads
        self._models: dict[str, object] = {}  # extra choices: label -> ILATModel or path
        self._reference: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._state: JobState | None = None
        self._worker = None
        self._pending: dict | None = None
        self.last_result = None  # the layer added by the last successful run
        self.last_timing: dict = {}  # seconds: the edit (worker), adding the layer (main thread)

        self.image = ComboBox(label="image", choices=self._choices(Image), tooltip="Image layer to edit")
        self.mask = ComboBox(
            label="mask",
            choices=self._mask_choices,
            tooltip="Labels layer: non-zero = region to regenerate; or a Shapes layer: its rectangles, polygons "
            "and ellipses filled, its lines and paths at their edge width",
        )
        self.pose = ComboBox(
            label="pose",
            choices=self._choices(Points, optional=True),
            tooltip="Points layer with the 18 keypoints (named, or in COCO/OpenPose order)",
        )
        self.only_label = CheckBox(
            text="only the selected label",
            value=False,
            tooltip="regenerate only the label selected in the Labels layer's controls (one object of a "
            "segmentation: click it with the layer's colour picker), not every non-zero label",
        )
        self.grow = SpinBox(
            label="grow mask (px)",
            value=0,
            min=0,
            max=200,
            tooltip="grow the mask by this many pixels, so it also covers an object's soft edge and shadow "
            "(a segmentation's mask hugs the object); 0 = as painted",
        )
        self.every_slice = CheckBox(
            text="every slice",
            value=False,
            tooltip="edit every 2D slice of the stack, not only the one shown, with this mask (a 2D mask: the "
            "same for every slice; a Labels stack: each slice's own); slice j uses seed S+j, one candidate each",
        )
        self.sketch = ComboBox(
            label="sketch",
            choices=self._choices(Shapes, optional=True),
            tooltip="Shapes layer: lines/paths are the strokes the edit follows",
        )
        self.sketch_width = FloatSpinBox(
            label="stroke width",
            value=3.0,
            min=0.5,
            max=50,
            step=0.5,
            tooltip="width in image pixels of the sketch strokes",
        )
        self.model = ComboBox(
            label="model",
            choices=self._model_choices,
            tooltip="'auto': the bundled 'pose' model with a pose, else 'natural'. pose: trained on synthetic "
            "128 px figures; natural: on photo patches, best with a sketch (without one it draws smooth patches). "
            "How well each does: docs/benchmarks.md",
        )
        self.mode = ComboBox(
            label="mode",
            choices=available_modes(),
            tooltip="iLAT: two-stream VQGAN + local AR (the product); iLAT*: plain "
            "encoder (ablation); Taming: raster AR with context from above/left",
        )
        self.resolution = ComboBox(
            label="resolution",
            choices=[("auto", "auto"), ("native", "native"), ("resize (faster)", "resize")],
            tooltip="a mask larger than the model's window: 'native' generates it at the model's pixel scale "
            "with sliding windows; 'resize' fits it into one window and scales the result back (faster, coarser); "
            f"'auto' is 'native', except a pose edit whose figure is over {FIGURE_SCALE_BAND}x larger or smaller "
            "than the pose model's training figures: that is edited at the figure's scale",
        )
        self.blend = ComboBox(
            label="blend",
            choices=[("seamless", "seamless"), ("paste as drawn", "alpha")],
            tooltip="'seamless' shifts the generated content smoothly to meet the image at the mask's edge "
            "(no outline, no colour cast; a drawn object in a colour unlike its surroundings also pales); "
            "'paste as drawn' keeps the decoded colours, cross-fading over a thin band",
        )
        self.palette = ComboBox(
            label="colours",
            choices=[("auto", "auto"), ("from the surroundings", "on"), ("any", "off")],
            tooltip="'from the surroundings' (the context palette) draws only codes whose colour the pixels "
            f"around the mask have (in a colour image at least {PALETTE_SUPPORT:.0%} of them): fewer stray "
            "colours in fills; 'auto' uses it without a pose or sketch (it would cost a sketch's strokes "
            "their colours) when the model carries a colour table (the bundled ones do; for another, 'from "
            "the surroundings' computes it first, a minute or more on a CPU); 'any': every code",
        )
        self.device = ComboBox(label="device", choices=available_devices())
        self.samples = SpinBox(
            label="candidates", value=1, min=1, max=16, tooltip="N candidates become one layer with a slider"
        )
        self.seed = SpinBox(
            label="seed",
            value=-1,
            min=-1,
            max=2**31 - 1,
            tooltip="-1: a new random seed each run (the seed used is in the result's layer name and metadata)",
        )
        self.temperature = FloatSpinBox(label="temperature", value=1.0, min=0.05, max=5.0, step=0.05)
        self.top_k = SpinBox(
            label="top-k",
            value=DEFAULT_TOP_K,
            min=0,
            max=65536,
            tooltip="sample from the K most likely codes; 0 = the whole distribution",
        )
        self.guidance = FloatSpinBox(
            label="guidance",
            value=DEFAULT_GUIDANCE,
            min=0.0,
            max=10.0,
            step=0.25,
            tooltip="how closely to follow the pose or sketch (classifier-free guidance): 1 = off, larger = "
            "closer at twice the sampling work, 0 = ignore it; iLAT and Taming modes",
        )
        self.generate_btn = PushButton(text=f"Generate ({GENERATE_KEY})")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.keep_btn = PushButton(
            text="Keep shown candidate",
            enabled=False,
            tooltip="add the candidate the slider shows as a layer of its own (the edit with its seed); "
            "of the selected candidates layer, else the top-most one",
        )
        self.progress = ProgressBar(label="tokens", value=0, min=0, max=1)
        self.status = Label(label="", value="")
        self.mask_radius = FloatSpinBox(
            label="limb radius",
            value=0.0,
            min=0.0,
            max=500,
            step=0.5,
            tooltip="auto mask capsule half-width in pixels (0 = from the figure: 0.25 x its median bone + 2)",
        )
        self.auto_mask_btn = PushButton(text="Auto mask from moved keypoints")
        # 0 means "from the figure": say so rather than show a radius of 0.00 px (the seed's and
        # top-k's boxes, superqt's large-int spin boxes, have no such text; their tooltips say it)
        self.mask_radius.native.setSpecialValueText("auto")
        self.extend(
            [
                self.image,
                self.mask,
                self.only_label,
                self.grow,
                self.every_slice,
                self.pose,
                self.mask_radius,
                self.auto_mask_btn,
                self.sketch,
                self.sketch_width,
                self.model,
                self.mode,
                self.resolution,
                self.blend,
                self.palette,
                self.device,
                self.samples,
                self.seed,
                self.temperature,
                self.top_k,
                self.guidance,
                self.generate_btn,
                self.cancel_btn,
                self.keep_btn,
                self.progress,
                self.status,
            ]
        )
        self.status.native.setWordWrap(True)
        _across_the_dock(self.status)
        # the controls keep their own height in the scroll area: squeezed to their minimum
        # first, they were laid out again after an edit and the status line fell off the bottom
        self.root_native_widget.widget().setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

        self._last_model = self.model.value
        self.model.changed.connect(self._on_model_changed)
        self.mode.changed.connect(self._on_mode_changed)
        self.generate_btn.changed.connect(self.generate)
        self.cancel_btn.changed.connect(self.cancel)
        self.auto_mask_btn.changed.connect(self.auto_mask)
        self.keep_btn.changed.connect(self.keep_candidate)
        self.image.changed.connect(self._match_mask_to_image)
        self.image.changed.connect(self._enable_for_conditions)
        self.mask.changed.connect(self._enable_for_conditions)
        self.every_slice.changed.connect(self._enable_for_conditions)
        for picker in (self.pose, self.sketch):  # Qt's signal: magicgui's `changed` skips "none"
            picker.native.currentIndexChanged.connect(self._enable_for_conditions)
        self._timer = QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

        from napari_ilat.plugin.sample_data import install_skeleton_autolink

        install_skeleton_autolink(self.viewer)
        layers = self.viewer.layers.events
        for ev in (layers.inserted, layers.removed, layers.moved):
            ev.connect(self._refresh)
        layers.inserted.connect(self._on_inserted)
        for layer in self.viewer.layers:
            self._watch(layer)
        self._bind_key()
        self._watch_viewer_close()
        self._refresh()
        self._autoselect()
        self._enable_for_conditions()

    def _watch_viewer_close(self):
        """A closed viewer cancels the running edit and resets the running flag."""
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if window is None:
            return
        ref = weakref.ref(self)

        def closed():
            me = ref()
            if me is not None:
                me.viewer_closed()

        self._close_watcher = _CloseWatcher(closed, window)
        window.installEventFilter(self._close_watcher)

    def viewer_closed(self) -> None:
        """The viewer is closing: cancel a running edit (nothing is added) and reset."""
        self._timer.stop()
        if self._state is not None:
            self._state.cancel.set()
        self._state, self._worker, self._pending = None, None, None
        try:
            self._set_running(False)
            self.status.value = "viewer closed: edit cancelled"
        except RuntimeError:  # the Qt widgets are already deleted
            pass

    # ---------------------------------------------------------------- choices

    def _choices(self, kind, optional: bool = False):
        def get(widget=None):
            layers = [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]
            return ([("none", None)] if optional else []) + layers[::-1]  # top layer first

        return get

    def _mask_choices(self, widget=None):
        """Labels layers first (the usual mask; the default pick), then Shapes layers."""
        return self._choices(Labels)() + self._choices(Shapes)()

    def _model_choices(self, widget=None):
        from napari_ilat.engine.model import bundled_models

        out = [(AUTO_MODEL, AUTO_MODEL)] if bundled_models() else []
        out += [(name, name) for name in bundled_models()]
        out += [(label, value) for label, value in self._models.items()]
        return out + [(LOAD_FILE, LOAD_FILE)]

    def _refresh(self, event=None):
        self.reset_choices()
        self._match_mask_to_image()
        self._enable_for_conditions()
        self.keep_btn.enabled = self._candidates_layer() is not None

    def _enable_for_conditions(self, event=None):
        """Controls that act on a pose or a sketch are live only while one is chosen (the
        auto mask needs the pose; the stroke width the sketch; guidance either)."""
        pose, sketch = self.pose.value is not None, self.sketch.value is not None
        self.mask_radius.enabled = self.auto_mask_btn.enabled = pose
        self.sketch_width.enabled = sketch
        self.guidance.enabled = pose or sketch
        # every slice: only for an image with more than one slice; one edit per slice
        image = self.image.value
        self.every_slice.enabled = image is not None and _layers.slice_count(image) > 1
        self.samples.enabled = not self._every_slice()
        self.only_label.enabled = isinstance(self.mask.value, Labels)  # a Shapes mask has no labels

    def _every_slice(self) -> bool:
        return bool(self.every_slice.value and self.every_slice.enabled)

    def _watch(self, layer):
        layer.events.name.connect(self._refresh)
        if isinstance(layer, Points) and layer not in self._reference:
            self._remember_pose(layer)

    def _on_inserted(self, event):
        layer = event.value
        self._watch(layer)
        self._autoselect(layer)

    def _autoselect(self, layer=None):
        """Pick a freshly added pose-like Points layer (18 points or named keypoints)."""
        candidates = [layer] if layer is not None else list(self.viewer.layers)[::-1]
        for lay in candidates:
            if isinstance(lay, Points) and self.pose.value is None and self._looks_like_pose(lay):
                self.pose.value = lay
            if isinstance(lay, Labels) and lay.name == "auto mask":
                self.mask.value = lay
        img = [lay for lay in candidates if isinstance(lay, Image) and "source" not in ilat_meta(lay)]
        if layer is not None and img:
            before = self.image.value
            self.image.value = img[0]  # a newly opened image, not one of our results
            if before is None or _layers.plane_shape(before) != _layers.plane_shape(img[0]):
                # a pose or sketch drawn for an image of another size would steer this one's
                # edit: none, until one comes with it (the pose sample inserts its keypoints
                # after its image); a same-size image (a duplicate, another frame) keeps them
                self.pose.value = self.sketch.value = None
        # (the mask follows through image.changed and _refresh -> _match_mask_to_image)

    def _match_mask_to_image(self, event=None):
        """Keep a mask that fits the chosen image; else pick the top-most Labels layer of the
        image's size (a second image opened with its own mask, or an image chosen by hand)."""
        image, mask = self.image.value, self.mask.value
        if image is None:
            return
        size = _layers.plane_shape(image)
        if isinstance(mask, Shapes) or (mask is not None and _layers.plane_shape(mask) == size):
            return  # (shapes are drawn in world coordinates: they fit any image)
        for lay in list(self.viewer.layers)[::-1]:
            if isinstance(lay, Labels) and _layers.plane_shape(lay) == size:
                self.mask.value = lay
                return

    @staticmethod
    def _looks_like_pose(layer) -> bool:
        from napari_ilat.engine.skeleton import KEYPOINT_NAMES

        names = _layers.pose_names(layer)
        return len(layer.data) == len(KEYPOINT_NAMES) or bool(names and set(names) & set(KEYPOINT_NAMES))

    def add_model(self, model, label: str | None = None) -> str:
        """Offer a model (ILATModel or a path to NAME.json) in the model list and select it."""
        if isinstance(model, (str, Path)):
            path = Path(model)
            label = label or f"{path.stem} ({path.parent.name}/)"
            model = str(path)
        else:
            label = label or getattr(getattr(model, "config", None), "name", "model")
        self._models[label] = model
        with self.model.changed.blocked():  # rebuilt, so that 'load file...' stays last
            self.model.choices = ()
            self.model.reset_choices()
        self.model.value = model
        self._last_model = model
        return label

    def _on_model_changed(self, value):
        if value != LOAD_FILE:
            self._last_model = value
            self._mode_follows_model(value)
            return
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "Load an iLAT model", str(Path.home()), "napari-ilat model (*.json)"
        )
        from napari_ilat.engine.model import is_model_json

        if path and not is_model_json(Path(path)):  # e.g. a run's recipe.json or eval.json
            show_error(f"napari-ilat: {Path(path).name} is not a napari-ilat model (a model's NAME.json)")
            path = ""
        if path:
            self.add_model(path)  # (selecting it matches the mode: _on_model_changed)
            from napari_ilat.engine.convert import model_notice

            if note := model_notice(path):  # e.g. a converted taming transformer: Taming*
                show_info(f"napari-ilat: {note}")
        else:
            with self.model.changed.blocked():
                self.model.value = self._last_model

    def _mode_follows_model(self, model):
        """An ImageBART model runs mode ImageBART only, an iLAT model the other modes: picking
        a model of the other kind switches the mode (rather than failing at Generate)."""
        if model in (AUTO_MODEL, LOAD_FILE):
            return
        from napari_ilat.engine.model import model_kind

        kind = model_kind(model)
        if (kind == "imagebart") != (self.mode.value == "imagebart"):
            with self.mode.changed.blocked():
                self.mode.value = "imagebart" if kind == "imagebart" else "ilat"
            self.status.value = (
                "mode set to ImageBART, the only mode an ImageBART model runs"
                if kind == "imagebart"
                else "mode set to iLAT: ImageBART mode needs an ImageBART model"
            )

    def _on_mode_changed(self, mode):
        """Mode ImageBART with an iLAT model chosen (or back): the model goes to 'auto', which
        is the bundled model of that mode's kind."""
        model = self.model.value
        if model in (AUTO_MODEL, LOAD_FILE):
            return
        from napari_ilat.engine.model import model_kind

        if (model_kind(model) == "imagebart") != (mode == "imagebart"):
            with self.model.changed.blocked():
                self.model.value = self._last_model = AUTO_MODEL
            self.status.value = "model auto: the chosen model does not run this mode"

    def _bind_key(self):
        ref = weakref.ref(self)

        def generate(viewer):
            me = ref()
            if me is not None:
                me.generate()

        try:
            self.viewer.bind_key(GENERATE_KEY, generate, overwrite=True)
        except Exception:  # another plugin's binding: the button still works
            log.info("napari-ilat: could not bind %s", GENERATE_KEY)

    # ---------------------------------------------------------------- generate

    def _params(self) -> dict:
        model = self.model.value
        if model == LOAD_FILE:
            raise InputError("no model selected: choose a bundled model or 'load file...' a NAME.json")
        seed = int(self.seed.value)
        return dict(
            model=None if model == AUTO_MODEL else model,
            mode=self.mode.value,
            samples=1 if self._every_slice() else int(self.samples.value),
            seed=None if seed < 0 else seed,  # None: the engine draws it and reports it
            temperature=float(self.temperature.value),
            top_k=int(self.top_k.value) or None,
            guidance=float(self.guidance.value),
            device=self.device.value,
            resolution=self.resolution.value,
            blend=self.blend.value,
            palette=self.palette.value,
        )

    def _mask_label(self) -> int | None:
        """The label to regenerate alone (the mask layer's selected label), or None: all."""
        mask = self.mask.value
        if not (self.only_label.value and self.only_label.enabled and isinstance(mask, Labels)):
            return None
        if int(mask.selected_label) == 0:
            raise InputError(
                f"the selected label of {mask.name!r} is 0, the background: select the object's label in the "
                "layer controls (or untick 'only the selected label')"
            )
        return int(mask.selected_label)

    @property
    def running(self) -> bool:
        return self._state is not None

    def generate(self, event=None) -> None:
        """Start an edit of the current slice (errors become notifications)."""
        if self.running:
            show_warning("napari-ilat: an edit is already running (Cancel it first)")
            return
        image = self.image.value
        gather = _layers.gather_stack_inputs if self._every_slice() else _layers.gather_inputs
        try:
            inputs = gather(
                image,
                self.mask.value,
                self.pose.value,
                self.sketch.value,
                viewer=self.viewer,
                sketch_width=float(self.sketch_width.value),
                label=self._mask_label(),
                grow=int(self.grow.value),
            )
            params = self._params()
        except InputError as e:
            self.status.value = f"error: {e}"  # not the previous run's "done in ..."
            self._scroll_to_status()
            show_error(f"napari-ilat: {e}")
            return
        notes = inputs.notes + self._unused_strokes(inputs)
        if notes:  # one notification: a toast costs napari's main thread ~40 ms (bench gui --lazy)
            show_info("napari-ilat: " + "; ".join(notes))
        self._pending = dict(
            inputs=inputs, params=params, source=image, pose_layer=self.pose.value, mask_name=self.mask.value.name
        )
        self._state = state = JobState()
        self._set_running(True)
        self.status.value = "generating..."
        self._scroll_to_status()
        if self.synchronous:
            self._finish(run_job(inputs, params, state))
            return
        from napari.qt.threading import create_worker

        threads = self.threads if self.threads is not None else worker_threads()
        worker = create_worker(run_job, inputs, params, state, threads, _start_thread=False)
        worker.returned.connect(self._finish)
        worker.errored.connect(self._on_worker_error)
        self._worker = worker
        self._timer.start()
        worker.start()

    def _scroll_to_status(self) -> None:
        """In a dock shorter than the controls, scroll down to the status line and the bar
        (Shift-G starts an edit from the canvas, whatever part of the dock is in view)."""
        scroll, line = self.root_native_widget, self.status.native

        def show():
            try:
                # lay out what changed first (the line's new text, the buttons): else the
                # scroll area resizes its contents afterwards and the line is off the bottom again
                QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
                scroll.ensureWidgetVisible(line, 0, 10)
            except RuntimeError:  # the viewer has closed: nothing to show
                pass

        show()
        # and once more when the layouts have settled: a line that wraps to a second line (a long
        # result name, the scale an edit was made at) grows only then
        QTimer.singleShot(0, show)

    def _unused_strokes(self, inputs) -> list[str]:
        """A hint when no sketch is chosen but a Shapes layer has strokes in the mask (drawn to
        guide the edit, most likely; the pose sample's skeleton does not count). No such hint
        for poses: a pose layer left from another image looks the same as one for this image."""
        if self.sketch.value is not None or self.pose.value is not None:
            return []
        point = _layers.world_point(self.viewer)
        mask = inputs.mask.reshape(-1, *inputs.mask.shape[-2:]).any(0)  # every slice: any slice's
        for lay in list(self.viewer.layers)[::-1]:
            if not isinstance(lay, Shapes) or ilat_meta(lay).get("kind") == "skeleton" or lay is self.mask.value:
                continue
            # strokes are lines and paths; a layer of many shapes is annotations, and drawing
            # them all on the main thread would stall napari, so it is not looked at
            if not 0 < sum(kind in ("line", "path") for kind in lay.shape_type) <= MAX_HINT_SHAPES:
                continue
            strokes = _layers.shapes_to_sketch(lay, mask.shape, 1.0, self.image.value, point, inputs.origin or (0, 0))
            if (strokes[mask] > 0).any():
                return [
                    f"the Shapes layer {lay.name!r} has strokes in the mask but sketch is 'none': choose it as "
                    "the sketch to guide the edit with them"
                ]
        return []

    def cancel(self, event=None) -> None:
        """Stop the running edit after the current token; nothing is added."""
        if self._state is not None:
            self._state.cancel.set()
            self.status.value = "cancelling..."

    def _set_running(self, running: bool):
        self.generate_btn.enabled = not running
        self.cancel_btn.enabled = running
        if running:
            self.progress.max, self.progress.value = 1, 0
        else:  # a cancelled colour table leaves no "colours" behind
            self.progress.label = "tokens"

    def _poll(self):
        state = self._state
        if state is None:
            return
        label = "tokens" if state.what == "token" else "colours"  # what the bar counts
        if self.progress.label != label:
            self.progress.label = label
        if state.total:
            if self.progress.max != state.total:
                self.progress.max = state.total
            self.progress.value = state.done
            if not state.cancel.is_set():
                elapsed = time.perf_counter() - state.started
                left = ""
                if state.what != "token" and 0 < state.done < state.total:  # a colour table: minutes, maybe an hour
                    left = f", about {_duration(elapsed / state.done * (state.total - state.done))} left"
                self.status.value = f"{state.what} {state.done}/{state.total}  ({elapsed:.1f} s{left})"

    def _on_worker_error(self, exc):  # run_job never raises; belt and braces
        self._finish(JobResult("error", message=f"edit failed: {exc}"))

    def _finish(self, result: JobResult):
        self._end_job(result)
        self._scroll_to_status()  # what became of it

    def _end_job(self, result: JobResult):
        self._timer.stop()
        pending, self._pending = self._pending, None
        self._state, self._worker = None, None
        if pending is None:  # reset already (the viewer was closed)
            return
        self._set_running(False)
        if result.status == "cancelled":
            self.status.value = "cancelled: nothing added"
            show_info("napari-ilat: edit cancelled; no layer added")
            return
        if result.status == "error":
            self.status.value = f"error: {result.message}"
            show_error(f"napari-ilat: {result.message}")
            return
        self._poll_done()
        for message in result.warnings:
            show_warning(f"napari-ilat: {message}")
        source = pending["source"]
        if not any(layer is source for layer in self.viewer.layers):
            self.status.value = f"source layer {source.name!r} was deleted: result not added"
            show_warning(
                f"napari-ilat: the image layer {source.name!r} was deleted while generating; the result was not added"
            )
            return
        t0 = time.perf_counter()
        try:
            self.last_result = _results.add_edit_result(
                self.viewer,
                pending["source"],
                pending["inputs"],
                result.result,
                pending["params"],
                mask_name=pending["mask_name"],
            )
            self.last_timing = {"edit_s": result.seconds, "add_layer_s": time.perf_counter() - t0}
        except Exception as e:  # e.g. the source layer was deleted while generating
            log.error("napari-ilat: adding the result failed\n%s", traceback.format_exc())
            show_error(f"napari-ilat: could not add the result ({e})")
            return
        from napari_ilat.engine.editing import scale_note  # (torch: imported once an edit ran)

        note = scale_note(result.result.scale)
        self.status.value = f"done in {result.seconds:.1f} s: {self.last_result.name}" + (f" ({note})" if note else "")
        pose_layer = pending["pose_layer"]
        if pose_layer is not None:
            self._remember_pose(pose_layer)

    def _poll_done(self):
        self.progress.value = self.progress.max

    # ---------------------------------------------------------------- candidates

    def _candidates_layer(self):
        """The selected layer if it holds candidates, else the top-most layer that does."""
        active = self.viewer.layers.selection.active
        if active is not None and _results.is_candidates(active):
            return active
        return next((lay for lay in list(self.viewer.layers)[::-1] if _results.is_candidates(lay)), None)

    def keep_candidate(self, event=None):
        """Add the candidate the slider shows as a layer of its own (named with its seed)."""
        layer = self._candidates_layer()
        if layer is None:
            show_error("napari-ilat: no candidates to keep: Generate with candidates > 1 first")
            return None
        k = _results.shown_candidate(layer, self.viewer)
        kept = _results.keep_candidate(self.viewer, layer, k)
        self.status.value = f"kept candidate {k} of {layer.name!r} as {kept.name!r}"
        return kept

    # ---------------------------------------------------------------- auto mask

    def _remember_pose(self, points):
        """Keep ``points``' keypoints (world x, y, v) as the reference for the auto mask."""
        meta = ilat_meta(points)
        if points not in self._reference and "reference_pose" in meta:
            self._reference[points] = np.asarray(meta["reference_pose"], float)
            return
        try:
            self._reference[points] = _layers.points_to_pose(points, None, _layers.world_point(self.viewer))
        except InputError:
            pass  # not a pose (yet)

    def auto_mask(self, event=None):
        """Paint the 'auto mask' Labels layer from the keypoints that moved since load /
        the last Generate (limb capsules at the old and new positions)."""
        image, points = self.image.value, self.pose.value
        try:
            if image is None:
                raise InputError("no image layer")
            if points is None:
                raise InputError("choose the pose (Points) layer whose keypoints you moved")
            inputs_index = _layers.current_index(image, self.viewer, "image")
            shape = _layers.plane_shape(image)  # (the slice is not read: it may be a pyramid's)
            from napari_ilat.engine.editing import check_fits

            try:  # a Labels layer of the image's size, and the stroke map drawn for it (float32)
                check_fits(5 * shape[0] * shape[1], "an auto mask of this image", "draw the mask on a Shapes layer")
            except ValueError as e:
                raise InputError(str(e)) from e
            point = _layers.world_point(self.viewer)
            new = _layers.points_to_pose(points, None, point)
            old = self._reference.get(points)
            if old is None:
                self._reference[points] = new
                raise InputError("remembered the current keypoints: move some, then press again")
            old_px = _layers.world_pose_to_image(old, image, point)
            new_px = _layers.world_pose_to_image(new, image, point)
            radius = float(self.mask_radius.value) or default_mask_radius(shape, old_px, new_px)
            mask = moved_joint_mask(old_px, new_px, shape, radius=radius)
        except InputError as e:
            show_error(f"napari-ilat: {e}")
            return None
        if not mask.any():
            show_warning("napari-ilat: no keypoint has moved since the last Generate; nothing to mask")
            return None
        data = _results.as_slice_data(mask.astype(np.uint8), inputs_index, False)
        place = _results.placement(image, inputs_index)
        existing = [
            lay for lay in self.viewer.layers if isinstance(lay, Labels) and ilat_meta(lay).get("kind") == "auto_mask"
        ]
        if existing and existing[0].data.shape == data.shape:
            layer = existing[0]
            layer.data = data
            for k, v in place.items():
                setattr(layer, k, v)
        else:
            layer = _results.add_below_annotations(
                self.viewer,
                lambda: self.viewer.add_labels(
                    data, name="auto mask", opacity=0.4, metadata={"napari_ilat": {"kind": "auto_mask"}}, **place
                ),
            )
        self.mask.value = layer
        self.status.value = (
            f"auto mask: {int(mask.sum())} px ({100 * mask.mean():.1f}% of the image), limb radius {radius:.1f} px"
        )
        return layer
