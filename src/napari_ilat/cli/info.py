"""``napari-ilat info``: what this installation has, for a first check or a bug report.

    napari-ilat info            versions, devices, free memory, the bundled models
    napari-ilat info --json     the same, as JSON

Every bundled model is loaded, so its files' checksums are verified; exit code 1 when one
does not load (a damaged or partial install), with the reason. Package versions come from
the installed metadata: nothing here imports Qt or napari.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

#: distributions worth naming in a bug report (the Qt bindings: whichever is installed)
PACKAGES = (
    "napari-ilat",
    "torch",
    "numpy",
    "scipy",
    "scikit-image",
    "safetensors",
    "magicgui",
    "npe2",
    "napari",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
)


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def package_versions() -> dict[str, str | None]:
    """Installed version of each of PACKAGES (None: not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def devices() -> dict:
    import torch

    cuda = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {"torch_threads": torch.get_num_threads(), "cuda": cuda, "mps": mps}


def model_report(name: str) -> dict:
    """One bundled model: loads (checksums verified) or why not, and how it was trained."""
    from napari_ilat.engine.model import WEIGHTS_DIR, load_model

    try:
        meta = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    except (OSError, ValueError) as e:  # a damaged JSON: reported like a damaged weights file
        return {
            "name": name,
            "files": [],
            "mib": 0.0,
            "trained_minutes": None,
            "trained_on": None,
            "ok": False,
            "error": f"{name}.json: {e}",
        }
    training = meta.get("training", {})
    lineage = training.get("lineage", {}) if isinstance(training.get("lineage"), dict) else {}
    files = sorted({f["file"] for f in meta.get("files", {}).values() if isinstance(f, dict) and "file" in f})
    size = sum((WEIGHTS_DIR / f).stat().st_size for f in files if (WEIGHTS_DIR / f).is_file())
    report = {
        "name": name,
        "files": files,
        "mib": round(size / 2**20, 1),
        "trained_minutes": lineage.get("gpu_minutes_total", training.get("train_minutes")),
        "trained_on": (training.get("recipe") or {}).get("device") or training.get("gpu") or training.get("device"),
    }
    try:
        model = load_model(name)
        report.update(
            ok=True,
            cond=getattr(model, "cond", None),
            resolution=getattr(model, "resolution", None),
            colour_table=model.vqgan.code_colours is not None,  # what colours "auto" needs
        )
    except (ValueError, OSError) as e:
        report.update(ok=False, error=str(e))
    return report


def collect() -> dict:
    from napari_ilat.engine.editing import free_memory
    from napari_ilat.engine.model import bundled_models

    free = free_memory()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "devices": devices(),
        "free_memory_gib": None if free is None else round(free / 2**30, 1),
        "models": [model_report(name) for name in bundled_models()],
    }


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        pk = info["packages"]
        print(f"napari-ilat {pk['napari-ilat']} on Python {info['python']}, {info['platform']}")
        print("packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v and k != "napari-ilat"))
        missing = [k for k, v in pk.items() if v is None and not k.startswith(("PyQt", "PySide"))]
        if missing:
            print(
                "not installed: " + ", ".join(missing) + (" (the napari plugin needs napari)" * ("napari" in missing))
            )
        dev = info["devices"]
        gpus = ", ".join(dev["cuda"]) or "none"
        print(
            f"devices: cpu ({dev['torch_threads']} torch threads), cuda: {gpus}, mps: {'yes' if dev['mps'] else 'no'}"
        )
        if info["free_memory_gib"] is not None:
            print(f"free memory: {info['free_memory_gib']} GiB")
        for m in info["models"]:
            trained = f", trained {m['trained_minutes']} min on {m['trained_on']}" if m["trained_minutes"] else ""
            state = "ok (checksums verified)" if m["ok"] else f"DOES NOT LOAD: {m['error']}"
            if m["ok"] and not m["colour_table"]:
                state += ", no colour table (`napari-ilat convert colours` adds it)"
            print(f"model {m['name']}: {state}; {len(m['files'])} files, {m['mib']} MiB{trained}")
    return 0 if all(m["ok"] for m in info["models"]) else 1
