"""``napari-ilat bench speed|quality|scale|regenerate|native|imagebart|gui``: the command line of the benchmarks.

The measurements live in napari_ilat.evaluation (speed, quality) and, for the GUI
responsiveness check that needs Qt, in napari_ilat.plugin.bench_gui.
"""

from __future__ import annotations

import sys

from napari_ilat.evaluation.quality import TEST_SETS
from napari_ilat.evaluation.speed import DEFAULT_RATES, PRESETS, speed, speed_markdown, speed_plot


def add_arguments(parser):
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = sub.add_parser("speed", help="edit time vs masked rate, cached vs no-cache vs taming")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument(
        "--rates", default=DEFAULT_RATES, help=f"comma-separated masked-token rates (default: {DEFAULT_RATES})"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--plot", help="write a PNG of time against masked rate (needs matplotlib)")

    q = sub.add_parser("quality", help="PSNR/SSIM/MAE of ilat, ilat*, taming, biharmonic on held-out data")
    q.add_argument("--pose-model", default="pose", help="bundled name or path; 'none' to skip")
    q.add_argument("--natural-model", default="natural", help="bundled name or path; 'none' to skip")
    q.add_argument(
        "--plain-pose-model",
        default=None,
        help="iLAT* ablation for pose: a model whose stage 1 was trained --plain "
        "(default: the pose model's weights with the plain encoder)",
    )
    q.add_argument(
        "--plain-natural-model", default=None, help="iLAT* ablation for natural patches (as --plain-pose-model)"
    )
    q.add_argument("--n", type=int, default=200, help="cases per test set (default 200)")
    q.add_argument(
        "--sets",
        default=",".join(TEST_SETS),
        help=f"comma-separated test sets, of {', '.join(TEST_SETS)} (default: all)",
    )
    _blend_option(q)
    q.add_argument("--examples", help="write example grids to PREFIX_{pose,natural,sketch}.png")
    q.add_argument("--out", help="also write the markdown tables to this file")

    b = sub.add_parser("scale", help="edit time and peak memory for a small mask on a big image")
    b.add_argument("--size", type=int, default=8000, help="image side in pixels (default 8000)")
    b.add_argument("--mask", type=int, default=64, help="mask side in pixels (default 64)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--model", default="natural")
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--out", help="also write the JSON result to this file")

    r = sub.add_parser("regenerate", help="whole edit, iLAT vs Taming, first edit vs repeated Generate")
    r.add_argument("--preset", choices=sorted(PRESETS), default="default")
    r.add_argument("--rate", type=float, default=0.066, help="masked-token rate (default: %(default)s)")
    r.add_argument("--repeats", type=int, default=5)
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--out", help="also write the markdown table to this file")

    n = sub.add_parser("native", help="a big mask at native resolution (sliding windows) vs resized")
    n.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    n.add_argument("--mask", type=int, default=512, help="mask side in pixels (default 512)")
    n.add_argument("--model", default="natural")
    n.add_argument("--device", default="cpu")
    n.add_argument("--threads", type=int, default=None)
    n.add_argument("--out", help="also write the JSON result to this file")

    i = sub.add_parser(
        "imagebart", help="ImageBART vs iLAT / Taming / biharmonic: upper-half completion, box, brush; speed"
    )
    i.add_argument("--model", required=True, help="the ImageBART model (NAME.json or bundled name)")
    i.add_argument("--ilat-model", default="natural", help="iLAT model for ilat / taming ('none' to skip)")
    i.add_argument("--tasks", default="upper_half,box,brush", help="comma-separated: upper_half, box, brush")
    i.add_argument("--n", type=int, default=100, help="cases per task (default 100)")
    _blend_option(i)
    i.add_argument("--examples", help="write example grids to PREFIX_{task}.png")
    i.add_argument("--speed", action="store_true", help="also time sampling against the masked area and T")
    i.add_argument("--threads", type=int, default=None)
    i.add_argument("--out", help="also write the markdown to this file")

    g = sub.add_parser("gui", help="longest Qt event-loop stall during a threaded generation (needs a display)")
    g.add_argument("--model", default=None, help="'default' (random), 'tiny', or a path to NAME.json")
    g.add_argument("--size", type=int, default=128)
    g.add_argument("--mask-fraction", type=float, default=0.3)
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument(
        "--lazy",
        type=int,
        default=0,
        metavar="N",
        help="edit a lazy N x N pyramid (dask) through a Shapes mask at its centre instead",
    )
    g.add_argument("--out", help="also write the JSON result to this file")


BLEND_CHOICES = {"seamless": ("seamless",), "alpha": ("alpha",), "both": ("seamless", "alpha")}


def _blend_option(p):
    p.add_argument(
        "--blend",
        default="seamless",
        choices=sorted(BLEND_CHOICES),
        help="compositing of the learned methods (edit(blend=)): seamless (default), alpha, or both (a row each)",
    )


def run(args) -> int:
    if args.what == "speed":
        rates = tuple(float(x) for x in args.rates.split(","))
        if not all(0 < x <= 1 for x in rates):
            raise ValueError("--rates must be fractions in (0, 1]")
        result = speed(args.preset, rates, args.repeats, args.device, args.threads)
        md = speed_markdown(result)
        if args.plot:
            speed_plot(result, args.plot)
    elif args.what == "scale":
        import json

        from napari_ilat.evaluation.speed import big_image

        if args.size < 16 or not 1 <= args.mask < args.size:
            raise ValueError("--size must be >= 16 and --mask between 1 and --size - 1")
        md = json.dumps(big_image(args.size, args.mask, args.repeats, args.model, args.threads), indent=2)
    elif args.what == "regenerate":
        from napari_ilat.evaluation.speed import regenerate_markdown, regenerate_speed

        if not 0 < args.rate <= 1:
            raise ValueError("--rate must be a fraction in (0, 1]")
        md = regenerate_markdown(regenerate_speed(args.preset, args.rate, args.repeats, args.device, args.threads))
    elif args.what == "native":
        import json

        from napari_ilat.evaluation.speed import native_speed

        if args.size < 16 or not 1 <= args.mask < args.size:
            raise ValueError("--size must be >= 16 and --mask between 1 and --size - 1")
        md = json.dumps(native_speed(args.size, args.mask, args.model, args.threads, device=args.device), indent=2)
    elif args.what == "imagebart":
        from napari_ilat.evaluation import imagebart as ib

        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        ilat = None if args.ilat_model == "none" else args.ilat_model
        tasks = tuple(t for t in args.tasks.split(",") if t)
        results = ib.compare(
            args.model,
            ilat,
            tasks=tasks,
            n=args.n,
            keep_examples=4 if args.examples else 0,
            blends=BLEND_CHOICES[args.blend],
            progress=lambda task, k: k % 10 == 0 and print(f"{task}: {k}/{args.n}", file=sys.stderr, flush=True),
        )
        md = ib.compare_markdown(results, str(args.model), ilat, args.examples)
        if args.speed:
            md += "\n\n" + ib.speed_markdown(ib.sampling_speed(args.model))
    elif args.what == "gui":
        import json

        from napari_ilat.plugin.bench_gui import run_gui_benchmark

        result = run_gui_benchmark(
            args.model, args.size, args.mask_fraction, threads=args.threads, repeats=args.repeats, lazy=args.lazy
        )
        md = json.dumps(result, indent=2)
    else:
        from napari_ilat.evaluation.quality import quality

        def model(name):
            return None if name == "none" else name

        sets = tuple(x.strip() for x in args.sets.split(",") if x.strip())
        unknown = [x for x in sets if x not in TEST_SETS]
        if unknown or not sets:
            raise ValueError(f"--sets: unknown test set(s) {unknown}; choose from {', '.join(TEST_SETS)}")
        md = quality(
            model(args.pose_model),
            model(args.natural_model),
            args.n,
            args.n,
            examples=args.examples,
            plain_pose_model=args.plain_pose_model,
            plain_natural_model=args.plain_natural_model,
            sets=sets,
            blends=BLEND_CHOICES[args.blend],
        )
    print(md)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(md + "\n")
    return 0
