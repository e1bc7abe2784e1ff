"""Datasets (deterministic across workers), natural patches, offline guarantee, contact sheet."""

import hashlib
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.utils.data import DataLoader

from napari_ilat.data import backgrounds, natural
from napari_ilat.data.datasets import NaturalPatchDataset, PoseEditDataset, image_to_tensor, tensor_to_image
from napari_ilat.data.masks import MASK_KINDS, random_mask
from napari_ilat.data.pose_scenes import make_edit_pair, make_scene
from napari_ilat.data.splits import split_seeds


def test_pose_edit_dataset_items():
    ds = PoseEditDataset("test", resolution=64, length=4)
    assert len(ds) == 4
    item = ds[1]
    assert item["source"].shape == (3, 64, 64) and item["source"].dtype == torch.float32
    assert item["target"].shape == (3, 64, 64)
    assert item["source"].min() >= -1 and item["source"].max() <= 1
    assert item["source_pose"].shape == (18, 3) and item["target_pose"].dtype == torch.float32
    assert item["mask"].shape == (1, 64, 64) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    pair = make_edit_pair(int(item["seed"]), 64)
    assert int(item["seed"]) == int(split_seeds("test", 2)[1])
    assert np.array_equal(tensor_to_image(item["target"]), pair.target)
    with pytest.raises(IndexError):
        ds[4]


def test_natural_patch_dataset_items():
    ds = NaturalPatchDataset("validation", resolution=64, length=3, mask_kinds=("box",), rate_range=(0.2, 0.3))
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["mask"].shape == (1, 64, 64) and 0.19 <= item["mask"].mean() <= 0.31
    for key in ("sketch", "edges"):
        assert item[key].shape == (1, 64, 64) and item[key].min() >= 0 and item[key].max() <= 1


def test_loader_is_identical_with_workers():
    ds = PoseEditDataset("train", resolution=48, length=6)
    nat = NaturalPatchDataset("train", resolution=48, length=6)
    for d in (ds, nat):
        a = list(DataLoader(d, batch_size=3, num_workers=0))
        b = list(DataLoader(d, batch_size=3, num_workers=2))
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            for k in x:
                assert torch.equal(x[k], y[k]), k


def test_image_tensor_roundtrip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(tensor_to_image(image_to_tensor(img)), img)


def test_natural_patches_use_only_their_splits_photos():
    seen = {s: set() for s in ("train", "validation", "test")}
    for split in seen:
        for seed in split_seeds(split, 12):
            _, photo = natural.natural_patch(int(seed), 32)
            seen[split].add(photo)
    assert seen["test"] <= {"chelsea", "coffee"}
    # validation: rocket and held-out strips of the training photographs (several colours)
    assert "rocket" in seen["validation"] and len(seen["validation"]) >= 4
    assert seen["validation"] <= {"rocket"} | set(backgrounds.COLOR_PHOTOS["train"])
    assert not (seen["train"] & (set(backgrounds.COLOR_PHOTOS["test"]) | {"cat"}))
    test_photos = set(backgrounds.COLOR_PHOTOS["test"]) | set(backgrounds.GREY_PHOTOS["test"]) | {"cat"}
    train_photos = set(backgrounds.COLOR_PHOTOS["train"]) | set(backgrounds.GREY_PHOTOS["train"])
    assert not (test_photos & train_photos)


def test_nothing_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data code tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    backgrounds.load_photo.cache_clear()
    backgrounds.photo_pyramid.cache_clear()
    for name in sorted(backgrounds.BUNDLED_PHOTOS):
        assert backgrounds.load_photo(name).ndim == 3
    rng = np.random.default_rng(0)
    for kind in backgrounds.PROCEDURAL_KINDS:
        assert backgrounds.procedural_texture(rng, (32, 32), kind).shape == (32, 32, 3)
    for split in ("train", "validation", "test"):
        for seed in split_seeds(split, 6):
            make_edit_pair(int(seed), 64)
            make_scene(int(seed), 48)
            for kind in MASK_KINDS:
                natural.make_natural_sample(int(seed), 48, mask_kinds=(kind,))
    for kind in MASK_KINDS:
        random_mask(rng, (48, 48), kind, 0.3)


def _digest(seeds):
    h = hashlib.sha256()
    for s in seeds:
        p = make_edit_pair(s, 64)
        n = natural.make_natural_sample(s, 64)
        for a in (p.source, p.target, p.source_pose, p.target_pose, p.mask, n.image, n.mask, n.sketch):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_same_bytes_in_a_fresh_process_with_another_hash_seed():
    seeds = [0, 100_000, 1_000_000]
    code = (
        "import hashlib, numpy as np\n"
        "from napari_ilat.data import make_edit_pair, make_natural_sample\n"
        "h = hashlib.sha256()\n"
        f"for s in {seeds!r}:\n"
        "    p = make_edit_pair(s, 64); n = make_natural_sample(s, 64)\n"
        "    for a in (p.source, p.target, p.source_pose, p.target_pose, p.mask, n.image, n.mask, n.sketch):\n"
        "        h.update(np.ascontiguousarray(a).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _digest(seeds)


def test_contact_sheet_command(tmp_path):
    from PIL import Image

    from napari_ilat.data.contact_sheet import main

    out = tmp_path / "sheet.png"
    assert main(["--out", str(out), "--n", "2", "--resolution", "48"]) == 0
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 2 * 48 and img.shape[1] > 7 * 48


def test_data_cli_contact_sheet(tmp_path):
    import argparse

    from napari_ilat.cli import data as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "cs.png"
    args = parser.parse_args(["contact-sheet", "--out", str(out), "--n", "1", "--resolution", "32"])
    assert cli.run(args) == 0 and out.exists()


def test_training_crops_never_enter_the_validation_strip(monkeypatch):
    """On a photo that is black left of the held-out strip and white inside it, crops with the
    training columns are black and crops with the validation strip's columns are white."""
    photo = np.zeros((200, 500, 3), np.uint8)
    keep = 1 - natural.HOLDOUT
    photo[:, int(round(keep * 500)) :] = 255
    monkeypatch.setattr(backgrounds, "load_photo", lambda name: photo)
    monkeypatch.setattr(backgrounds, "photo_pyramid", lambda name: (photo.astype(np.float32),))
    for seed in range(50):
        rng = np.random.default_rng(seed)
        assert backgrounds.crop_photo("x", rng, (48, 48), scale_range=(1.0, 1.0), columns=(0.0, keep)).max() == 0
        assert backgrounds.crop_photo("x", rng, (48, 48), scale_range=(1.0, 1.0), columns=(keep, 1.0)).min() == 255


def test_hue_rotation_keeps_luma_and_turns_hue():
    from skimage.color import rgb2hsv

    img = np.zeros((8, 8, 3), np.uint8)
    img[...] = (150, 110, 90)  # a warm, saturated colour, far from the clipping bounds after turning
    turned = natural.rotate_hue(img, 120)
    luma = lambda a: a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # noqa: E731
    assert np.abs(luma(turned) - luma(img)).max() <= 1.5
    h0, h1 = rgb2hsv(img)[0, 0, 0] * 360, rgb2hsv(turned)[0, 0, 0] * 360
    d = (h1 - h0 + 180) % 360 - 180
    assert 80 < abs(d) < 160  # YIQ angle and HSV hue differ, but the hue has moved a long way
    assert np.array_equal(natural.rotate_hue(img, 0), img)
    # training patches are turned about half of the time, test patches never
    seeds = split_seeds("train", 40)
    hues = [rgb2hsv(natural.natural_patch(int(s), 32)[0]).mean() for s in seeds]
    assert len(set(np.round(hues, 6))) == 40


def test_stage2_thin_strokes_change_only_the_sketch_inside_the_mask():
    from napari_ilat.engine.sketch import xdog
    from napari_ilat.train.data import Stage2Pairs

    dense = Stage2Pairs("natural", "train", 64, 40, "sketch")
    half = Stage2Pairs("natural", "train", 64, 40, "sketch", thin_frac=0.5)
    thin = Stage2Pairs("natural", "train", 64, 40, "sketch", thin_frac=1.0)
    changed, ink = 0, [0, 0]
    for i in range(40):
        a, b, c = dense[i], half[i], thin[i]
        for k in ("image", "mask", "causal"):  # the tokens to learn are the same
            assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k
        m = a["mask"][0].numpy()
        sa, sb, sc = (x["sketch"][0].numpy() for x in (a, b, c))
        assert np.array_equal(sa[~m], sc[~m])  # outside the mask the known pixels' XDoG
        edges = xdog(tensor_to_image(a["image"]))
        assert np.array_equal(sa[m], edges[m])
        # thin lines: on the XDoG ink (widened by at most 3 px), and less ink over all items
        near = ndimage.binary_dilation(edges > 0.5, np.ones((5, 5), bool))
        assert not (sc[m] > 0.5)[~near[m]].any()
        assert np.array_equal(sb, sa) or np.array_equal(sb, sc)  # 0 < thin_frac < 1: one or the other
        changed += not np.array_equal(sb, sa)
        ink[0] += (sa[m] > 0.5).sum()
        ink[1] += (sc[m] > 0.5).sum()
    assert ink[1] < 0.6 * ink[0]
    assert 10 <= changed <= 30  # about half the items
    with pytest.raises(ValueError, match="thin-strokes"):
        Stage2Pairs("natural", "train", 64, 4, "sketch", thin_frac=1.5)
    with pytest.raises(ValueError, match="thin-strokes"):
        Stage2Pairs("pose", "train", 64, 4, "pose", thin_frac=0.5)
