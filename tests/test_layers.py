"""The package's folders are its layers, and each imports only the layers below it.

engine -> data -> evaluation -> train -> cli / plugin (docs/architecture.md). Checked on the
source (every import statement, also the ones inside functions), so a lazy upward import
fails here as well as a top-level one.
"""

import ast
import pathlib

import pytest

import napari_ilat

PKG = pathlib.Path(napari_ilat.__file__).parent

# layer -> the package's layers it may import (besides itself)
ALLOWED = {
    "engine": set(),
    "data": {"engine"},
    "evaluation": {"engine", "data"},
    "train": {"engine", "data", "evaluation"},
    "plugin": {"engine", "data", "evaluation"},
    # the command line is the top: `demo` and `bench gui` start the napari plugin
    "cli": {"engine", "data", "evaluation", "train", "plugin"},
}


def imported_layers(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use napari_ilat.<layer>...)"
            mods = [node.module or ""]
            if node.module == "napari_ilat":  # the public API: edit, load_model, ... (engine)
                mods = ["napari_ilat.engine"]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        for m in mods:
            parts = m.split(".")
            if parts[0] == "napari_ilat" and len(parts) > 1:
                names.add(parts[1])
    return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_downward(layer):
    files = sorted((PKG / layer).rglob("*.py"))
    assert files, f"no layer folder {layer}/"
    for path in files:
        bad = imported_layers(path) - ALLOWED[layer] - {layer}
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)} (layer {layer})"


def test_no_module_outside_the_layers():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert top == ["__init__.py"], top


def test_no_private_module_is_imported_across_modules():
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_ilat"):
                mods = node.module.split(".")
                assert not any(m.startswith("_") for m in mods), f"{path}: {node.module}"
