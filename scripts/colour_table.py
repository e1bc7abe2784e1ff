"""Add (or refresh) the context palette's colour table in model JSONs.

    python scripts/colour_table.py src/napari_ilat/weights/natural.json src/napari_ilat/weights/pose.json

`napari-ilat train export` and `train imagebart --export` write the table themselves; this
is for models exported before it existed (the bundled ones were given theirs this way). The
table (each code's decoded colour, engine/palette.py) is computed from the model's first
stage, which is loaded with its checksums checked; only the JSON's ``code_colours`` entry
changes, so the weights files and their checksums stay as they are.
"""

import argparse
import json
import time
from pathlib import Path

from napari_ilat.engine.model import load_model
from napari_ilat.engine.palette import code_colours, colours_to_json


def add_table(path: Path) -> float:
    """Write the table into the JSON at ``path``; returns the seconds it took."""
    t0 = time.perf_counter()
    text = path.read_text()
    meta = json.loads(text)
    table = code_colours(load_model(path).vqgan)
    meta["code_colours"] = colours_to_json(table)
    second = text.splitlines()[1] if text.count("\n") > 1 else "  "
    indent = len(second) - len(second.lstrip(" ")) or 2  # as the file was written: a short diff
    path.write_text(json.dumps(meta, indent=indent) + "\n")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="model JSONs (NAME.json, its weights beside it)")
    args = ap.parse_args()
    for path in args.models:
        print(f"{path}: colour table in {add_table(path):.0f} s", flush=True)


if __name__ == "__main__":
    main()
