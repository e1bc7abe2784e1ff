"""Issue 17, command-line side: `napari-ilat edit` never writes over an input, never changes
unmasked pixels without saying so (--lossy), keeps 16 bits, and answers bad input with a
message (exit code 2) or, in folder mode, reports and skips the one image."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.io
import tifffile

from napari_ilat.cli import main
from napari_ilat.cli.edit import read_image, read_metadata, read_pose, write_image

H, W = 40, 48


@pytest.fixture
def d(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[10:22, 12:30] = 255
    skimage.io.imsave(tmp_path / "img.png", img, check_contrast=False)
    skimage.io.imsave(tmp_path / "mask.png", mask, check_contrast=False)
    return tmp_path


def edit_args(d, model, *extra, image="img.png", out="out.png"):
    out = [] if out is None else ["-o", str(d / out)]
    return ["edit", str(d / image), "--mask", str(d / "mask.png"), "--model", str(model), "-q", *out, *extra]


def _far(mask):
    from scipy import ndimage

    return ndimage.distance_transform_edt(mask == 0) > 3


# ---------------------------------------------------------------- never overwrite an input


def test_output_onto_the_input_image_is_refused_without_overwrite(d, tiny_model_path, capsys):
    before = (d / "img.png").read_bytes()
    assert main(edit_args(d, tiny_model_path, "--seed", "0", out="img.png")) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert (d / "img.png").read_bytes() == before
    assert main(edit_args(d, tiny_model_path, "--seed", "0", out="mask.png")) == 2  # the mask too
    assert main(edit_args(d, tiny_model_path, "--seed", "0", "--overwrite", out="img.png")) == 0
    assert (d / "img.png").read_bytes() != before
    assert not list(d.glob(".*partial*"))  # written beside, then moved over


def test_folder_output_into_the_input_folder_is_refused(d, tiny_model_path, capsys):
    (d / "imgs").mkdir()
    (d / "masks").mkdir()
    for stem in ("a", "b"):
        (d / "imgs" / f"{stem}.png").write_bytes((d / "img.png").read_bytes())
        (d / "masks" / f"{stem}.png").write_bytes((d / "mask.png").read_bytes())
    before = {p.name: p.read_bytes() for p in (d / "imgs").iterdir()}
    args = ["edit", str(d / "imgs"), "--mask", str(d / "masks"), "--model", str(tiny_model_path), "-q"]
    assert main([*args, "-o", str(d / "imgs")]) == 2
    assert "-o is an input folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (d / "imgs").iterdir()} == before


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "out, message",
    [
        ("x.gif", "GIF holds 256 colours"),
        ("x.xyz", "unsupported output format '.xyz'"),
        ("x.webp", "unsupported output format '.webp'"),
        ("x.jpg", "JPEG compression changes every pixel, the unmasked ones too"),
    ],
)
def test_lossy_or_unknown_output_formats_are_refused(d, tiny_model_path, capsys, out, message):
    assert main(edit_args(d, tiny_model_path, out=out)) == 2
    assert message in capsys.readouterr().err
    assert not (d / out).exists()


def test_jpeg_with_lossy_names_the_loss(d, tiny_model_path, capsys):
    argv = [a for a in edit_args(d, tiny_model_path, out="y.jpg") if a != "-q"]
    assert main([*argv, "--lossy", "--seed", "0"]) == 0
    assert "JPEG, lossy: unmasked pixels changed too" in capsys.readouterr().err


def test_16_bit_rgb_tiff_to_png_stays_16_bit(d, tiny_model_path):
    img = (np.random.default_rng(1).random((H, W, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(d / "img16.tif", img, photometric="rgb")
    assert main(edit_args(d, tiny_model_path, "--seed", "2", image="img16.tif", out="o16.png")) == 0
    out = read_image(d / "o16.png")
    assert out.dtype == np.uint16 and out.shape == img.shape
    far = _far(skimage.io.imread(d / "mask.png"))
    np.testing.assert_array_equal(out[far], img[far])
    assert read_metadata(d / "o16.png")["seed"] == 2
    # and a 16-bit colour PNG in: 16 bits out
    assert main(edit_args(d, tiny_model_path, "--seed", "2", image="o16.png", out="again.tif")) == 0
    again = tifffile.imread(d / "again.tif")
    assert again.dtype == np.uint16
    np.testing.assert_array_equal(again[far], img[far])


@pytest.mark.parametrize("shape", [(H, W), (H, W, 2), (H, W, 4)], ids=["grey", "grey-alpha", "rgba"])
def test_16_bit_png_roundtrip(tmp_path, shape):
    img = (np.random.default_rng(2).random(shape) * 65535).astype(np.uint16)
    write_image(tmp_path / "a.png", img, {"seed": 1})
    back = read_image(tmp_path / "a.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, img)
    assert read_metadata(tmp_path / "a.png") == {"seed": 1}


def test_16_bit_colour_png_without_imagecodecs_is_refused_not_truncated(tmp_path, monkeypatch):
    img = (np.random.default_rng(2).random((H, W, 3)) * 65535).astype(np.uint16)
    write_image(tmp_path / "a.png", img)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import fails
    with pytest.raises(ValueError, match="16-bit colour PNG.*imagecodecs"):
        read_image(tmp_path / "a.png")


def test_palette_png_input_keeps_unmasked_pixels(d, tiny_model_path):
    from PIL import Image

    rgb = skimage.io.imread(d / "img.png")
    Image.fromarray(rgb).quantize(16).save(d / "pal.png")
    colours = np.asarray(Image.open(d / "pal.png").convert("RGB"))
    assert main(edit_args(d, tiny_model_path, "--seed", "0", image="pal.png", out="o.png")) == 0
    far = _far(skimage.io.imread(d / "mask.png"))
    np.testing.assert_array_equal(skimage.io.imread(d / "o.png")[..., :3][far], colours[far])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
def test_grey_alpha_file_is_edited_and_keeps_its_alpha(d, tiny_model_path, bits, suffix):
    """A grey+alpha PNG (LA mode) or TIFF (grey + one extra sample; 16-bit too): the grey is
    edited, the alpha comes back as it was, in one file of the same kind."""
    rng = np.random.default_rng(3)
    top = 255 if bits == 8 else 65535
    la = (rng.random((H, W, 2)) * top).astype(np.uint8 if bits == 8 else np.uint16)
    write_image(d / f"la{suffix}", la)
    assert main(edit_args(d, tiny_model_path, "--seed", "0", image=f"la{suffix}", out=f"o{suffix}")) == 0
    out = read_image(d / f"o{suffix}")
    assert out.shape == la.shape and out.dtype == la.dtype
    np.testing.assert_array_equal(out[..., 1], la[..., 1])
    mask = skimage.io.imread(d / "mask.png") > 0
    far = _far(mask)
    np.testing.assert_array_equal(out[far], la[far])
    assert not np.array_equal(out[mask, 0], la[mask, 0])


@pytest.mark.parametrize("shape", [(H, W), (H, W, 1), (H, W, 2), (H, W, 3), (H, W, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_roundtrip_is_one_page(tmp_path, shape, dtype):
    """Every image the CLI can write comes back from TIFF as written, one page of C samples
    ((H, W, 1) as (H, W)); tifffile left to itself wrote (H, W, 1) and (H, W, 2) as H pages."""
    img = (np.random.default_rng(4).random(shape) * 200).astype(dtype)
    write_image(tmp_path / "a.tif", img, {"seed": 1})
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert len(tif.pages) == 1
    back = read_image(tmp_path / "a.tif")
    assert back.dtype == img.dtype and back.shape == shape[:2] + shape[2:][: shape[2:] != (1,)]
    np.testing.assert_array_equal(back.reshape(shape), img)
    assert read_metadata(tmp_path / "a.tif") == {"seed": 1}


@pytest.mark.parametrize("kind", ["pages", "imagej"])
def test_tiff_stack_is_refused_not_edited_as_colour(d, tiny_model_path, capsys, kind):
    """Three greyscale slices in one TIFF are a stack, not RGB: skimage.io.imread moves a
    leading axis of 3 (or 4) last, and the stack was edited as one colour image."""
    rng = np.random.default_rng(5)
    stack = (rng.random((3, H, W)) * 255).astype(np.uint8)
    kw = dict(imagej=True, metadata={"axes": "ZYX"}) if kind == "imagej" else dict(photometric="minisblack")
    tifffile.imwrite(d / "stack.tif", stack, **kw)
    assert main(edit_args(d, tiny_model_path, "--seed", "0", image="stack.tif", out="o.tif")) == 2
    err = capsys.readouterr().err
    assert "stack of 3" in err and "edit every slice with --every-slice" in err
    assert not (d / "o.tif").exists()


@pytest.mark.parametrize("kind", ["rgb", "imagej"])
def test_every_slice_edits_a_tiff_stack_into_a_stack_of_the_same_axes(d, tiny_model_path, kind):
    """--every-slice: each slice is the single edit of that slice with --seed S+j; the output is
    a TIFF of the same shape and axes; a TIFF stack of masks gives each slice its own."""
    from napari_ilat import edit

    rng = np.random.default_rng(6)
    mask = skimage.io.imread(d / "mask.png") > 0
    if kind == "rgb":
        stack, axes = (rng.random((3, H, W, 3)) * 255).astype(np.uint8), "QYXS"
        tifffile.imwrite(d / "stack.tif", stack, photometric="rgb")
    else:  # a 16-bit ImageJ hyperstack, 2 time points x 2 z-slices
        stack, axes = (rng.random((2, 2, H, W)) * 65535).astype(np.uint16), "TZYX"
        tifffile.imwrite(d / "stack.tif", stack, imagej=True, metadata={"axes": "TZYX"})
    before = (d / "stack.tif").read_bytes()
    args = edit_args(d, tiny_model_path, "--seed", "4", "--every-slice", image="stack.tif", out="o.tif")
    assert main(args) == 0
    with tifffile.TiffFile(d / "o.tif") as tif:
        assert tif.series[0].axes == axes and tif.series[0].shape == stack.shape
    out = tifffile.imread(d / "o.tif").reshape(stack.shape)
    lead = stack.shape[:-3] if kind == "rgb" else stack.shape[:-2]
    for j, index in enumerate(np.ndindex(*lead)):
        np.testing.assert_array_equal(out[index], edit(stack[index], mask, model=str(tiny_model_path), seed=4 + j))
    meta = read_metadata(d / "o.tif")
    assert meta["seeds"] == [4 + j for j in range(int(np.prod(lead)))] and meta["axes"] == axes
    assert (d / "stack.tif").read_bytes() == before

    masks = np.zeros(lead + (H, W), np.uint8)
    masks[(0,) * len(lead)][mask] = 1  # the first slice only
    tifffile.imwrite(d / "masks.tif", masks, photometric="minisblack")
    args = ["edit", str(d / "stack.tif"), "--mask", str(d / "masks.tif"), "--model", str(tiny_model_path), "-q"]
    assert main([*args, "-o", str(d / "o2.tif"), "--seed", "0", "--every-slice"]) == 0
    out2 = tifffile.imread(d / "o2.tif").reshape(stack.shape)
    assert (out2[(0,) * len(lead)] != stack[(0,) * len(lead)]).any()
    planes = stack.shape[len(lead) :]
    np.testing.assert_array_equal(out2.reshape(-1, *planes)[1:], stack.reshape(-1, *planes)[1:])  # copied
    assert read_metadata(d / "o2.tif")["seeds"][1:] == [None] * (int(np.prod(lead)) - 1)


@pytest.mark.parametrize(
    "extra, image, out, message",
    [
        (["--samples", "2"], "stack.tif", "o.tif", "one edit per slice"),
        ([], "stack.tif", "o.png", "a stack is written as TIFF"),
        ([], "img.png", "o.tif", "--every-slice edits TIFF stacks"),
        ([], "one.tif", "o.tif", "holds one 2D image"),
    ],
)
def test_every_slice_bad_input(d, tiny_model_path, capsys, extra, image, out, message):
    tifffile.imwrite(d / "stack.tif", np.zeros((3, H, W), np.uint8), photometric="minisblack")
    tifffile.imwrite(d / "one.tif", np.zeros((H, W), np.uint8))
    assert main(edit_args(d, tiny_model_path, "--every-slice", *extra, image=image, out=out)) == 2
    assert message in capsys.readouterr().err
    assert not (d / out).exists()


def test_label_and_grow_regenerate_one_object_of_a_label_image(d, tiny_model_path):
    """--label N: only that object of a label image (a segmentation) is regenerated, grown by
    --grow px; the same bytes as edit() with that mask, and both are recorded. With
    --every-slice the label is taken in every slice of a label stack."""
    from napari_ilat import edit
    from napari_ilat.engine.inputs import grow_mask

    labels = np.zeros((H, W), np.uint16)
    labels[4:10, 4:12], labels[20:30, 20:36] = 1, 9
    skimage.io.imsave(d / "labels.png", labels, check_contrast=False)
    args = ["edit", str(d / "img.png"), "--mask", str(d / "labels.png"), "--model", str(tiny_model_path), "-q"]
    assert main([*args, "--label", "9", "--grow", "2.5", "--seed", "3", "-o", str(d / "o.png")]) == 0
    img = skimage.io.imread(d / "img.png")
    want = edit(img, grow_mask(labels == 9, 2.5), model=str(tiny_model_path), seed=3)
    np.testing.assert_array_equal(skimage.io.imread(d / "o.png"), want)
    np.testing.assert_array_equal(want[4:10, 4:12], img[4:10, 4:12])  # object 1 is kept
    meta = read_metadata(d / "o.png")
    assert meta["mask_label"] == 9 and meta["grow"] == 2.5
    assert main([*args, "--label", "9,1", "--seed", "3", "-o", str(d / "both.png")]) == 0  # several objects
    both = edit(img, (labels == 9) | (labels == 1), model=str(tiny_model_path), seed=3)
    np.testing.assert_array_equal(skimage.io.imread(d / "both.png"), both)
    assert read_metadata(d / "both.png")["mask_label"] == [9, 1]

    stack = np.stack([img, img[::-1]])
    tifffile.imwrite(d / "stack.tif", stack, photometric="rgb")
    tifffile.imwrite(d / "labels.tif", np.stack([labels, labels * 0]), photometric="minisblack")
    args = ["edit", str(d / "stack.tif"), "--mask", str(d / "labels.tif"), "--model", str(tiny_model_path), "-q"]
    assert main([*args, "--label", "9", "--every-slice", "--seed", "1", "-o", str(d / "o.tif")]) == 0
    out = tifffile.imread(d / "o.tif")
    np.testing.assert_array_equal(out[0], edit(img, labels == 9, model=str(tiny_model_path), seed=1))
    np.testing.assert_array_equal(out[1], stack[1])  # no label 9 there: copied


@pytest.mark.parametrize(
    "mask, extra, message",
    [
        ("labels.png", ["--label", "5"], "no pixel of label 5 (labels there: 1, 9)"),
        ("labels.png", ["--label", "0"], "not 0 (the background)"),
        ("labels.png", ["--label", "1,5,6"], "no pixel of labels 5, 6 (labels there: 1, 9)"),
        ("labels.png", ["--label", "one"], "expected a label or labels like 3,7,12"),
        ("labels.png", ["--grow", "-1"], "--grow must be a number of pixels >= 0"),
        ("img.png", ["--label", "1"], "colour image"),
        ("labels.jpg", ["--label", "1"], "PNG or TIFF label image"),
    ],
)
def test_label_and_grow_bad_input(d, tiny_model_path, capsys, mask, extra, message):
    labels = np.zeros((H, W), np.uint8)
    labels[4:10, 4:12], labels[20:30, 20:36] = 1, 9
    skimage.io.imsave(d / "labels.png", labels, check_contrast=False)
    skimage.io.imsave(d / "labels.jpg", labels, check_contrast=False)
    args = [
        "edit",
        str(d / "img.png"),
        "--mask",
        str(d / mask),
        "--model",
        str(tiny_model_path),
        "-o",
        str(d / "o.png"),
    ]
    try:
        rc = main([*args, *extra])
    except SystemExit as e:  # argparse's own check of --label's value
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (d / "o.png").exists()


def test_planar_rgb_tiff_is_edited_as_colour(d, tiny_model_path):
    rgb = skimage.io.imread(d / "img.png")
    tifffile.imwrite(d / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert main(edit_args(d, tiny_model_path, "--seed", "0", image="planar.tif", out="o.tif")) == 0
    out = read_image(d / "o.tif")
    far = _far(skimage.io.imread(d / "mask.png"))
    assert out.shape == rgb.shape
    np.testing.assert_array_equal(out[far], rgb[far])


def test_palette_and_white_is_zero_tiffs_keep_how_they_look(d, tiny_model_path):
    """A palette TIFF is edited in its colours (not its indices) and a white-is-zero one as it
    looks: the unmasked pixels of the output, which is written black-is-zero RGB / grey, look
    as they did in the input."""
    from PIL import Image

    rgb = skimage.io.imread(d / "img.png")
    Image.fromarray(rgb).quantize(16).save(d / "pal.tif")
    with Image.open(d / "pal.tif") as im:
        colours = np.asarray(im.convert("RGB"))
    grey = rgb[..., 0]
    tifffile.imwrite(d / "mw.tif", grey, photometric="miniswhite")  # stored inverted
    far = _far(skimage.io.imread(d / "mask.png"))
    assert main(edit_args(d, tiny_model_path, "--seed", "0", image="pal.tif", out="o_pal.png")) == 0
    np.testing.assert_array_equal(read_image(d / "o_pal.png")[far], colours[far])
    assert main(edit_args(d, tiny_model_path, "--seed", "0", image="mw.tif", out="o_mw.png")) == 0
    np.testing.assert_array_equal(read_image(d / "o_mw.png")[far], 255 - grey[far])


@pytest.mark.parametrize("orientation", [6, 3])
def test_exif_turned_photo_is_edited_as_shown(d, tiny_model_path, orientation):
    """A phone photo stored sideways with an EXIF orientation tag is read upright, as every
    viewer (and the painting program the mask was drawn in) shows it: the mask fits it, the
    output is written upright, and the unmasked pixels are the shown photo's."""
    from PIL import Image, ImageOps

    stored = skimage.io.imread(d / "img.png")  # (H, W, 3)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(d / "phone.png", exif=exif.tobytes())
    with Image.open(d / "phone.png") as p:
        shown = np.asarray(ImageOps.exif_transpose(p))
    mask = np.zeros(shown.shape[:2], np.uint8)
    mask[8:20, 10:26] = 255
    skimage.io.imsave(d / "mask.png", mask, check_contrast=False)
    assert main(edit_args(d, tiny_model_path, "--seed", "0", image="phone.png", out="o.png")) == 0
    out = read_image(d / "o.png")
    assert out.shape == shown.shape
    far = _far(mask)
    np.testing.assert_array_equal(out[far], shown[far])
    assert not np.array_equal(out[mask > 0], shown[mask > 0])


def test_mask_over_the_whole_image_warns_on_stderr(d, tiny_model_path, capsys):
    skimage.io.imsave(d / "mask.png", np.full((H, W), 255, np.uint8), check_contrast=False)
    assert main(edit_args(d, tiny_model_path, "--seed", "0")) == 0
    assert "warning: the mask covers the whole image" in capsys.readouterr().err


def test_jpeg_mask_noise_is_not_regenerated(d, tiny_model_path, capsys):
    """JPEG ringing around a painted stroke (faint values up to a block away) is not part of
    the mask: pixels more than 3 px from the paint come back unchanged, and it is said."""
    from PIL import Image
    from scipy import ndimage

    from napari_ilat.data import random_mask

    painted = ndimage.gaussian_filter(random_mask(np.random.default_rng(3), (H, W), "brush", 0.2) * 255.0, 0.7)
    painted = np.round(painted).astype(np.uint8)  # a soft brush: anti-aliased edges
    Image.fromarray(painted).save(d / "mask.jpg", quality=90)
    stored = np.asarray(Image.open(d / "mask.jpg"))
    far = _far(painted >= 128)
    assert (stored[far] > 0).any()  # the case: noise where nothing was painted
    args = ["edit", str(d / "img.png"), "--mask", str(d / "mask.jpg"), "--model", str(tiny_model_path)]
    assert main([*args, "-q", "--seed", "0", "-o", str(d / "o.png")]) == 0
    assert "JPEG mask read as painted where it is >= 128 of 255" in capsys.readouterr().err
    out, img = read_image(d / "o.png"), read_image(d / "img.png")
    np.testing.assert_array_equal(out[far], img[far])
    assert not np.array_equal(out[painted >= 128], img[painted >= 128])


def test_corrupt_image_error_has_no_plugin_advice(d, tiny_model_path, capsys):
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(edit_args(d, tiny_model_path, image="bad.png")) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "install" not in err.lower() and "plugin" not in err.lower()


@pytest.mark.parametrize("during", ["edit", "write"])
def test_ctrl_c_is_a_message_and_leaves_no_half_written_file(d, tiny_model_path, capsys, monkeypatch, during):
    """Ctrl-C in folder mode, while the second image is edited or while its file is put in
    place: exit status 130 and one line, no traceback; the first image's file is complete,
    the second leaves nothing behind (no output, no partial file)."""
    import napari_ilat.cli.edit as cli_edit
    import napari_ilat.engine.editing as editing

    (d / "imgs").mkdir()
    (d / "masks").mkdir()
    for name in ("a", "b", "c"):
        (d / "imgs" / f"{name}.png").write_bytes((d / "img.png").read_bytes())
        (d / "masks" / f"{name}.png").write_bytes((d / "mask.png").read_bytes())
    real_edit, real_replace, calls = editing.edit_with_info, cli_edit.os.replace, []

    def edit(*a, **k):
        calls.append(1)
        if during == "edit" and len(calls) == 2:
            raise KeyboardInterrupt
        return real_edit(*a, **k)

    def replace(src, dst):
        if during == "write" and len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(editing, "edit_with_info", edit)
    monkeypatch.setattr(cli_edit.os, "replace", replace)
    args = ["edit", str(d / "imgs"), "--mask", str(d / "masks"), "--model", str(tiny_model_path), "-q"]
    assert main([*args, "--seed", "0", "-o", str(d / "out")]) == 130
    err = capsys.readouterr().err
    assert "napari-ilat edit: interrupted" in err and "Traceback" not in err
    assert sorted(f.name for f in (d / "out").iterdir()) == ["a.png"]
    assert read_image(d / "out" / "a.png").shape == (H, W, 3)


def test_candidates_beyond_free_memory_are_a_message(d, tiny_model_path, capsys, monkeypatch):
    import napari_ilat.engine.editing as editing

    monkeypatch.setattr(editing, "free_memory", lambda: 2 * H * W * 3)
    assert main(edit_args(d, tiny_model_path, "--samples", "4", "--seed", "0")) == 2
    assert "4 candidates of this 40x48 image" in capsys.readouterr().err
    assert not list(d.glob("out*"))


def test_folder_mode_says_that_subfolders_are_not_edited(d, tiny_model_path, capsys):
    (d / "imgs" / "day2").mkdir(parents=True)
    (d / "masks").mkdir()
    for sub in ("", "day2/"):
        (d / "imgs" / f"{sub}a.png").write_bytes((d / "img.png").read_bytes())
    (d / "masks" / "a.png").write_bytes((d / "mask.png").read_bytes())
    args = ["edit", str(d / "imgs"), "--mask", str(d / "masks"), "--model", str(tiny_model_path), "-q"]
    assert main([*args, "--seed", "0", "-o", str(d / "out")]) == 0
    err = capsys.readouterr().err
    assert "the images in subfolders of" in err and "are not edited: day2/ (1)" in err
    assert [f.name for f in (d / "out").iterdir()] == ["a.png"]


def test_output_parent_is_a_file(d, tiny_model_path, capsys):
    (d / "afile").write_text("x")
    assert main(edit_args(d, tiny_model_path, out="afile/out.png")) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- tracebacks -> messages


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--feather", "inf"], "feather must be a finite number"),
        (["--feather", "nan"], "feather must be a finite number"),
        (["--device", "meta"], "device must be"),
        (["--device", "mps"], "device 'mps' asked for"),
        (["--seed", str(2**63)], "seed must be in"),
        (["--samples", "1000"], "--samples must be from 1 to 64"),
        (["--temperature", "inf"], "temperature must be a finite number"),
    ],
)
def test_bad_options_exit_2_with_a_message(d, tiny_model_path, capsys, extra, message):
    import torch

    if "mps" in extra and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main([*edit_args(d, tiny_model_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "entry",
    [[5], 5, None, [1, "a"], [1, 2, 3, 4]],
    ids=["short", "scalar", "null", "string", "long"],
)
def test_pose_json_dict_with_bad_entries_is_a_message(d, tiny_pose_model_path, capsys, entry):
    (d / "pose.json").write_text(json.dumps({"nose": [10, 10], "neck": entry}))
    args = [*edit_args(d, tiny_pose_model_path), "--pose", str(d / "pose.json")]
    assert main(args) == 2
    assert "keypoint 'neck' must be [x, y] or [x, y, visible] numbers" in capsys.readouterr().err


def test_pose_json_made_for_another_image_size_warns(d, tiny_pose_model_path, capsys):
    (d / "pose.json").write_text(json.dumps({"keypoints": {"nose": [10, 10]}, "image_size": [128, 128]}))
    with pytest.warns(UserWarning, match="made for a 128x128 image, this image is 40x48"):
        read_pose(d / "pose.json", (H, W, 3))
    argv = [a for a in edit_args(d, tiny_pose_model_path) if a != "-q"]
    assert main([*argv, "--pose", str(d / "pose.json"), "--seed", "0"]) == 0
    assert "warning: pose.json was made for a 128x128 image" in capsys.readouterr().err


def _pose18(rng, hidden=(3,)):
    pose = np.column_stack([rng.uniform(2, W - 2, 18), rng.uniform(2, H - 2, 18), np.ones(18)])
    pose[list(hidden)] = (-1, -1, 0)
    return pose


def _as_layout(pose18, rows):
    """Our 18 keypoints written in another layout (the inverse of to_coco18), missing = 0, 0, 0."""
    from napari_ilat.engine.skeleton import POSE_LAYOUTS

    out = np.zeros((rows, 3))
    for k, j in enumerate(POSE_LAYOUTS[rows][1]):
        if j is not None and pose18[k, 2] > 0:
            out[j] = (pose18[k, 0], pose18[k, 1], 0.9)
    return out


@pytest.mark.parametrize("rows", [17, 25])
def test_pose_estimator_layouts_are_converted(rows):
    from napari_ilat.engine.skeleton import NECK, to_coco18

    pose = _pose18(np.random.default_rng(6))
    back = to_coco18(_as_layout(pose, rows))
    if rows == 17:  # COCO-17 has no neck: the shoulders' mid-point
        pose[NECK, :2] = (pose[2, :2] + pose[5, :2]) / 2
    np.testing.assert_allclose(back, pose)
    assert tuple(back[3]) == (-1, -1, 0)  # confidence 0 -> missing


@pytest.mark.parametrize("form", ["openpose-body25", "openpose-coco18", "coco17-annotation", "coco17-rows"])
def test_pose_json_from_pose_estimators_edits_like_ours(d, tiny_pose_model_path, monkeypatch, form):
    """OpenPose --write_json files (BODY_25, COCO-18) and COCO-17 keypoints reach the engine as
    the same 18 keypoints as our 18-row JSON, and the edit runs."""
    import napari_ilat.engine.editing as editing
    from napari_ilat.engine.inputs import check_pose
    from napari_ilat.engine.skeleton import NECK

    given = []

    def spy(image, mask, pose, *args, **kwargs):
        given.append(check_pose(pose))
        return edit_with_info(image, mask, pose, *args, **kwargs)

    edit_with_info = editing.edit_with_info
    monkeypatch.setattr(editing, "edit_with_info", spy)  # the CLI imports it when it runs

    pose = _pose18(np.random.default_rng(7))
    pose[NECK, :2] = (pose[2, :2] + pose[5, :2]) / 2  # so COCO-17's derived neck is the same
    (d / "ours.json").write_text(json.dumps(pose.tolist()))
    rows = {"openpose-body25": 25, "openpose-coco18": 18}.get(form, 17)
    flat = _as_layout(pose, rows).flatten().tolist() if rows != 18 else np.where(pose < 0, 0, pose).flatten().tolist()
    if form.startswith("openpose"):
        doc = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": flat}]}
    elif form == "coco17-annotation":
        doc = {"keypoints": flat, "num_keypoints": 17}
    else:
        doc = _as_layout(pose, 17).tolist()
    (d / "est.json").write_text(json.dumps(doc))
    base = [*edit_args(d, tiny_pose_model_path, "--seed", "4", out=None)]
    assert main([*base, "--pose", str(d / "ours.json"), "-o", str(d / "a.png")]) == 0
    assert main([*base, "--pose", str(d / "est.json"), "-o", str(d / "b.png")]) == 0
    ours, theirs = given
    hidden = ours[:, 2] == 0
    np.testing.assert_allclose(theirs[~hidden], ours[~hidden])
    assert (theirs[hidden, 2] == 0).all()
    np.testing.assert_array_equal(read_image(d / "a.png"), read_image(d / "b.png"))


@pytest.mark.parametrize("people, message", [(0, "found nobody"), (2, "holds 2 people")])
def test_openpose_json_with_no_or_several_people_is_a_message(d, tiny_pose_model_path, capsys, people, message):
    person = {"pose_keypoints_2d": [10.0, 10.0, 0.9] * 25}
    (d / "op.json").write_text(json.dumps({"people": [person] * people}))
    assert main([*edit_args(d, tiny_pose_model_path), "--pose", str(d / "op.json")]) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- folder mode


def _folder(d, names=("a", "b", "c")):
    for sub in ("imgs", "masks"):
        (d / sub).mkdir()
    for stem in names:
        (d / "imgs" / f"{stem}.png").write_bytes((d / "img.png").read_bytes())
        (d / "masks" / f"{stem}.png").write_bytes((d / "mask.png").read_bytes())
    return ["edit", str(d / "imgs"), "--mask", str(d / "masks"), "-o", str(d / "out")]


def test_folder_missing_mask_is_reported_and_skipped(d, tiny_model_path, capsys):
    args = _folder(d)
    (d / "masks" / "b.png").unlink()
    assert main([*args, "--model", str(tiny_model_path), "--seed", "0"]) == 1
    assert sorted(p.name for p in (d / "out").iterdir()) == ["a.png", "c.png"]
    err = capsys.readouterr().err
    assert "skipped: no mask for b.png" in err and "1 of 3 images failed: b.png" in err


def test_folder_with_one_mask_file_edits_every_image_with_it(d, tiny_model_path, capsys):
    """One mask for a series of frames: a mask file with an image folder is used for each
    image (a mask file lying in the image folder is not edited itself); an image of another
    size is reported and skipped; a missing --mask / --pose / --sketch path is refused."""
    _folder(d)
    (d / "imgs" / "mask.png").write_bytes((d / "mask.png").read_bytes())
    skimage.io.imsave(d / "imgs" / "small.png", np.zeros((20, 20, 3), np.uint8), check_contrast=False)
    base = ["edit", str(d / "imgs"), "-o", str(d / "out"), "--model", str(tiny_model_path), "-q", "--seed", "0"]
    assert main([*base, "--mask", str(d / "imgs" / "mask.png")]) == 1
    assert sorted(p.name for p in (d / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    assert "1 of 4 images failed: small.png" in capsys.readouterr().err
    mask = skimage.io.imread(d / "mask.png") > 0
    img, out = skimage.io.imread(d / "img.png"), skimage.io.imread(d / "out" / "b.png")
    assert (out[mask] != img[mask]).any() and np.array_equal(out[_far(mask)], img[_far(mask)])
    for flag in ("--mask", "--pose", "--sketch"):
        args = {"--mask": str(d / "mask.png"), flag: str(d / "nope.png")}
        assert main([*base, "--overwrite", *[x for kv in args.items() for x in kv]]) == 2
        assert f"{flag} {d / 'nope.png'} not found" in capsys.readouterr().err


def test_folder_poses_as_openpose_names_them(d, tiny_pose_model_path, capsys):
    """OpenPose run over a folder writes STEM_keypoints.json: matched like STEM.json."""
    args = _folder(d, names=("a", "b"))
    (d / "poses").mkdir()
    person = {"people": [{"pose_keypoints_2d": [20.0, 10.0, 0.9] * 25}]}
    (d / "poses" / "a_keypoints.json").write_text(json.dumps(person))
    (d / "poses" / "b.json").write_text(json.dumps({"nose": [20, 10]}))
    assert main([*args, "--pose", str(d / "poses"), "--model", str(tiny_pose_model_path), "--seed", "0"]) == 0
    assert sorted(p.name for p in (d / "out").iterdir()) == ["a.png", "b.png"]
    (d / "poses" / "a_keypoints.json").unlink()
    assert main([*args, "--pose", str(d / "poses"), "--model", str(tiny_pose_model_path), "--overwrite"]) == 1
    assert "expected a.json or a_keypoints.json" in capsys.readouterr().err


def test_folder_unwritable_output_is_reported_and_skipped(d, tiny_model_path, capsys):
    args = _folder(d)
    (d / "out" / "b.png").mkdir(parents=True)  # a folder where the file should go
    assert main([*args, "--model", str(tiny_model_path), "--seed", "0"]) == 1
    assert (d / "out" / "a.png").is_file() and (d / "out" / "c.png").is_file()
    err = capsys.readouterr().err
    assert "b.png: skipped" in err and "Traceback" not in err


def test_folder_jpeg_input_is_written_as_png_and_said(d, tiny_model_path, capsys):
    args = _folder(d, ("a",))
    skimage.io.imsave(d / "imgs" / "j.jpg", skimage.io.imread(d / "img.png"), check_contrast=False)
    (d / "masks" / "j.png").write_bytes((d / "mask.png").read_bytes())
    assert main([*args, "--model", str(tiny_model_path), "--seed", "0"]) == 0
    assert sorted(p.name for p in (d / "out").iterdir()) == ["a.png", "j.png"]
    assert "written as PNG (JPEG is lossy; --lossy keeps it)" in capsys.readouterr().err
    assert main([*args, "--model", str(tiny_model_path), "--seed", "0", "--lossy"]) == 0
    assert (d / "out" / "j.jpg").is_file()


# ---------------------------------------------------------------- candidates, version, help


def test_cli_candidate_k_is_the_single_edit_with_seed_plus_k(d, tiny_model_path, capsys):
    argv = [a for a in edit_args(d, tiny_model_path, out="c.png") if a != "-q"]
    assert main([*argv, "--samples", "3", "--seed", "5"]) == 0
    assert "seeds 5..7: candidate k = --seed 5+k" in capsys.readouterr().err
    assert read_metadata(d / "c_2.png")["seed"] == 7
    assert main(edit_args(d, tiny_model_path, "--seed", "7", out="single.png")) == 0
    np.testing.assert_array_equal(skimage.io.imread(d / "c_2.png"), skimage.io.imread(d / "single.png"))


def test_version_flag(capsys):
    import napari_ilat

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and f"napari-ilat {napari_ilat.__version__}" in capsys.readouterr().out


def test_edit_help_shows_defaults():
    out = subprocess.run(
        [sys.executable, "-m", "napari_ilat.cli", "edit", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    for text in ("temperature > 0 (default: 1.0)", "(default: off)", "(default: 2.0)", "(default: 1)"):
        assert text in flat, text


def test_every_slice_in_folder_mode_edits_the_stacks_and_says_why_not_the_rest(d, tiny_model_path, capsys):
    (d / "imgs").mkdir()
    tifffile.imwrite(d / "imgs" / "s.tif", np.zeros((3, H, W), np.uint8), photometric="minisblack")
    (d / "imgs" / "a.png").write_bytes((d / "img.png").read_bytes())
    args = ["edit", str(d / "imgs"), "--mask", str(d / "mask.png"), "-o", str(d / "out"), "--every-slice"]
    assert main([*args, "--model", str(tiny_model_path), "--seed", "0"]) == 1
    assert [p.name for p in (d / "out").iterdir()] == ["s.tif"]
    assert "a.png: --every-slice edits TIFF stacks; .png holds one image" in capsys.readouterr().err
