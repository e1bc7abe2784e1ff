"""``napari-ilat data``: inspect the offline data.

Subcommands: ``contact-sheet`` (write docs/contact_sheet.png; see :mod:`.contact_sheet`)
and ``benchmark`` (generation speed; see :mod:`.benchmark`). Follows the top-level CLI's
protocol: ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse

from napari_ilat.data import benchmark, contact_sheet

SUBCOMMANDS = {
    "contact-sheet": (contact_sheet, "write a PNG contact sheet of pose-edit pairs and natural patches"),
    "benchmark": (benchmark, "measure generation speed (samples/s, single process)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        module.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    return SUBCOMMANDS[args.data_command][0].run(args)
