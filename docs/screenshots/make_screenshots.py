"""Regenerate the README screenshots (needs a display; xvfb-run is fine):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots/make_screenshots.py [MODEL]

MODEL: a bundled name or a path to NAME.json (default: the bundled "pose" model). Writes
docs/screenshots/{viewer_pose.png, widget.png, photo.png}.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(model="pose") -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ilat.cli.demo import move_points_to
    from napari_ilat.plugin.sample_data import pose_sample_pair

    app = QApplication.instance() or QApplication([])

    def settle(n=20):
        for _ in range(n):
            app.processEvents()

    viewer = napari.Viewer(title="napari-ilat")
    viewer.window._qt_window.resize(1500, 900)
    viewer.open_sample("napari-ilat", "pose")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ilat", "iLAT editor")
    widget.synchronous = True
    if model != "pose":
        widget.add_model(model, "model")
    widget.seed.value = 0
    viewer.layers["suggested mask"].visible = False
    move_points_to(viewer.layers["pose"], pose_sample_pair().target_pose)
    widget.auto_mask()
    widget.generate()
    viewer.layers["pose"].text.visible = False
    viewer.layers.selection.active = viewer.layers["pose"]
    viewer.reset_view()
    settle()
    viewer.screenshot(str(HERE / "viewer_pose.png"), canvas_only=False, flash=False)
    widget.native.widget().grab().save(str(HERE / "widget.png"))  # the controls, not the scroll area

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.open_sample("napari-ilat", "photo")
    if model == "pose" or "pose" in str(model):
        widget.model.value = "natural" if "natural" in widget.model.choices else widget.model.value
    widget.generate()
    viewer.reset_view()
    settle()
    viewer.screenshot(str(HERE / "photo.png"), canvas_only=False, flash=False)
    viewer.close()
    print("wrote", *(HERE / n for n in ("viewer_pose.png", "widget.png", "photo.png")))


if __name__ == "__main__":
    main(*sys.argv[1:2])
