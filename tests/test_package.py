"""Package-level promises: the public API names, and a core that never imports Qt/napari."""

import subprocess
import sys


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_public_edit_is_the_function_whatever_was_imported_first():
    out = run(
        "import napari_ilat.cli.bench, napari_ilat.engine.editing\n"
        "from napari_ilat import edit, EditCancelled, load_model, save_model, ILATModel\n"
        "print(callable(edit), edit.__name__)"
    )
    assert out.split() == ["True", "edit"]


def test_core_imports_neither_qt_nor_napari():
    out = run(
        "import sys\n"
        "import napari_ilat, napari_ilat.engine.editing, napari_ilat.cli.bench, napari_ilat.data\n"
        "import napari_ilat.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')]\n"
        "print(bad)"
    )
    assert out.strip() == "[]"


def test_data_does_not_import_torch():
    out = run("import sys, napari_ilat.data\nprint('torch' in sys.modules)")
    assert out.strip() == "False"


def test_one_version_source():
    """__version__ is pyproject's [project] version (read from the installed metadata)."""
    import pathlib
    import re

    import napari_ilat

    pyproject = (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
    written = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert napari_ilat.__version__ == written
    assert written not in pathlib.Path(napari_ilat.__file__).read_text()  # not written twice
