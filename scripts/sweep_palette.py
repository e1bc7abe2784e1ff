"""The context palette (edit(palette=), engine/palette.py) against none, on held-out cases:
in-mask PSNR with the default seamless compositing and pasted as decoded, the same cases and
seeds with and without it, so the differences are paired (docs/benchmarks.md, "Sampling:
the context palette").

    OMP_NUM_THREADS=1 python scripts/sweep_palette.py --n 100 --split validation --sets box,brush,sketch
    OMP_NUM_THREADS=1 python scripts/sweep_palette.py --n 200 --split test --sets box,brush
    OMP_NUM_THREADS=1 python scripts/sweep_palette.py --n 100 --split validation \
        --sets upper-imagebart,upper-taming

The same on greyscale images (each case's photographs made grey, as a microscopy or astronomy
user's; the palette then compares grey levels, engine/palette.py):

    OMP_NUM_THREADS=1 python scripts/sweep_palette.py --n 200 --split test --sets box,brush --grey

The support rule (twenty-sixth session: a code needs PALETTE_SUPPORT of the band's pixels
within tau, before then any one pixel): the default against the palette with another support,
both on, the same cases and seeds ("off" in the output is that other rule):

    OMP_NUM_THREADS=1 python scripts/sweep_palette.py --n 200 --split test --sets box,brush --against-support 0

With --grey the two arms are the same rule: grey images keep support 0
(engine.palette.PALETTE_SUPPORT_GREY); set that to 0.3 first to repeat the grey measurement
of docs/benchmarks.md.

A user's case, as a picture: a 400 x 300 px hole in scikit-image's astronaut photograph
upscaled to 2048 x 2048 (generated at the model's pixel scale), with and without it:

    OMP_NUM_THREADS=1 python scripts/sweep_palette.py --sets none --example docs/images/palette_astronaut.png

Sets as in sweep_topk.py (box holes 48-64 px, brush strokes 10-40% without a sketch, the
same with the true sketch, upper-half completion per engine), top-k 20. The palette is forced
on ("on") so the sketch set measures it too (its default, "auto", leaves it off there).
Prints one JSON line per set: the means without and with it, and the paired difference with
its standard error, per compositing.
"""

import argparse
import contextlib
import functools
import json

import numpy as np
import torch
from sweep_topk import CASES

from napari_ilat import edit, load_model
from napari_ilat.engine import editing, palette
from napari_ilat.engine.reuse import FIRST_STAGE_CACHE
from napari_ilat.evaluation.metrics import PSNR_CAP, paired_difference, psnr


def example(path):
    """Input, palette off, palette auto (the default) side by side, around the hole."""
    from skimage import data, io, transform

    img = (transform.resize(data.astronaut(), (2048, 2048), order=1) * 255).astype(np.uint8)
    mask = np.zeros(img.shape[:2], bool)
    mask[800:1200, 900:1200] = True
    crop = (slice(700, 1300, 2), slice(800, 1300, 2))
    tiles = [img[crop]] + [edit(img, mask, seed=0, palette=p)[crop] for p in ("off", "auto")]
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    io.imsave(path, np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], 1), check_contrast=False)


def greyscale(image):
    """An RGB uint8 case image as 2D uint8 greyscale (what a user's grey image is)."""
    from skimage.color import rgb2gray

    return np.rint(rgb2gray(image) * 255).astype(np.uint8)


@contextlib.contextmanager
def other_support(support):
    """edit()'s palette with ``support`` (None: the default) for the duration; the first-stage
    cache, which keeps an input's palette, emptied before and after, so neither rule sees the
    other's."""
    if support is None:
        yield
        return
    FIRST_STAGE_CACHE.clear()
    editing.allowed_codes = functools.partial(palette.allowed_codes, support=support)
    try:
        yield
    finally:
        editing.allowed_codes = palette.allowed_codes
        FIRST_STAGE_CACHE.clear()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--sets", default="box,brush")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--ilat-model", default="natural", help="the natural iLAT model (default: the bundled one)")
    ap.add_argument("--grey", action="store_true", help="the cases' images made greyscale (2D)")
    ap.add_argument("--example", help="also write the astronaut example here (PNG): input, without, with")
    ap.add_argument(
        "--against-support",
        type=float,
        help="compare with the palette whose codes need this share of the band's pixels (0: any one) instead of none",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.example:
        example(args.example)
    for name in filter(None, args.sets.replace("none", "").split(",")):
        make_cases, model, mode = CASES[name]
        model = load_model(model or args.ilat_model)
        res = {(p, b): [] for p in ("off", "on") for b in ("seamless", "alpha")}
        for seed, src, tgt, mask, cond in make_cases(args.n, args.split):
            if args.grey:
                src, tgt = greyscale(src), greyscale(tgt)
            for (p, b), scores in res.items():
                with other_support(args.against_support if p == "off" else None):
                    use = "on" if args.against_support is not None else p
                    out = edit(src, mask, model=model, mode=mode, seed=seed, palette=use, blend=b, **cond)
                scores.append(psnr(out, tgt, mask, cap=PSNR_CAP))
        row = {
            "set": name,
            "n": args.n,
            "split": args.split,
            "grey": args.grey,
            "against_support": args.against_support,
        }
        for b, label in (("seamless", "seamless"), ("alpha", "pasted")):
            off, on = np.array(res["off", b]), np.array(res["on", b])
            diff, se = paired_difference(on, off)
            row[label] = {
                "off": round(float(off.mean()), 3),
                "on": round(float(on.mean()), 3),
                "diff": round(diff, 3),
                "se": round(se, 3),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
