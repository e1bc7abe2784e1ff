"""Write a contact sheet PNG of generated samples (for docs and eyeballing the data).

Each row shows one pose-edit pair and one natural patch:

1. source with its skeleton, 2. target with its skeleton, 3. target with the edit mask
(red tint), 4. pixels that differ between source and target (white) with the mask
outline (red) -- nothing white may lie outside the red outline, 5. natural patch with its
mask, 6. its sketch condition (XDoG outside the mask without the masked pixels, the
patch's own XDoG inside; 1 = edge shown white; mask outline red), 7. XDoG of the whole
patch.

Usage: ``python -m napari_ilat.data.contact_sheet --out docs/contact_sheet.png --n 8``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_ilat.data.natural import make_natural_sample
from napari_ilat.data.pose_scenes import make_edit_pair
from napari_ilat.data.splits import split_seeds
from napari_ilat.engine.skeleton import draw_skeleton

COLUMNS = ("source+pose", "target+pose", "edit mask", "changed px", "patch+mask", "sketch", "xdog")
_RED = np.array([255, 40, 40], np.float32)


def _tint(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = out[mask] * (1 - alpha) + _RED * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _grey(a: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def build_contact_sheet(n: int = 8, resolution: int = 128, split: str = "train", offset: int = 0) -> np.ndarray:
    """The contact sheet as a uint8 HxWx3 array (header row of titles included)."""
    pose_seeds = split_seeds(split, n, offset)
    nat_seeds = split_seeds(split, n, offset)
    gap = max(resolution // 8, 4)
    rows = []
    for ps, ns in zip(pose_seeds, nat_seeds):
        p = make_edit_pair(int(ps), resolution)
        changed = np.any(p.source != p.target, axis=-1)
        diff = np.zeros_like(p.source)
        diff[changed] = 255
        diff[_outline(p.mask)] = _RED.astype(np.uint8)
        s = make_natural_sample(int(ns), resolution)
        patch = _tint(s.image, s.mask, 0.35)
        patch[_outline(s.mask)] = _RED.astype(np.uint8)
        sketch = _grey(s.sketch)
        sketch[_outline(s.mask)] = _RED.astype(np.uint8)
        tiles = [
            draw_skeleton(p.source, p.source_pose),
            draw_skeleton(p.target, p.target_pose),
            _tint(p.target, p.mask),
            diff,
            np.full((resolution, gap, 3), 255, np.uint8),
            patch,
            sketch,
            _grey(s.edges),
        ]
        rows.append(np.concatenate(tiles, axis=1))
    body = np.concatenate(rows, axis=0)
    return np.concatenate([_header(body.shape[1], resolution, gap), body], axis=0)


def _header(width: int, resolution: int, gap: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    h = 14
    img = Image.new("RGB", (width, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x = 0
    for i, title in enumerate(COLUMNS):
        draw.text((x + 3, 1), title, fill=(0, 0, 0))
        x += resolution + (gap if i == 3 else 0)
    return np.asarray(img)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the contact-sheet command (shared by ``main`` and ``napari-ilat data``)."""
    parser.add_argument("--out", default="docs/contact_sheet.png", help="output PNG path")
    parser.add_argument("--n", type=int, default=8, help="number of rows (samples of each kind)")
    parser.add_argument("--resolution", type=int, default=128, help="sample resolution in pixels")
    parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
    parser.add_argument("--offset", type=int, default=0, help="index of the first sample in the split")


def run(args: argparse.Namespace) -> int:
    """Write the contact sheet described by parsed ``args``."""
    if args.n < 1 or args.resolution < 16:
        raise ValueError("--n must be >= 1 and --resolution >= 16")
    from PIL import Image

    sheet = build_contact_sheet(args.n, args.resolution, args.split, args.offset)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out, optimize=True)
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="napari-ilat data contact-sheet",
        description="Write a PNG contact sheet of synthetic pose-edit pairs and natural patches.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        parser.error(str(e))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
