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


# (module, imported module, name) pairs allowed to reach a private name: none today.
PRIVATE_ALLOWLIST: set[tuple[str, str, str]] = set()


def _module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    rel = pathlib.Path(*dotted.split(".")[1:])
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def private_names_reached(path: pathlib.Path) -> set[tuple[str, str]]:
    """(module, name) of every ``_private`` name of another napari_ilat module that ``path``
    imports (``from M import _x``) or reaches as an attribute (``import M as m; m._x``)."""
    me = _module_of(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases: dict[str, str] = {}  # local name -> napari_ilat module it is bound to
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_ilat"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _is_module(full):
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_") and not a.name.startswith("__") and node.module != me:
                    found.add((node.module, a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("napari_ilat") and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and aliases[node.value.id] != me
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.add((aliases[node.value.id], node.attr))
    return found


def test_no_private_name_is_reached_across_modules():
    bad, seen = [], set()
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        for module, name in sorted(private_names_reached(path)):
            seen.add((rel, module, name))
            if (rel, module, name) not in PRIVATE_ALLOWLIST:
                bad.append(f"{rel} uses {module}.{name}")
    assert not bad, "private names used from another module (make them public):\n" + "\n".join(bad)
    stale = PRIVATE_ALLOWLIST - seen
    assert not stale, f"fixed, so remove from PRIVATE_ALLOWLIST: {sorted(stale)}"


def test_the_private_name_check_can_fail(tmp_path, monkeypatch):
    """The checker sees both an imported and an attribute-reached private name."""
    src = tmp_path / "napari_ilat" / "plugin"
    src.mkdir(parents=True)
    (src / "layers.py").write_text("def _hidden(): pass\n")
    probe = src / "probe.py"
    probe.write_text(
        "from napari_ilat.plugin.layers import _hidden\nfrom napari_ilat.plugin import layers as L\nL._other()\n"
    )
    monkeypatch.setitem(globals(), "PKG", tmp_path / "napari_ilat")
    assert private_names_reached(probe) == {
        ("napari_ilat.plugin.layers", "_hidden"),
        ("napari_ilat.plugin.layers", "_other"),
    }
