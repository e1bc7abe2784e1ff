"""``napari-ilat edit``: edit one image, or a folder of images, from the command line.

    napari-ilat edit photo.png --mask mask.png -o edited.png
    napari-ilat edit scene.png --mask mask.png --pose pose.json --samples 4 --seed 0 -o out.png
    napari-ilat edit images/ --mask masks/ [--pose poses/] [--sketch sketches/] -o results/

Folder mode: IMAGE, MASK (and POSE / SKETCH when given as folders) hold files with the same
stem (``a.png`` + ``a.tif`` mask + ``a.json`` pose); OUT is a folder. With ``--samples N``
> 1 the candidates are written as ``OUT-STEM_0.png`` ... ``_N-1``.

Without ``--seed`` a seed is drawn for each image (by the engine, :func:`napari_ilat.engine.
editing.draw_seed`); it is printed and written into the output's metadata (PNG text chunk /
TIFF ImageDescription ``napari-ilat``: JSON with seed, model, mode, ...), so every result can
be reproduced with ``--seed``. Mask and sketch files are normalised by the engine's rules
(:mod:`napari_ilat.engine.inputs`: a mask is non-zero; a sketch is scaled by its dtype).

Pose JSON: ``[[x, y, v], ...]`` (18 rows, COCO/OpenPose order, x = column, y = row, v = 0 for
invisible), ``{"keypoints": [...]}``, or ``{"nose": [x, y], "neck": [x, y, v], ...}`` (missing
names are invisible). No Qt, no napari.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_ilat.engine.inputs import normalize_mask, normalize_sketch
from napari_ilat.engine.modes import MODE_NAMES

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def add_arguments(p) -> None:
    p.add_argument("image", help="image file, or a folder of images")
    p.add_argument(
        "--mask", required=True, help="mask image (non-zero = regenerate), or a folder with the same file names"
    )
    p.add_argument("--pose", help="pose keypoints JSON (or a folder of STEM.json)")
    p.add_argument("--sketch", help="stroke image (white strokes on black), or a folder")
    p.add_argument(
        "--model", help="bundled model name or path to NAME.json (default: 'pose' with --pose, else 'natural')"
    )
    p.add_argument("--mode", default="ilat", choices=MODE_NAMES)
    p.add_argument("--samples", type=int, default=1, help="number of candidates (default 1)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (same seed = same result; default: drawn, printed and stored in the output)",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--feather", type=float, default=2.0, help="blend band width in px outside the mask")
    p.add_argument("-o", "--output", required=True, help="output file (one image) or folder (folder input)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


# --------------------------------------------------------------------------- I/O


def read_image(path) -> np.ndarray:
    import skimage.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return np.asarray(skimage.io.imread(str(path)))
    except Exception as e:  # unreadable / unknown format
        raise ValueError(f"cannot read {path} as an image: {e}") from e


def read_mask(path) -> np.ndarray:
    """Bool (H, W): the engine's rule (non-zero in any colour channel)."""
    try:
        return normalize_mask(read_image(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def read_sketch(path) -> np.ndarray:
    """float (H, W) in [0, 1]: the engine's rule (scaled by the file's dtype)."""
    try:
        return normalize_sketch(read_image(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def read_pose(path) -> np.ndarray:
    from napari_ilat.engine.skeleton import KEYPOINT_NAMES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if isinstance(data, dict) and "keypoints" in data:
        data = data["keypoints"]
    if isinstance(data, dict):
        pose = np.tile(np.array([-1.0, -1.0, 0.0]), (len(KEYPOINT_NAMES), 1))
        for name, xy in data.items():
            if name not in KEYPOINT_NAMES:
                raise ValueError(f"{path}: unknown keypoint {name!r}; names are {', '.join(KEYPOINT_NAMES)}")
            xy = list(xy)
            pose[KEYPOINT_NAMES.index(name)] = (xy[0], xy[1], xy[2] if len(xy) > 2 else 1.0)
        return pose
    try:
        pose = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: keypoints must be numbers ({e})") from e
    return pose


METADATA_KEY = "napari-ilat"  # PNG text chunk keyword; TIFF: the ImageDescription holds the JSON


def write_image(path, image: np.ndarray, metadata: dict | None = None) -> None:
    """Write ``image``; ``metadata`` (a JSON-able dict) goes into a PNG text chunk
    ``napari-ilat`` or the TIFF ImageDescription (other formats: not stored)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and image.dtype != np.uint8:
        raise ValueError(f"{path}: JPEG holds 8-bit images only; write PNG or TIFF for {image.dtype}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    text = None if metadata is None else json.dumps(metadata, sort_keys=True)
    if suffix in (".tif", ".tiff"):
        import tifffile

        colour = image.ndim == 3 and image.shape[2] in (3, 4)
        tifffile.imwrite(path, image, description=text, photometric="rgb" if colour else "minisblack", metadata=None)
        return
    if suffix == ".png" and image.dtype != np.uint8 and image.ndim == 3 and image.shape[2] > 1:
        raise ValueError(f"{path}: PNG is written 8-bit for colour; write TIFF for {image.dtype} colour")
    import imageio.v3 as iio

    kwargs = {}
    if suffix == ".png" and text is not None:
        from PIL.PngImagePlugin import PngInfo

        kwargs["pnginfo"] = info = PngInfo()
        info.add_text(METADATA_KEY, text)
    iio.imwrite(path, image, **kwargs)


def read_metadata(path) -> dict | None:
    """The ``napari-ilat`` metadata :func:`write_image` stored in a PNG / TIFF, or None."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            text = tif.pages[0].description
    else:
        from PIL import Image

        with Image.open(path) as im:
            text = getattr(im, "text", {}).get(METADATA_KEY)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


# --------------------------------------------------------------------------- progress


class TokenProgress:
    """tqdm's bar of generated tokens on stderr (none when ``quiet`` or not a terminal), as
    an edit() ``progress`` callback; :meth:`close` ends it with a one-line message."""

    def __init__(self, label: str, quiet: bool = False, stream=None):
        from tqdm import tqdm

        self.label, self.quiet = label, quiet
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        # disable=None: tqdm draws only on a terminal
        self.bar = tqdm(
            desc=label, unit="tok", file=self.stream, leave=False, disable=True if quiet else None, mininterval=0.1
        )

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.reset(total=total)
        self.bar.update(done - self.bar.n)

    def close(self, message: str) -> None:
        self.bar.close()
        if not self.quiet:
            print(f"{self.label}: {message}", file=self.stream, flush=True)


# --------------------------------------------------------------------------- run


def _match(folder: Path, stem: str, suffixes) -> Path | None:
    for p in sorted(folder.iterdir()):
        if p.stem == stem and p.suffix.lower() in suffixes:
            return p
    return None


def _jobs(args) -> list[tuple[Path, Path, Path | None, Path | None, Path]]:
    image, mask, out = Path(args.image), Path(args.mask), Path(args.output)
    pose = Path(args.pose) if args.pose else None
    sketch = Path(args.sketch) if args.sketch else None
    if not image.exists():
        raise FileNotFoundError(f"{image} not found")
    if not image.is_dir():
        if mask.is_dir() or (pose and pose.is_dir()) or (sketch and sketch.is_dir()):
            raise ValueError("IMAGE is a file, so --mask/--pose/--sketch must be files too")
        if out.is_dir() or not out.suffix:
            out = out / f"{image.stem}.png"  # an existing folder (or a name without suffix)
        return [(image, mask, pose, sketch, out)]
    if not mask.is_dir():
        raise ValueError(f"IMAGE is a folder, so --mask must be a folder with the same file names ({mask} is not)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"IMAGE is a folder, so -o must be a folder ({out} is a file)")
    jobs = []
    for img in sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        m = _match(mask, img.stem, IMAGE_SUFFIXES)
        if m is None:
            raise FileNotFoundError(f"no mask for {img.name} in {mask}/ (expected {img.stem}.png or similar)")
        p = s = None
        if pose is not None:
            p = _match(pose, img.stem, (".json",)) if pose.is_dir() else pose
            if p is None:
                raise FileNotFoundError(f"no pose for {img.name} in {pose}/ (expected {img.stem}.json)")
        if sketch is not None:
            s = _match(sketch, img.stem, IMAGE_SUFFIXES) if sketch.is_dir() else sketch
            if s is None:
                raise FileNotFoundError(f"no sketch for {img.name} in {sketch}/")
        jobs.append((img, m, p, s, out / img.name))
    if not jobs:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image}/")
    return jobs


def output_paths(out: Path, samples: int) -> list[Path]:
    if samples == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(samples)]


def run(args) -> int:
    from napari_ilat.engine.editing import edit_with_info

    if args.samples < 1:
        raise ValueError("--samples must be >= 1")
    jobs = _jobs(args)
    model = args.model
    if model is not None and (Path(model).suffix == ".json" or Path(model).exists()):
        from napari_ilat.engine.model import load_model

        model = load_model(model)  # once, not per image
    n = len(jobs)
    failed = []
    for i, (img_p, mask_p, pose_p, sketch_p, out_p) in enumerate(jobs, 1):
        label = f"[{i}/{n}] {img_p.name}" if n > 1 else img_p.name
        bar = TokenProgress(label, quiet=args.quiet)
        try:
            result = edit_with_info(
                read_image(img_p),
                read_mask(mask_p),
                None if pose_p is None else read_pose(pose_p),
                None if sketch_p is None else read_sketch(sketch_p),
                model=model,
                mode=args.mode,
                samples=args.samples,
                seed=args.seed,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                greedy=args.greedy,
                device=args.device,
                feather=args.feather,
                progress=bar,
            )
            out = result.image
            meta = {
                "seed": result.seed,
                "model": result.model,
                "mode": result.mode,
                "samples": result.samples,
                "source": img_p.name,
                "mask": mask_p.name,
                "temperature": args.temperature,
                "top_k": args.top_k,
                "top_p": args.top_p,
                "greedy": args.greedy,
                "feather": args.feather,
            }
            outs = output_paths(out_p, args.samples)
            for k, path in enumerate(outs):
                write_image(path, out[k] if args.samples > 1 else out, {**meta, "candidate": k})
        except (ValueError, FileNotFoundError) as e:
            if n == 1:
                raise ValueError(f"{img_p}: {e}") from e
            bar.close(f"skipped: {e}")
            failed.append(img_p.name)
            continue
        shown = str(outs[0]) if len(outs) == 1 else f"{outs[0]} .. {outs[-1].name}"
        bar.close(f"wrote {shown} (seed {result.seed}, {time.perf_counter() - bar.t0:.1f} s)")
    if failed:
        print(f"napari-ilat edit: {len(failed)} of {n} images failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
