"""``napari-ilat convert``: published weights -> a napari-ilat model (NAME.json + NAME.safetensors).

    napari-ilat convert taming CKPT [--first-stage VQGAN_CKPT] -o DIR/NAME
    napari-ilat convert ilat --image-vqgan A --sketch-vqgan B --transformer C -o DIR/NAME
    napari-ilat convert colours DIR/NAME.json [...]   the context palette's colour table, added

The files are opened with torch.load(weights_only=True) only (no code in them can run); the
result loads like a bundled model: ``napari-ilat edit --model DIR/NAME.json``, ``load_model``,
the widget's *load file...*. Which files, and what to expect: docs/convert.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    t = sub.add_parser("taming", help="a taming-transformers Net2NetTransformer checkpoint (.ckpt)")
    t.add_argument("ckpt", help="the transformer checkpoint (holds its first stage too)")
    t.add_argument("--first-stage", help="a VQGAN checkpoint to use instead of the one inside CKPT")
    t.add_argument("--n-head", type=int, default=16, help="attention heads (not stored in the file; default 16)")
    t.add_argument("--sos-token", type=int, default=0, help="the start token id it was trained with (default 0)")
    i = sub.add_parser("ilat", help="the three iLAT FFHQ files (ewrfcas/iLAT)")
    i.add_argument("--image-vqgan", required=True, help="the image TS-VQGAN (.pth, weights under g_model)")
    i.add_argument("--sketch-vqgan", required=True, help="the sketch VQGAN (.pth, weights under g_model)")
    i.add_argument("--transformer", required=True, help="the transformer (.pth, weights under model)")
    i.add_argument("--n-head", type=int, default=12, help="attention heads (not stored in the file; default 12)")
    for q in (t, i):
        q.add_argument("-o", "--output", required=True, help="DIR/NAME: writes NAME.json and NAME.safetensors")
        q.add_argument("--name", help="model name shown in results (default: NAME)")
        q.add_argument(
            "--colour-table",
            action="store_true",
            help="also store the context palette's colour table (each code's decoded colour; what --palette on "
            "needs): slow on a CPU for these models, see docs/convert.md",
        )
    c = sub.add_parser(
        "colours",
        help="add the context palette's colour table to model JSONs (their weights files are left as they are)",
    )
    c.add_argument("models", nargs="+", help="NAME.json files (their weights beside them, checksums checked)")
    for q in (t, i, c):
        q.add_argument("--device", default="auto", help="where to compute the colour table: auto, cpu, cuda, ...")
        q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def colour_table(vqgan, device, quiet: bool, label: str):
    """``vqgan``'s colour table (engine/palette.py), computed on ``device`` with a progress bar;
    the first stage is put back where it was."""
    from napari_ilat.cli.edit import TokenProgress
    from napari_ilat.engine.editing import resolve_device
    from napari_ilat.engine.palette import code_colours

    home = next(vqgan.parameters()).device
    bar = TokenProgress(label, quiet=quiet, unit="code")
    try:
        table = code_colours(vqgan.to(resolve_device(device)), progress=bar)
    finally:
        vqgan.to(home)
    bar.close(f"colour table of {len(table)} codes in {time.perf_counter() - bar.t0:.1f} s")
    return table


def add_colours(path: Path, device="auto", quiet: bool = False) -> None:
    """Write the colour table into the model JSON at ``path``: only its ``code_colours``
    entry changes (the file's own indent kept), so the weights and their checksums stay."""
    import json

    from napari_ilat.engine.model import load_model
    from napari_ilat.engine.palette import colours_to_json

    text = path.read_text()
    meta = json.loads(text)
    table = colour_table(load_model(path).vqgan, device, quiet, path.name)
    meta["code_colours"] = colours_to_json(table)
    second = text.splitlines()[1] if text.count("\n") > 1 else "  "
    indent = len(second) - len(second.lstrip(" ")) or 2  # as the file was written: a short diff
    path.write_text(json.dumps(meta, indent=indent) + "\n")


def run(args) -> int:
    from napari_ilat.engine.convert import TAMING_NOTICE, convert_ilat, convert_taming
    from napari_ilat.engine.model import save_model

    if args.source == "colours":
        for path in map(Path, args.models):
            if path.suffix != ".json":
                raise ValueError(f"{path}: give the model's NAME.json (its weights are found from it)")
            add_colours(path, args.device, args.quiet)
        return 0
    out = Path(args.output)
    stem = out.with_suffix("") if out.suffix in (".json", ".safetensors") else out
    name = args.name or stem.name
    t0 = time.perf_counter()
    if args.source == "taming":
        model = convert_taming(args.ckpt, args.first_stage, n_head=args.n_head, sos_token=args.sos_token, name=name)
    else:
        model = convert_ilat(args.image_vqgan, args.sketch_vqgan, args.transformer, n_head=args.n_head, name=name)
    if args.colour_table:
        model.vqgan.code_colours = colour_table(model.vqgan, args.device, args.quiet, name)
    stem.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = save_model(model, stem)
    n = sum(p.numel() for p in model.parameters())
    vq, tf = model.config.vqgan, model.config.transformer
    print(
        f"wrote {cfg_path} and {cfg_path.with_suffix('.safetensors').name} ({n / 1e6:.1f} M parameters, "
        f"{time.perf_counter() - t0:.1f} s): {vq.resolution} px, {tf.grid}x{tf.grid} tokens, "
        f"{tf.vocab_size} codes, condition {tf.cond}"
    )
    if tf.trained_mask == "causal":
        print(f"note: {TAMING_NOTICE}", file=sys.stderr)
    print(
        f"use it: napari-ilat edit IMAGE --mask MASK --model {cfg_path}"
        + (" --sketch SKETCH" if tf.cond == "sketch" else "")
    )
    return 0
