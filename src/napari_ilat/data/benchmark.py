"""Measure data generation speed (single process): pose-edit pairs/s and natural samples/s.

Usage: ``python -m napari_ilat.data.benchmark --resolution 128 --n 100 --repeats 5``.
Prints the median over ``repeats`` runs of ``n`` samples each (distinct train seeds).
"""

from __future__ import annotations

import argparse
import statistics
import time

from napari_ilat.data.backgrounds import COLOR_PHOTOS, GREY_PHOTOS, photo_pyramid
from napari_ilat.data.natural import make_natural_sample
from napari_ilat.data.pose_scenes import make_edit_pair
from napari_ilat.data.splits import split_seeds


def measure(kind: str, n: int, resolution: int, repeats: int) -> list[float]:
    """Samples per second of each of ``repeats`` runs of ``n`` samples."""
    fn = make_edit_pair if kind == "pose" else make_natural_sample
    for name in COLOR_PHOTOS["train"] + GREY_PHOTOS["train"]:  # load photos outside the timing
        photo_pyramid(name)
    fn(int(split_seeds("train", 1)[0]), resolution)
    rates = []
    for r in range(repeats):
        seeds = split_seeds("train", n, offset=1 + r * n)
        t = time.perf_counter()
        for s in seeds:
            fn(int(s), resolution)
        rates.append(n / (time.perf_counter() - t))
    return rates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the benchmark command."""
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--n", type=int, default=100, help="samples per run")
    parser.add_argument("--repeats", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    """Print the median generation speed of pose-edit pairs and natural samples."""
    if args.n < 1 or args.repeats < 1:
        raise ValueError("--n and --repeats must be >= 1")
    for kind, label in (("pose", "pose-edit pairs"), ("natural", "natural samples (patch+mask+2 XDoG)")):
        rates = measure(kind, args.n, args.resolution, args.repeats)
        print(
            f"{label} at {args.resolution}px: median {statistics.median(rates):.1f}/s "
            f"(runs: {', '.join(f'{r:.1f}' for r in rates)})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="napari-ilat data benchmark", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
