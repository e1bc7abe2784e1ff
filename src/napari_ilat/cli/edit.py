"""``napari-ilat edit``: edit one image, or a folder of images, from the command line.

    napari-ilat edit photo.png --mask mask.png -o edited.png
    napari-ilat edit scene.png --mask mask.png --pose pose.json --samples 4 --seed 0 -o out.png
    napari-ilat edit images/ --mask masks/ [--pose poses/] [--sketch sketches/] -o results/
    napari-ilat edit frames/ --mask mask.png -o results/     # one mask for every frame
    napari-ilat edit movie.tif --mask mask.png --every-slice -o edited.tif   # every slice of a TIFF stack

Folder mode: IMAGE, and MASK / POSE / SKETCH when given as folders, hold files with the same
stem (``a.png`` + ``a.tif`` mask + ``a.json``, or OpenPose's ``a_keypoints.json``, pose); a
MASK / POSE / SKETCH given as a file is used for every image (one mask for a series of frames
of one size; the file is not edited itself when it lies in IMAGE); OUT is a folder. An image
whose mask (pose, sketch) is missing, or whose output cannot be written, is reported and
skipped; the others are processed (exit code 1). With ``--samples N`` > 1 the candidates are
written as ``OUT-STEM_0.png`` ... ``_N-1``; candidate k is the single edit with ``--seed S+k``.

Never lost, never silently changed: no output may be one of the input files unless
``--overwrite`` is given (then it is replaced atomically, after the edit); outputs are PNG or
TIFF (lossless; 16-bit images stay 16-bit), JPEG only with ``--lossy`` (it changes every
pixel, the unmasked ones too); GIF and unknown suffixes are refused. In folder mode an
output keeps its input's name, except a lossy or unsupported suffix, which becomes ``.png``
(said on the output line) unless ``--lossy`` keeps JPEG.

Without ``--seed`` a seed is drawn for each image (by the engine, :func:`napari_ilat.engine.
editing.draw_seed`); it is printed and written into the output's metadata (PNG text chunk /
TIFF ImageDescription ``napari-ilat``: JSON with seed, model, mode, ...), so every result can
be reproduced with ``--seed``. Mask and sketch files are normalised by the engine's rules
(:mod:`napari_ilat.engine.inputs`: a mask is non-zero; a sketch is scaled by its dtype),
except that a JPEG mask is painted from half its brightest value (:func:`jpeg_mask`).

Pose JSON: the formats :func:`napari_ilat.engine.pose_json.read_pose` reads. No Qt, no napari.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_ilat.engine.defaults import DEFAULT_GUIDANCE, DEFAULT_TOP_K, PALETTE_SUPPORT
from napari_ilat.engine.inputs import grow_mask, label_mask, normalize_mask, normalize_sketch
from napari_ilat.engine.modes import MODE_NAMES
from napari_ilat.engine.pose_json import read_pose
from napari_ilat.engine.pose_mask import FIGURE_SCALE_BAND

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: What an output may be: lossless, and JPEG only with --lossy.
LOSSLESS_SUFFIXES = (".png", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")


def add_arguments(p) -> None:
    p.add_argument("image", help="image file, or a folder of images")
    p.add_argument(
        "--mask",
        help="mask image (non-zero = regenerate; a JPEG from half its maximum, past its compression noise), "
        "or a folder with the same file names (a file with a folder IMAGE: used for every image)",
    )
    p.add_argument(
        "--mask-from-pose",
        metavar="OLD.json",
        help="the pose before the edit: mask the limbs whose keypoints moved between it and --pose, at their "
        "old and new places (as the widget's auto mask; with --mask, both); one IMAGE file",
    )
    p.add_argument(
        "--limb-radius",
        type=float,
        default=0.0,
        help="--mask-from-pose: the capsules' half-width in pixels (default 0: from the figure, "
        "0.25 x its median bone + 2)",
    )
    p.add_argument(
        "--label",
        type=_labels_arg,
        help="the mask is a label image (a segmentation: one value per object): regenerate only where it "
        "holds this label (or these: 3,7,12), not every non-zero one",
    )
    p.add_argument(
        "--grow",
        type=float,
        default=0.0,
        help="grow the mask by this many pixels, so it also covers an object's soft edge and shadow "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--pose",
        help="pose keypoints JSON: ours, an OpenPose --write_json file or COCO-17 keypoints (or a folder of STEM.json)",
    )
    p.add_argument("--sketch", help="stroke image (white strokes on black), or a folder")
    p.add_argument(
        "--model",
        help="bundled model name or path to NAME.json (default: 'pose' with --pose, else 'natural'; "
        "with --mode imagebart the bundled ImageBART model, 'natural-imagebart')",
    )
    p.add_argument(
        "--mode",
        default=None,
        choices=MODE_NAMES,
        help="editing mode (default: the model's own: imagebart for an ImageBART model, else ilat)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=1,
        help="number of candidates, 1 to 64, generated one at a time; candidate k = the edit with --seed S+k "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed, 0 to 2**63-1 (same seed = same result; default: drawn, printed and stored in the output)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature > 0 (default: %(default)s)")
    p.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help="sample from the K most likely codes (default: %(default)s; 0 = the whole distribution)",
    )
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (default: off)")
    p.add_argument(
        "--guidance",
        type=float,
        default=DEFAULT_GUIDANCE,
        help="classifier-free guidance on --pose / --sketch, >= 0: 1 = off, larger follows the guidance more "
        "closely at twice the sampling work, 0 ignores it (default: %(default)s)",
    )
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's, every core; on a machine busy with other work 1 is "
        "often fastest)",
    )
    p.add_argument(
        "--resolution",
        default="auto",
        choices=("auto", "native", "resize"),
        help="a mask larger than the model's window: 'native' generates it at the model's pixel scale with "
        "sliding windows (time grows with the masked area), 'resize' fits it into one window and scales the "
        "result back (faster, coarser); 'auto' is 'native', except a pose edit whose figure is over "
        f"{FIGURE_SCALE_BAND}x larger or smaller than the pose model's training figures: that is edited at the "
        "figure's scale "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--blend",
        default="seamless",
        choices=("seamless", "alpha"),
        help="'seamless' shifts the generated content smoothly to meet the image at the mask's edge (keeping "
        "its detail); 'alpha' pastes it as decoded, cross-fading over the feather band (default: %(default)s)",
    )
    p.add_argument(
        "--palette",
        default="auto",
        choices=("auto", "on", "off"),
        help="the context palette: draw only codes whose colour the pixels around the mask have (in a colour "
        f"image at least {PALETTE_SUPPORT * 100:.0f}%% of them). 'auto' uses it "
        "without --pose / --sketch, with a model that carries a colour table (the bundled ones do) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--feather", type=float, default=2.0, help="blend band width in px outside the mask (default: %(default)s)"
    )
    p.add_argument("-o", "--output", required=True, help="output file (one image) or folder (folder input)")
    p.add_argument("--overwrite", action="store_true", help="allow an output to replace an input file")
    p.add_argument(
        "--lossy", action="store_true", help="allow JPEG output (it changes every pixel, the unmasked ones too)"
    )
    p.add_argument(
        "--every-slice",
        action="store_true",
        help="IMAGE is a TIFF stack (a time-lapse, a z-stack): edit every 2D slice, each as its own edit with "
        "--seed S+j, with one 2D mask for all or a TIFF stack of masks of the same shape; writes a TIFF stack "
        "of the same shape and axes",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _labels_arg(text: str) -> list[int]:
    """--label 3 or --label 3,7,12: non-zero integers."""
    try:
        labels = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a label or labels like 3,7,12, got {text!r}") from None
    if 0 in labels:
        raise argparse.ArgumentTypeError("labels are objects, not 0 (the background)")
    return labels


# --------------------------------------------------------------------------- I/O


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, None for anything else."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _tiff_grey_alpha(path: Path) -> bool:
    """Whether a TIFF's first page is grey plus one alpha sample (not an unspecified one)."""
    import tifffile

    alpha = (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        extra = tuple(page.extrasamples)
        return page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and len(extra) == 1 and extra[0] in alpha


def split_grey_alpha(path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(grey, alpha) for a grey+alpha PNG (colour type 4, the only 2-channel PNG) or TIFF
    (grey with one extra sample), else (image, None). The engine refuses (H, W, 2) arrays,
    which could as well be a two-channel stack; in these files the second channel is alpha
    for certain, so it is set aside here and put back unchanged, as the engine does for RGBA."""
    path = Path(path)
    if not (image.ndim == 3 and image.shape[2] == 2):
        return image, None
    header = _png_header(path)
    if (header is not None and header[1] == 4) or (header is None and _is_tiff(path) and _tiff_grey_alpha(path)):
        return image[..., 0], image[..., 1]
    return image, None


def _read_tiff(path: Path) -> np.ndarray:
    """A TIFF's first series, its colour samples last; a stack is refused (see
    :func:`read_stack`). Read with tifffile rather than skimage.io.imread, which moves a
    leading axis of length 3 or 4 to the end: a 3- or 4-page greyscale stack came back as one
    RGB(A) image, was edited as colour (its slices mixed) and written as one RGB page."""
    image, axes = _read_tiff_axes(path)
    stack = [(a, n) for a, n in zip(axes, image.shape) if a not in "YXS" and n > 1]
    if stack:
        what = " x ".join(f"{n} ({a})" for a, n in stack)
        raise ValueError(
            f"{path} holds a stack of {what} 2D images (axes {axes}, shape {image.shape}); edit every slice "
            "with --every-slice, or open the stack in napari, where the widget edits the displayed slice "
            "or every slice"
        )
    return image.reshape([n for a, n in zip(axes, image.shape) if a in "YXS"])


def read_stack(path) -> tuple[np.ndarray, str]:
    """(image, axes) of a TIFF stack for --every-slice: the leading axes (length > 1) in the
    file's order, then Y, X (and S, colour samples, last); e.g. ``"TZYX"``, ``"QYXS"``."""
    path = Path(path)
    if not _is_tiff(path):
        raise ValueError(f"{path}: --every-slice edits TIFF stacks; {path.suffix or 'this file'} holds one image")
    image, axes = _read_tiff_axes(path)
    keep = [i for i, (a, n) in enumerate(zip(axes, image.shape)) if a in "YXS" or n > 1]
    axes = "".join(axes[i] for i in keep)
    image = image.reshape([image.shape[i] for i in keep])
    if len(axes.replace("S", "")) < 3:
        raise ValueError(f"{path} holds one 2D image (axes {axes}), not a stack: edit it without --every-slice")
    return image, axes


def _read_tiff_axes(path: Path) -> tuple[np.ndarray, str]:
    """A TIFF's first series as shown (palette and white-is-zero resolved), colour samples
    last, with its tifffile axes."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            image, axes, page = series.asarray(), series.axes, series.keyframe
            photometric, colormap, bits = page.photometric, page.colormap, page.bitspersample
    except Exception as e:
        raise ValueError(
            f"cannot read {path} as an image: the file is corrupt or not a TIFF [{type(e).__name__}]"
        ) from e
    # what the pixels look like, as an image viewer shows them (and as Pillow reads them)
    if photometric == tifffile.PHOTOMETRIC.PALETTE and colormap is not None:
        # indices -> RGB; 8-bit colours (stored as v * 256 or v * 257) come back as 8 bits, as
        # Pillow reads them and as a palette PNG is read
        image = np.moveaxis(colormap[:, image], 0, -1)  # colormap: (3, 2**bits) uint16
        axes += "S"
        if np.all(colormap % 256 == 0) or np.all(colormap % 257 == 0):
            image = (image >> 8).astype(np.uint8)
    elif photometric == tifffile.PHOTOMETRIC.MINISWHITE:  # 0 = white: flipped to 0 = black
        if image.dtype == bool:
            image = ~image
        elif image.dtype.kind in "ui":
            image = (2**bits - 1 - image.astype(np.int64)).astype(image.dtype)
        else:
            raise ValueError(f"{path}: a float TIFF stored white-is-zero cannot be read; save it black-is-zero")
    if "S" in axes:  # samples per pixel (RGB, RGBA, grey+alpha), last as every other reader gives them
        image, axes = np.moveaxis(image, axes.index("S"), -1), axes.replace("S", "") + "S"
    return image, axes


# EXIF orientation (tag 274) -> how the stored pixels are turned to be shown upright, as
# PIL.ImageOps.exif_transpose does it (2: mirrored, 3: upside down, 6: turned for a phone
# held upright, ...)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation of a JPEG / PNG / BMP file (1 = as stored, also when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if value in _ORIENT else 1


def read_image(path) -> np.ndarray:
    """The file's pixels at their stored depth (a 16-bit PNG stays 16-bit), upright: a photo
    whose EXIF orientation says it is shown turned (phones store them so) is turned as every
    viewer shows it, and so written (the output carries no orientation tag)."""
    path = Path(path)
    image = _read_pixels(path)
    if _is_tiff(path):
        return image
    turn = _ORIENT.get(_exif_orientation(path))
    return image if turn is None else np.ascontiguousarray(turn(image))


def _read_pixels(path: Path) -> np.ndarray:
    import skimage.io

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    header = _png_header(path)
    if header is not None and header[0] == 16 and header[1] in (2, 4, 6):  # 16-bit RGB, grey+alpha, RGBA
        # Pillow (skimage / imageio's PNG reader) reads these as 8-bit; imagecodecs does not
        try:
            import imagecodecs
        except ImportError:
            raise ValueError(
                f"{path} is a 16-bit colour PNG, which can only be read at 8 bits here (the low "
                "byte would be lost); `pip install imagecodecs` to read it, or convert it to 16-bit TIFF"
            ) from None
        try:
            return np.asarray(imagecodecs.png_decode(path.read_bytes()))
        except Exception as e:
            raise ValueError(f"cannot read {path} as an image: the file is corrupt ({e})") from e
    if _is_tiff(path):
        return _read_tiff(path)
    try:
        return np.asarray(skimage.io.imread(str(path)))
    except Exception as e:  # corrupt, truncated or not an image: imageio's advice to install
        # plugins would not help, so it is not passed on
        raise ValueError(
            f"cannot read {path} as an image: the file is corrupt, truncated or not an image "
            f"({', '.join(IMAGE_SUFFIXES)}) [{type(e).__name__}]"
        ) from e


def read_mask(path, label=None, grow: float = 0) -> np.ndarray:
    """Bool (H, W): the engine's rule (non-zero in any colour channel), except for a JPEG
    mask (see :func:`jpeg_mask`); with ``label``, where the label image holds that label;
    grown by ``grow`` pixels."""
    try:
        if label is not None and Path(path).suffix.lower() in LOSSY_SUFFIXES:
            raise ValueError("--label needs a PNG or TIFF label image (JPEG compression changes the labels)")
        mask = read_image(path)
        if label is not None:
            return grow_mask(label_mask(mask, label), grow)
        if Path(path).suffix.lower() in LOSSY_SUFFIXES:
            mask = jpeg_mask(mask, Path(path).name)
        return grow_mask(normalize_mask(mask), grow)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def jpeg_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """A mask read from a JPEG: painted where its brightest channel reaches half the file's
    maximum (>= 128 for a 0 / 255 mask; >= 1 for a 0 / 1 label image), with a warning when
    that leaves pixels out. JPEG compression spreads faint noise up to a block (8 px) around
    every stroke, and the engine's non-zero rule would regenerate it: about a tenth more
    pixels than painted, measured on brush masks saved at quality 75-95."""
    a = mask.max(axis=-1) if mask.ndim == 3 else mask
    top = int(a.max())
    level = max((top + 1) // 2, 1)
    painted = a >= level
    noise = int(np.count_nonzero(a)) - int(np.count_nonzero(painted))
    if noise:
        warnings.warn(
            f"{name}: JPEG mask read as painted where it is >= {level} of {top} ({noise} faint "
            "pixels, compression noise around the strokes, left out); save masks as PNG to be exact",
            stacklevel=2,
        )
    return painted


def read_sketch(path) -> np.ndarray:
    """float (H, W) in [0, 1]: the engine's rule (scaled by the file's dtype)."""
    try:
        return normalize_sketch(read_image(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


METADATA_KEY = "napari-ilat"  # PNG text chunk keyword; TIFF: the ImageDescription holds the JSON


def check_output(path, image: np.ndarray, lossy: bool = False) -> str | None:
    """Raise ``ValueError`` when ``path``'s format cannot hold ``image`` without changing
    pixels (or is JPEG without ``lossy``); returns a note to print (JPEG's loss) or None."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        raise ValueError(f"{path}: GIF holds 256 colours, so it would change unmasked pixels; write .png or .tif")
    if suffix in LOSSY_SUFFIXES:
        if not lossy:
            raise ValueError(
                f"{path}: JPEG compression changes every pixel, the unmasked ones too; write .png or .tif, "
                "or pass --lossy to accept that"
            )
        if image.dtype != np.uint8 or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise ValueError(f"{path}: JPEG holds 8-bit grey or RGB only; write .png or .tif for this image")
        return "JPEG, lossy: unmasked pixels changed too"
    if suffix not in LOSSLESS_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported output format {suffix or '(no suffix)'!r}; write .png or .tif "
            "(lossless), or .jpg with --lossy"
        )
    if suffix == ".png" and image.dtype not in (np.uint8, np.uint16, np.bool_):
        raise ValueError(f"{path}: PNG holds 8- or 16-bit unsigned integers; write .tif for {image.dtype}")
    return None


def _png16(image: np.ndarray, text: str | None) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB, RGBA): Pillow writes 16-bit greyscale only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    a = image if image.ndim == 3 else image[..., None]
    h, w, c = a.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(a.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
    if text is not None:
        out += chunk(b"tEXt", METADATA_KEY.encode("latin-1") + b"\0" + text.encode("latin-1", "replace"))
    return out + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_image(path, image: np.ndarray, metadata: dict | None = None, axes: str | None = None) -> None:
    """Write ``image``; ``metadata`` (a JSON-able dict) goes into a PNG text chunk
    ``napari-ilat`` or the TIFF ImageDescription (other formats: not stored). ``axes``: a
    stack (:func:`read_stack`'s axes), written as a TIFF of that shape and axes. The file is
    written beside ``path`` and then moved over it, so a failed write never leaves half a
    file (nor destroys the file it replaces)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"cannot write {path}: {_file_ancestor(path)} is a file, not a folder") from None
    suffix = path.suffix.lower()
    if suffix in LOSSY_SUFFIXES and image.dtype != np.uint8:
        raise ValueError(f"{path}: JPEG holds 8-bit images only; write PNG or TIFF for {image.dtype}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    text = None if metadata is None else json.dumps(metadata, sort_keys=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            # one page of C samples; left to itself tifffile wrote (H, W, 1) and grey+alpha
            # (H, W, 2) as H pages of W x C
            if axes is None and image.ndim == 3 and image.shape[2] == 1:
                image = image[..., 0]
            colour = image.ndim == 3 if axes is None else axes.endswith("S")
            channels = image.shape[-1] if colour else 1
            kw = dict(photometric="rgb" if channels in (3, 4) else "minisblack")
            if channels > 1:
                kw.update(planarconfig="contig", extrasamples=["unassalpha"] if channels in (2, 4) else None)
            # a stack keeps its shape and axes (tifffile's shaped description, after ours)
            shaped = None if axes is None else {"axes": axes}
            tifffile.imwrite(tmp, image, description=text, metadata=shaped, **kw)
        elif suffix == ".png" and image.dtype == np.uint16:
            tmp.write_bytes(_png16(image, text))
        else:
            import imageio.v3 as iio

            kwargs = {}
            if suffix == ".png" and text is not None:
                from PIL.PngImagePlugin import PngInfo

                kwargs["pnginfo"] = info = PngInfo()
                info.add_text(METADATA_KEY, text)
            iio.imwrite(tmp, image, extension=suffix, **kwargs)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _file_ancestor(path: Path) -> Path | None:
    """The first ancestor of ``path`` that exists as a file (so nothing can be written there)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


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

    def __init__(self, label: str, quiet: bool = False, stream=None, unit: str = "tok"):
        from tqdm import tqdm

        self.label, self.quiet = label, quiet
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        # disable=None: tqdm draws only on a terminal
        self.bar = tqdm(
            desc=label, unit=unit, file=self.stream, leave=False, disable=True if quiet else None, mininterval=0.1
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


@dataclass
class Job:
    image: Path
    mask: Path | None
    pose: Path | None
    sketch: Path | None
    out: Path
    problem: str | None = None  # folder mode: why this image is skipped
    note: str | None = None  # said on the output line (e.g. a changed suffix)
    old_pose: Path | None = None  # --mask-from-pose: the pose before the edit


def _folder_output(out: Path, img: Path, lossy: bool) -> tuple[Path, str | None]:
    """OUT/NAME, keeping the input's suffix when it is lossless (or JPEG with --lossy)."""
    suffix = img.suffix.lower()
    if suffix in LOSSLESS_SUFFIXES or (lossy and suffix in LOSSY_SUFFIXES):
        return out / img.name, None
    why = "JPEG is lossy; --lossy keeps it" if suffix in LOSSY_SUFFIXES else f"{suffix} is not written"
    return out / f"{img.stem}.png", f"written as PNG ({why})"


def _jobs(args) -> list[Job]:
    image, out = Path(args.image), Path(args.output)
    mask = Path(args.mask) if args.mask else None
    pose = Path(args.pose) if args.pose else None
    sketch = Path(args.sketch) if args.sketch else None
    if not image.exists():
        raise FileNotFoundError(f"{image} not found")
    blocker = _file_ancestor(out)
    if blocker is not None:
        raise ValueError(f"cannot write {out}: {blocker} is a file, not a folder")
    if not image.is_dir():
        if (mask and mask.is_dir()) or (pose and pose.is_dir()) or (sketch and sketch.is_dir()):
            raise ValueError("IMAGE is a file, so --mask/--pose/--sketch must be files too")
        if out.is_dir() or not out.suffix:
            out = out / f"{image.stem}.png"  # an existing folder (or a name without suffix)
        old_pose = Path(args.mask_from_pose) if args.mask_from_pose else None
        return [Job(image, mask, pose, sketch, out, old_pose=old_pose)]
    for what, path in (("--mask", mask), ("--pose", pose), ("--sketch", sketch)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{what} {path} not found (a file used for every image, or a folder)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"IMAGE is a folder, so -o must be a folder ({out} is a file)")
    # a file given for every image may sit in the image folder: it is an input, not an image
    shared = {p.resolve() for p in (mask, pose, sketch) if p is not None and p.is_file()}
    jobs = []
    for img in sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if img.resolve() in shared:
            continue
        target, note = _folder_output(out, img, args.lossy)
        job = Job(img, _match(mask, img.stem, IMAGE_SUFFIXES) if mask.is_dir() else mask, None, None, target, note=note)
        if job.mask is None:
            job.problem = f"no mask for {img.name} in {mask}/ (expected {img.stem}.png or similar)"
        if pose is not None:
            if pose.is_dir():  # STEM.json, or STEM_keypoints.json as OpenPose names its output
                job.pose = _match(pose, img.stem, (".json",)) or _match(pose, f"{img.stem}_keypoints", (".json",))
            else:
                job.pose = pose
            if job.pose is None:
                job.problem = job.problem or (
                    f"no pose for {img.name} in {pose}/ (expected {img.stem}.json or {img.stem}_keypoints.json)"
                )
        if sketch is not None:
            job.sketch = _match(sketch, img.stem, IMAGE_SUFFIXES) if sketch.is_dir() else sketch
            if job.sketch is None:
                job.problem = job.problem or f"no sketch for {img.name} in {sketch}/"
        jobs.append(job)
    if not jobs:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image}/")
    return jobs


def subfolder_note(folder: Path) -> str | None:
    """A line saying that images in subfolders of ``folder`` are not edited (folder mode
    takes the top level only), or None when it has none."""
    nested = {}
    for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
        n = sum(1 for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if n:
            nested[sub.name] = n
    if not nested:
        return None
    listed = ", ".join(f"{name}/ ({n})" for name, n in list(nested.items())[:5]) + (", ..." if len(nested) > 5 else "")
    return f"note: the images in subfolders of {folder}/ are not edited: {listed}; run once per folder"


def output_paths(out: Path, samples: int) -> list[Path]:
    if samples == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(samples)]


def _check_no_input_is_overwritten(jobs: list[Job], samples: int) -> None:
    """Raise when an output would replace an input file (image, mask, pose or sketch)."""
    inputs = {}
    for job in jobs:
        for path in (job.image, job.mask, job.pose, job.sketch, job.old_pose):
            if path is not None and path.exists():
                inputs[path.resolve()] = path
    for job in jobs:
        for out in output_paths(job.out, samples):
            hit = inputs.get(out.resolve())
            if hit is not None:
                where = " (-o is an input folder)" if len(jobs) > 1 else ""
                raise ValueError(
                    f"the output {out} would overwrite the input {hit}{where}; choose another output, "
                    "or pass --overwrite to replace it"
                )


def _check_mask_arguments(args) -> None:
    """--mask and / or --mask-from-pose (with --pose, one IMAGE file, one plane)."""
    if args.mask is None and args.mask_from_pose is None:
        raise ValueError(
            "say what to regenerate: --mask MASK.png, or --mask-from-pose OLD.json with --pose NEW.json "
            "(the limbs that moved between the two poses)"
        )
    if args.mask_from_pose is None:
        return
    if args.pose is None:
        raise ValueError("--mask-from-pose OLD.json masks what moved between OLD.json and --pose NEW.json: give --pose")
    if Path(args.image).is_dir() or args.every_slice:
        raise ValueError(
            "--mask-from-pose takes one IMAGE file and its displayed plane: for a folder or --every-slice, "
            "write the masks first (napari_ilat.moved_joint_mask) and pass them with --mask"
        )
    if args.label and args.mask is None:
        raise ValueError("--label picks labels of --mask's label image: give --mask too, or leave out --label")
    if not (np.isfinite(args.limb_radius) and args.limb_radius >= 0):
        raise ValueError(f"--limb-radius must be a number of pixels >= 0 (0: from the figure), got {args.limb_radius}")


def _job_mask(job: Job, args, shape, pose) -> np.ndarray:
    """The job's mask: --mask's, the limbs that moved since --mask-from-pose's pose, or both."""
    from napari_ilat.engine.pose_mask import moved_joint_mask

    mask = None if job.mask is None else read_mask(job.mask, args.label, args.grow)
    if job.old_pose is None:
        return mask
    old = read_pose(job.old_pose, shape)
    moved = moved_joint_mask(old, pose, shape[:2], radius=args.limb_radius or None, hidden_moved=False)
    if not moved.any():
        raise ValueError(f"no keypoint moved between {job.old_pose.name} and {job.pose.name}: nothing to regenerate")
    if args.grow:
        moved = grow_mask(moved, args.grow)
    if mask is None or mask.shape != moved.shape:  # (a mask of another size: edit() says so)
        return moved if mask is None else mask
    return mask | moved


def _warnings_text(caught) -> list[str]:
    return [str(w.message) for w in caught]


def _edit_options(args, model, mode: str, top_k) -> dict:
    """edit() / edit_stack() options from the command line."""
    return dict(
        model=model,
        mode=mode,
        seed=args.seed,
        temperature=args.temperature,
        top_k=top_k,
        top_p=args.top_p,
        greedy=args.greedy,
        guidance=args.guidance,
        device=args.device,
        feather=args.feather,
        resolution=args.resolution,
        blend=args.blend,
        palette=args.palette,
    )


def _record(args, result, top_k, job: Job) -> dict:
    """The metadata stored in an output: how it was made (the seed the one used)."""
    return {
        "seed": result.seed,
        "model": result.model,
        "mode": result.mode,
        "source": job.image.name,
        "mask": None if job.mask is None else job.mask.name,
        **({"mask_from_pose": job.old_pose.name, "limb_radius": args.limb_radius} if job.old_pose else {}),
        "temperature": args.temperature,
        "top_k": top_k,
        "top_p": args.top_p,
        "greedy": args.greedy,
        "guidance": result.guidance,
        "palette": args.palette,
        "palette_used": result.palette,
        "resolution": args.resolution,
        "scale": round(result.scale, 4),
        "feather": args.feather,
        **({"mask_label": args.label[0] if len(args.label) == 1 else args.label} if args.label else {}),
        **({"grow": args.grow} if args.grow else {}),
    }


def _stack_mask(path: Path, label=None, grow: float = 0) -> np.ndarray:
    """A mask for every slice: one 2D mask (any format, :func:`read_mask`), or a TIFF stack of
    masks with the image stack's leading shape (non-zero, or ``label``, = regenerate; each
    slice's grown by ``grow`` pixels)."""
    if _is_tiff(path):
        try:
            image, axes = read_stack(path)
        except ValueError:
            pass  # one 2D mask (or a file read_mask explains)
        else:
            try:
                if label is not None:
                    return grow_mask(label_mask(image, label), grow)
                return grow_mask((image != 0).any(-1) if axes.endswith("S") else image != 0, grow)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from e
    return read_mask(path, label, grow)


def _edit_every_slice(job: Job, args, model, mode: str, top_k, bar, label: str) -> str:
    """--every-slice: edit each 2D slice of the TIFF stack ``job.image`` (engine.stack), write a
    TIFF stack of the same shape and axes; returns what the output line shows."""
    from napari_ilat.engine.stack import edit_stack

    stack, axes = read_stack(job.image)
    out = job.out
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{out}: a stack is written as TIFF; name the output .tif")
    rgb = axes.endswith("S")
    lead = stack.shape[: len(axes) - (3 if rgb else 2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = edit_stack(
            stack,
            _stack_mask(job.mask, args.label, args.grow),
            None if job.pose is None else read_pose(job.pose, stack.shape[len(lead) :]),
            None if job.sketch is None else read_sketch(job.sketch),
            rgb=rgb,
            progress=bar,
            **_edit_options(args, model, mode, top_k),
        )
    for message in dict.fromkeys(_warnings_text(caught)):  # once, not once per slice
        print(f"{label}: warning: {message}", file=sys.stderr, flush=True)
    meta = _record(args, result, top_k, job)
    # slice j (C order over the leading axes): seed + j; None: nothing masked, copied
    meta.update(seeds=list(result.seeds), every_slice=True, axes=axes)
    write_image(out, result.image, meta, axes=axes)
    n = len(result.seeds)
    return (
        f"{out} (seeds {result.seed}..{result.seed + n - 1}: slice j = --seed {result.seed}+j; "
        f"{result.edited} of {n} slices edited, axes {axes}"
    )


def run(args) -> int:
    from napari_ilat.engine.editing import MAX_SAMPLES, edit_with_info, prepare_palette, scale_note

    if not 1 <= args.samples <= MAX_SAMPLES:
        raise ValueError(f"--samples must be from 1 to {MAX_SAMPLES} (run again with --seed S+{MAX_SAMPLES} for more)")
    if args.every_slice and args.samples != 1:
        raise ValueError("--every-slice makes one edit per slice (slice j with --seed S+j): leave out --samples")
    if not (np.isfinite(args.grow) and args.grow >= 0):
        raise ValueError(f"--grow must be a number of pixels >= 0, got {args.grow}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    _check_mask_arguments(args)
    jobs = _jobs(args)
    if not args.overwrite:
        _check_no_input_is_overwritten(jobs, args.samples)
    nested = subfolder_note(Path(args.image)) if Path(args.image).is_dir() else None
    if nested:
        print(f"napari-ilat edit: {nested}", file=sys.stderr, flush=True)
    top_k = args.top_k or None  # 0: the whole distribution
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    model = args.model
    if model is not None:
        from napari_ilat.engine.editing import cached_model

        model = cached_model(model)  # once, not per image (bundled names: the engine's cache)
    mode = args.mode or ("imagebart" if getattr(model, "kind", None) == "imagebart" else "ilat")
    if args.palette == "on":  # a model without a colour table: computed once, before the first image
        bar = TokenProgress("colour table", quiet=args.quiet, unit="code")
        if prepare_palette(model, mode, jobs[0].pose, jobs[0].sketch, "on", progress=bar):
            keep = f"`napari-ilat convert colours {args.model}`" if args.model else "`napari-ilat convert colours`"
            bar.close(
                f"the model carries none: each code's colour computed in {time.perf_counter() - bar.t0:.1f} s "
                f"(for this run only; {keep} stores it in the model)"
            )
        else:
            bar.bar.close()
    n = len(jobs)
    failed = []
    for i, job in enumerate(jobs, 1):
        img_p = job.image
        label = f"[{i}/{n}] {img_p.name}" if n > 1 else img_p.name
        bar = TokenProgress(label, quiet=args.quiet)
        try:
            if job.problem is not None:
                raise FileNotFoundError(job.problem)
            if args.every_slice:
                shown = _edit_every_slice(job, args, model, mode, top_k, bar, label)
                bar.close(f"wrote {shown}, {time.perf_counter() - bar.t0:.1f} s)")
                continue
            image = read_image(img_p)
            outs = output_paths(job.out, args.samples)
            lossy_note = check_output(outs[0], image, args.lossy)
            image, alpha = split_grey_alpha(img_p, image)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pose = None if job.pose is None else read_pose(job.pose, image.shape)
                result = edit_with_info(
                    image,
                    _job_mask(job, args, image.shape, pose),
                    pose,
                    None if job.sketch is None else read_sketch(job.sketch),
                    samples=args.samples,
                    progress=bar,
                    **_edit_options(args, model, mode, top_k),
                )
            for message in _warnings_text(caught):
                print(f"{label}: warning: {message}", file=sys.stderr, flush=True)
            out = result.image
            if alpha is not None:  # grey+alpha PNG or TIFF: its alpha back, unchanged
                out = np.stack([out, np.broadcast_to(alpha, out.shape)], -1)
            meta = {**_record(args, result, top_k, job), "samples": result.samples}
            for k, path in enumerate(outs):
                # "seed": the seed that makes this very file as a single edit (--seed S+k)
                extra = {"candidate": k, "seed": result.seeds[k], "first_seed": result.seed}
                write_image(path, out[k] if args.samples > 1 else out, {**meta, **extra})
        except (ValueError, FileNotFoundError, OSError) as e:
            message = str(e)
            if n == 1:
                raise ValueError(f"{img_p}: {message}") from e
            bar.close(f"skipped: {message}")
            failed.append(img_p.name)
            continue
        if len(outs) == 1:
            shown = f"{outs[0]} (seed {result.seed}"
        else:
            last = result.seeds[-1]
            shown = f"{outs[0]} .. {outs[-1].name} (seeds {result.seed}..{last}: candidate k = --seed {result.seed}+k"
        notes = "".join(f"; {x}" for x in (job.note, lossy_note, scale_note(result.scale)) if x)
        bar.close(f"wrote {shown}, {time.perf_counter() - bar.t0:.1f} s{notes})")
    if failed:
        print(f"napari-ilat edit: {len(failed)} of {n} images failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
