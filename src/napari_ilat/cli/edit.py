"""``napari-ilat edit``: edit one image, or a folder of images, from the command line.

    napari-ilat edit photo.png --mask mask.png -o edited.png
    napari-ilat edit scene.png --mask mask.png --pose pose.json --samples 4 --seed 0 -o out.png
    napari-ilat edit images/ --mask masks/ [--pose poses/] [--sketch sketches/] -o results/

Folder mode: IMAGE, MASK (and POSE / SKETCH when given as folders) hold files with the same
stem (``a.png`` + ``a.tif`` mask + ``a.json`` pose); OUT is a folder. With ``--samples N``
> 1 the candidates are written as ``OUT-STEM_0.png`` ... ``_N-1``.

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

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def add_arguments(p) -> None:
    p.add_argument("image", help="image file, or a folder of images")
    p.add_argument("--mask", required=True,
                   help="mask image (non-zero = regenerate), or a folder with the same file names")
    p.add_argument("--pose", help="pose keypoints JSON (or a folder of STEM.json)")
    p.add_argument("--sketch", help="stroke image (white strokes on black), or a folder")
    p.add_argument("--model", help="bundled model name or path to NAME.json (default: 'pose' with --pose, else 'natural')")
    p.add_argument("--mode", default="ilat", choices=["ilat", "ilat*", "taming"])
    p.add_argument("--samples", type=int, default=1, help="number of candidates (default 1)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed = same result)")
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
    m = read_image(path)
    if m.ndim == 3:
        m = m[..., :3].any(-1) if m.shape[2] in (3, 4) else m.any(-1)
    return m != 0


def read_sketch(path) -> np.ndarray:
    s = read_image(path)
    if s.ndim == 3:
        s = s[..., :3].mean(-1) if s.shape[2] in (3, 4) else s[..., 0]
    s = s.astype(np.float64)
    hi = 255.0 if s.max() > 1 else 1.0
    if s.max() > 255:
        hi = 65535.0
    return np.clip(s / hi, 0, 1)


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


def write_image(path, image: np.ndarray) -> None:
    import skimage.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg") and image.dtype != np.uint8:
        raise ValueError(f"{path}: JPEG holds 8-bit images only; write PNG or TIFF for {image.dtype}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    skimage.io.imsave(str(path), image, check_contrast=False)


# --------------------------------------------------------------------------- progress


class TextProgress:
    """A one-line progress display on stderr (tqdm is not a dependency)."""

    def __init__(self, label: str, quiet: bool = False, stream=None):
        self.label, self.quiet = label, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or not self.tty:
            return
        now = time.perf_counter()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        fill = int(width * done / max(total, 1))
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} tokens")
        self.stream.flush()

    def close(self, message: str) -> None:
        if self.quiet:
            return
        end = "\r" if self.tty else ""
        self.stream.write(f"{end}{self.label}: {message}" + " " * 20 + "\n")
        self.stream.flush()


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
    from napari_ilat.engine.editing import edit

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
        bar = TextProgress(label, quiet=args.quiet)
        try:
            out = edit(
                read_image(img_p), read_mask(mask_p),
                None if pose_p is None else read_pose(pose_p),
                None if sketch_p is None else read_sketch(sketch_p),
                model=model, mode=args.mode, samples=args.samples, seed=args.seed,
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                greedy=args.greedy, device=args.device, feather=args.feather, progress=bar,
            )
            outs = output_paths(out_p, args.samples)
            for k, path in enumerate(outs):
                write_image(path, out[k] if args.samples > 1 else out)
        except (ValueError, FileNotFoundError) as e:
            if n == 1:
                raise ValueError(f"{img_p}: {e}") from e
            bar.close(f"skipped: {e}")
            failed.append(img_p.name)
            continue
        shown = str(outs[0]) if len(outs) == 1 else f"{outs[0]} .. {outs[-1].name}"
        bar.close(f"wrote {shown} ({time.perf_counter() - bar.t0:.1f} s)")
    if failed:
        print(f"napari-ilat edit: {len(failed)} of {n} images failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
