"""The ``napari-ilat`` command line: one subcommand per module, imported only when used.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; adding a
command is one line in COMMANDS. Nothing here imports Qt or napari (``demo`` does so itself).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "bench": ("napari_ilat.cli.bench", "measure speed, quality, GUI responsiveness"),
    "data": ("napari_ilat.cli.data", "inspect the offline training data (contact sheet)"),
    "train": ("napari_ilat.cli.train", "train the VQGAN / transformer, evaluate, export a model"),
    "edit": ("napari_ilat.cli.edit", "edit an image (or a folder) where a mask is painted"),
    "convert": (
        "napari_ilat.cli.convert",
        "convert published iLAT / taming-transformers weights; store a model's colour table",
    ),
    "demo": ("napari_ilat.cli.demo", "open napari with the pose sample (headless: write PNGs)"),
    "info": ("napari_ilat.cli.info", "versions, devices and the bundled models (checksums verified)"),
}


def build_parser(argv) -> tuple[argparse.ArgumentParser, object]:
    from napari_ilat import __version__

    parser = argparse.ArgumentParser(prog="napari-ilat", description="Local image editing with iLAT.")
    parser.add_argument("--version", action="version", version=f"napari-ilat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    # Only the chosen command's module is imported (torch start-up is slow enough).
    name = next((a for a in argv if a in COMMANDS), None)
    module = None
    if name is not None:
        module = importlib.import_module(COMMANDS[name][0])
        sub.choices[name] = p = argparse.ArgumentParser(prog=f"napari-ilat {name}", description=COMMANDS[name][1])
        module.add_arguments(p)
    return parser, module


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    if module is None:
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError) as e:  # user errors (and unwritable files): a message, not a traceback
        print(f"napari-ilat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the shell's status for it (128 + SIGINT), no traceback
        # outputs are written beside and moved into place, so none is left half-written
        print(f"\nnapari-ilat {args.command}: interrupted; files already written are complete", file=sys.stderr)
        return 130
