"""``napari-ilat demo``: the pose sample, edited with the bundled "pose" model.

With a display: opens napari with the pose sample and the iLAT widget docked, moves the
keypoints of one arm to a new pose (as a user would by dragging), builds the auto mask and
runs Generate once; then it is yours to play with. Without a display (Linux with neither
$DISPLAY nor $WAYLAND_DISPLAY, or ``--headless``): the same edit, written as before / after
/ side-by-side PNGs to ``--output`` (default ``./ilat-demo/``).

Environment (for tests and screenshots): ``NAPARI_ILAT_DEMO_QUIT_AFTER=SECONDS`` closes the
window that long after the edit finished; ``NAPARI_ILAT_DEMO_SCREENSHOT=FILE.png`` saves a
screenshot of the window just before.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DEMO_MODEL = "pose"
DEMO_SEED = 0


def add_arguments(p) -> None:
    p.add_argument("--headless", action="store_true", help="no window: write PNGs instead")
    p.add_argument("-o", "--output", default="ilat-demo", help="folder for the headless PNGs (default ./ilat-demo/)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"sampling seed (default {DEMO_SEED})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda:N")
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)  # tests: a saved tiny model


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def resolve_model(name):
    """The model to use, or None (and a message) when the bundled one is not installed."""
    from napari_ilat.engine.model import bundled_models

    if name is not None:
        return name
    if DEMO_MODEL in bundled_models():
        return DEMO_MODEL
    have = ", ".join(bundled_models()) or "none"
    print(
        f"napari-ilat demo: the bundled {DEMO_MODEL!r} model is not installed in this build "
        f"(bundled models: {have}). Reinstall napari-ilat from a release or a checkout with "
        "src/napari_ilat/weights/pose.json, or train one (docs/training.md).",
        file=sys.stderr,
    )
    return None


def run(args) -> int:
    model = resolve_model(args.model)
    if model is None:
        return 2
    if args.headless or not has_display():
        if not args.headless:
            print(
                "napari-ilat demo: no display found; running headless (use a desktop session "
                "or xvfb-run for the window)",
                file=sys.stderr,
            )
        return run_headless(model, Path(args.output), args.seed, args.device)
    return run_gui(model, args.seed, args.device)


# --------------------------------------------------------------------------- headless


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def side_by_side(before, mask, after, before_pose, after_pose, scale: int = 3) -> np.ndarray:
    """before (old skeleton) | mask over before (new skeleton) | after (new skeleton) | after."""
    from napari_ilat.engine.skeleton import draw_skeleton

    tint = before.astype(np.float64)
    tint[mask] = 0.45 * tint[mask] + 0.55 * np.array([255.0, 60.0, 200.0])
    panels = [
        draw_skeleton(before, before_pose),
        draw_skeleton(tint.astype(np.uint8), after_pose),
        draw_skeleton(after, after_pose),
        after,
    ]
    gap = np.full((before.shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    return _upscale(row, scale)


def run_headless(model, out_dir: Path, seed: int = DEMO_SEED, device="auto") -> int:
    from napari_ilat.cli.edit import TokenProgress, write_image
    from napari_ilat.engine.editing import edit
    from napari_ilat.plugin.sample_data import pose_sample_pair

    pair = pose_sample_pair()
    bar = TokenProgress("demo edit")
    t0 = time.perf_counter()
    after = edit(pair.source, pair.mask, pair.target_pose, model=model, seed=seed, device=device, progress=bar)
    seconds = time.perf_counter() - t0
    bar.close(f"done in {seconds:.1f} s")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "before.png": pair.source,
        "mask.png": pair.mask.astype(np.uint8) * 255,
        "after.png": after,
        "side_by_side.png": side_by_side(pair.source, pair.mask, after, pair.source_pose, pair.target_pose),
    }
    for name, img in files.items():
        write_image(out_dir / name, img)
    size = list(pair.source.shape[:2])
    for name, pose in (("pose.json", pair.target_pose), ("pose_before.json", pair.source_pose)):
        (out_dir / name).write_text(json.dumps({"keypoints": pose.tolist(), "image_size": size}) + "\n")
    print(
        f"napari-ilat demo: moved {', '.join(pair.moved_limbs)} of the pose sample and regenerated "
        f"{100 * pair.mask.mean():.1f}% of the image in {seconds:.1f} s"
    )
    for name in files:
        print(f"  {out_dir / name}")
    before = out_dir / "before.png"
    print(
        f"  {out_dir / 'pose.json'}  (the new pose; reproduce with: napari-ilat edit "
        f"{before} --mask {out_dir / 'mask.png'} --pose {out_dir / 'pose.json'} --seed {seed} -o edited.png)"
    )
    print(
        f"  {out_dir / 'pose_before.json'}  (the pose before; without a painted mask, the limbs that moved: "
        f"napari-ilat edit {before} --pose {out_dir / 'pose.json'} --mask-from-pose {out_dir / 'pose_before.json'} "
        f"--seed {seed} -o edited.png)"
    )
    return 0


# --------------------------------------------------------------------------- GUI


def move_points_to(points, pose: np.ndarray) -> None:
    """Move the points of a named-keypoint Points layer to ``pose`` (18, 3) (x, y, v), as a user
    drags them: each keypoint the layer has and ``pose`` shows goes to its new place; one that
    ``pose`` hides stays where it is (a user does not delete the hip an arm now covers, and
    the auto mask would read a deleted point as moved); one only ``pose`` shows is added."""
    from napari_ilat.engine.skeleton import KEYPOINT_NAMES

    pose = np.asarray(pose, float)
    names = [str(n) for n in points.features["name"]] if "name" in points.features else []
    data = np.asarray(points.data, float).copy()
    where = {n: i for i, n in enumerate(names)}
    added, added_names = [], []
    for k in np.flatnonzero(pose[:, 2] > 0):
        rc = pose[k, 1::-1]  # napari points are (row, col)
        if KEYPOINT_NAMES[k] in where:
            data[where[KEYPOINT_NAMES[k]]] = rc
        else:
            added.append(rc)
            added_names.append(KEYPOINT_NAMES[k])
    if added:
        points.data = np.concatenate([data.reshape(-1, 2), np.array(added)])
        points.features = {"name": names + added_names}
    else:
        points.data = data


def run_gui(model, seed: int = DEMO_SEED, device="auto") -> int:
    import napari
    from napari.utils.notifications import show_info
    from qtpy.QtCore import QTimer

    from napari_ilat.plugin.sample_data import pose_sample_pair

    viewer = napari.Viewer(title="napari-ilat demo")
    viewer.open_sample("napari-ilat", "pose")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ilat", "iLAT editor")
    if model != DEMO_MODEL:
        widget.add_model(model, "demo model")
    elif DEMO_MODEL in [c for c in widget.model.choices]:
        widget.model.value = DEMO_MODEL
    widget.seed.value = seed
    widget.device.value = device if device in widget.device.choices else "auto"

    pair = pose_sample_pair()
    viewer.layers["suggested mask"].visible = False
    move_points_to(viewer.layers["pose"], pair.target_pose)  # "drag" one arm
    widget.auto_mask()
    viewer.layers.selection.active = viewer.layers["pose"]
    widget.generate()
    show_info(
        "napari-ilat demo: the keypoints of one arm were moved and the masked region "
        "regenerated. Drag keypoints, press 'Auto mask', then Generate (Shift-G)."
    )

    quit_after = os.environ.get("NAPARI_ILAT_DEMO_QUIT_AFTER")
    if quit_after:
        shot = os.environ.get("NAPARI_ILAT_DEMO_SCREENSHOT")
        deadline = time.monotonic() + float(quit_after) + 120

        def maybe_quit():
            if widget.running and time.monotonic() < deadline:
                QTimer.singleShot(200, maybe_quit)
                return
            QTimer.singleShot(int(float(quit_after) * 1000), finish)

        def finish():
            if shot:
                viewer.screenshot(shot, canvas_only=False, flash=False)
                print(f"napari-ilat demo: screenshot {shot}")
            viewer.close()

        QTimer.singleShot(200, maybe_quit)
    napari.run()
    return 0
