"""The context palette (engine/palette.py): each code's colour, the codes a fill may use,
the sampler keeping to them, the table in model files, and edit(palette=)."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_ilat import ILATModel, edit, load_model, save_model
from napari_ilat.engine import editing, sampler, sliding
from napari_ilat.engine import imagebart as ib_module
from napari_ilat.engine.editing import edit_with_info
from napari_ilat.engine.palette import (
    PALETTE_BAND,
    allowed_codes,
    code_colours,
    colours_from_json,
    colours_of,
    colours_to_json,
    has_colours,
)
from napari_ilat.engine.sampler import SamplingOptions, pick


def _case(size=32):
    rng = np.random.default_rng(0)
    img = rng.random((size, size, 3))
    mask = np.zeros((size, size), bool)
    mask[10:22, 8:24] = True
    return img, mask


@pytest.fixture
def coloured():
    """A tiny unconditional model with its colour table (as an export would give it)."""
    model = ILATModel.tiny(cond="sketch", seed=2)
    model.vqgan.code_colours = code_colours(model.vqgan)
    return model


def test_code_colours_are_the_centre_of_a_uniform_map_decoded():
    model = ILATModel.tiny(seed=1)
    table = code_colours(model.vqgan, size=8, batch=5)  # batches that do not divide 64
    assert table.shape == (64, 3) and table.dtype == np.uint8
    with torch.inference_mode():
        img = model.vqgan.decode_tokens(torch.full((1, 8, 8), 37))  # factor 4: 32 px
    centre = img[0, :, 8:24, 8:24].mean((1, 2)).clamp(-1, 1)
    assert np.array_equal(table[37], np.rint(((centre + 1) * 127.5).numpy()).astype(np.uint8))
    assert len(np.unique(table, axis=0)) > 8  # codes differ


def test_allowed_codes_are_those_near_the_band_colours():
    table = np.zeros((100, 3), np.uint8)
    table[:, 0] = np.arange(100) * 2  # red 0, 2, ..., 198
    rgb = np.zeros((40, 40, 3))
    rgb[..., 0] = 100 / 255  # known pixels: red 100
    rgb[:4] = (0, 1, 0)  # green, but farther than the band (16 px) from the mask
    mask = np.zeros((40, 40), bool)
    mask[22:30, 22:30] = True
    rgb[mask] = (0, 0, 1)  # what is under the mask never counts
    keep = allowed_codes(table, rgb, mask, tau=10, min_codes=3)
    assert np.flatnonzero(keep).tolist() == list(range(45, 56))  # red 90..110
    # at least min_codes, the nearest ones
    keep = allowed_codes(table, rgb, mask, tau=1, min_codes=5)
    assert np.flatnonzero(keep).tolist() == [48, 49, 50, 51, 52]
    assert allowed_codes(table, rgb, np.ones((40, 40), bool)) is None  # no known pixel: no palette


def test_a_few_band_pixels_do_not_admit_their_colours():
    # a light band (red 180) with a thin dark line in it (red 20, 7% of the band's pixels):
    # by default a code needs 30% of the band within tau, so the dark codes stay out
    table = np.zeros((100, 3), np.uint8)
    table[:, 0] = np.arange(100) * 2  # red 0, 2, ..., 198
    rgb = np.zeros((40, 40, 3))
    rgb[..., 0] = 180 / 255
    rgb[:, 12:14, 0] = 20 / 255  # the dark line, 4 px from the mask's left edge
    mask = np.zeros((40, 40), bool)
    mask[10:30, 18:30] = True
    ring = ndimage.binary_dilation(mask, iterations=PALETTE_BAND) & ~mask
    assert 0.05 < (rgb[ring, 0] < 0.5).mean() < 0.1  # the line's share of the band
    light = list(range(80, 100))  # red 160..198
    assert np.flatnonzero(allowed_codes(table, rgb, mask, tau=20, min_codes=3)).tolist() == light
    # any one pixel (support 0, the rule before): the line's colours too
    dark = list(range(0, 21))  # red 0..40
    assert np.flatnonzero(allowed_codes(table, rgb, mask, tau=20, min_codes=3, support=0)).tolist() == dark + light
    # a grey image keeps the rule of any one pixel (PALETTE_SUPPORT_GREY): grey codes, the same band
    grey_table = np.repeat(table[:, :1], 3, axis=1)
    grey_rgb = np.repeat(rgb[..., :1], 3, axis=2)
    grey_keep = allowed_codes(grey_table, grey_rgb, mask, grey=True, tau=20, min_codes=3)
    assert grey_keep[10] and grey_keep[90]  # the line's grey (20) and the band's (180)
    assert np.array_equal(
        grey_keep, allowed_codes(grey_table, grey_rgb, mask, grey=True, tau=20, min_codes=3, support=0)
    )


def test_a_grey_image_compares_codes_by_their_grey_level():
    # a warm mid-tone (mean 110), a dark-ish neutral grey and a near-black code
    table = np.array([(150, 110, 70), (95, 95, 95), (10, 10, 10)], np.uint8)
    rgb = np.full((40, 40, 3), 110 / 255)  # a grey band of 110
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    # in colour the warm code lies 57 levels off, the neutral one 26: only the nearest is kept
    assert allowed_codes(table, rgb, mask, tau=20, min_codes=1).tolist() == [False, True, False]
    # a grey image shows the warm code as grey 110, exactly the band's; the neutral one is 15 off
    assert allowed_codes(table, rgb, mask, grey=True, tau=20, min_codes=1).tolist() == [True, False, False]


def test_a_grey_image_gets_a_grey_level_palette_and_a_grey_fill_in_rgb_too(coloured, monkeypatch):
    img, mask = _case()
    img = np.rint(img * 255).astype(np.uint8)
    seen = []
    monkeypatch.setattr(editing, "allowed_codes", lambda *a, **k: seen.append(k.get("grey")) or allowed_codes(*a, **k))
    grey = img[..., 0]
    rgb_grey = np.repeat(grey[..., None], 3, axis=2)
    rgb_grey[..., 1] = np.clip(grey.astype(int) + 2, 0, 255)  # 2 levels of JPEG-like chroma: still grey
    opaque = np.full(mask.shape + (1,), 255, np.uint8)
    kinds = {
        "2D": (grey, True),
        "one channel": (grey[..., None], True),
        "RGB without colour": (rgb_grey, True),
        "RGBA without colour": (np.dstack([rgb_grey, opaque]), True),
        "RGB": (img, False),
        "RGB, 3 levels of chroma": (
            np.dstack([grey, grey, np.clip(grey.astype(int) + 3, 0, 255)]).astype(np.uint8),
            False,
        ),
    }
    for name, (image, is_grey) in kinds.items():
        seen.clear()
        out = edit(image, mask, model=coloured, seed=0, palette="off" if name == "RGB" else "auto")
        assert seen == ([] if name == "RGB" else [is_grey]), name
        fill = out[mask][..., :3] if out.ndim == 3 else out[mask]
        if out.ndim == 3 and out.shape[2] >= 3:  # the fill is as grey as the image (at most the 2
            # levels of chroma the seamless correction carries in from its edge), else in colour
            assert (np.ptp(fill.astype(int), axis=1).max() <= 2) == is_grey, name
        far = ndimage.distance_transform_edt(~mask) >= 3  # past the feather band (alpha 0 from 2 + 1 px)
        assert np.array_equal(out[far], image[far]), name  # the known pixels as given


def test_pick_draws_only_allowed_codes_greedy_too():
    logits = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    allowed = torch.zeros(16, dtype=torch.bool)
    allowed[[3, 9]] = True
    gen = torch.Generator().manual_seed(1)
    for opts in (SamplingOptions(allowed=allowed), SamplingOptions(top_k=1, allowed=allowed)):
        assert set(pick(logits, opts, gen).tolist()) <= {3, 9}
    greedy = pick(logits, SamplingOptions(greedy=True, allowed=allowed), gen)
    assert torch.equal(greedy, torch.where(logits[:, 3] >= logits[:, 9], 3, 9))
    assert len(set(pick(logits, SamplingOptions(), gen).tolist())) > 2  # without it: any code


def test_table_round_trips_through_both_layouts_and_bad_tables_are_refused(coloured, tmp_path):
    for split in (False, True):
        path = save_model(coloured, tmp_path / f"m{split}", split=split)
        assert np.array_equal(load_model(path).vqgan.code_colours, coloured.vqgan.code_colours)
    assert load_model(save_model(ILATModel.tiny(), tmp_path / "plain")).vqgan.code_colours is None
    meta = json.loads(path.read_text())
    meta["code_colours"]["rgb_hex"] = meta["code_colours"]["rgb_hex"][:-6]  # 63 colours
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="63 colours, the codebook has 64"):
        load_model(path)
    meta["code_colours"] = {"rgb_hex": "not hex"}
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{path.name}.*not a colour table"):
        load_model(path)
    assert np.array_equal(
        colours_from_json(colours_to_json(coloured.vqgan.code_colours), 64, "x"), coloured.vqgan.code_colours
    )


def _spy(monkeypatch, *modules):
    """Record every code the samplers of ``modules`` draw and the allowed set they were given."""
    drawn, given = [], []

    def spy(logits, opts, generator):
        ids = pick(logits, opts, generator)
        drawn.extend(ids.tolist())
        given.append(opts.allowed)
        return ids

    for module in modules:
        monkeypatch.setattr(module, "pick", spy)
    return drawn, given


def test_edit_samples_only_the_palette_and_auto_is_off_with_a_sketch(coloured, monkeypatch):
    img, mask = _case()
    img[..., 2] = 0.05  # a blue-less image: the palette is a strict subset of the codes
    keep = allowed_codes(coloured.vqgan.code_colours, img, mask)
    assert 0 < keep.sum() < 64
    drawn, given = _spy(monkeypatch, sampler, sliding)
    res = edit_with_info(img, mask, model=coloured, seed=0, top_k=None)
    assert res.palette and drawn and set(drawn) <= set(np.flatnonzero(keep).tolist())
    assert np.array_equal(given[0].cpu().numpy(), keep)
    # the same seed gives the same edit, the palette taken from the first stage's cache entry
    # (a repeated Generate does not choose the codes again); without the palette another one
    calls = []
    monkeypatch.setattr(editing, "allowed_codes", lambda *a, **k: calls.append(a) or allowed_codes(*a, **k))
    assert np.array_equal(res.image, edit(img, mask, model=coloured, seed=0, top_k=None)) and calls == []
    off = edit_with_info(img, mask, model=coloured, seed=0, top_k=None, palette="off")
    assert not off.palette and not np.array_equal(off.image, res.image)
    # auto: not with a sketch, which draws its strokes in colours the band may lack; "on": yes
    drawn.clear(), given.clear()
    sketch = np.zeros(mask.shape)
    assert not edit_with_info(img, mask, sketch=sketch, model=coloured, seed=0).palette and given[-1] is None
    assert edit_with_info(img, mask, sketch=sketch, model=coloured, seed=0, palette="on").palette
    assert given[-1] is not None
    with pytest.raises(ValueError, match="palette must be one of auto, on, off, got 'yes'"):
        edit(img, mask, model=coloured, palette="yes")


def test_a_model_without_a_table_uses_the_palette_only_when_asked(monkeypatch):
    model = ILATModel.tiny(seed=3)
    img, mask = _case()
    assert not edit_with_info(img, mask, model=model, seed=0).palette
    assert model.vqgan.code_colours is None  # auto never pays for the table
    assert edit_with_info(img, mask, model=model, seed=0, palette="on").palette
    assert np.array_equal(colours_of(model.vqgan), code_colours(model.vqgan))  # computed once, kept
    # ... apart from the table a model carries: "auto" still does what it did before "on"
    assert model.vqgan.code_colours is None and not edit_with_info(img, mask, model=model, seed=0).palette


def test_imagebart_mode_keeps_to_the_palette(monkeypatch):
    model = ib_module.ImageBARTModel.tiny(resolution=32)
    model.vqgan.code_colours = code_colours(model.vqgan)
    img, mask = _case()
    img[..., 2] = 0.05
    keep = set(np.flatnonzero(allowed_codes(model.vqgan.code_colours, img, mask)).tolist())
    drawn, _ = _spy(monkeypatch, ib_module)
    assert edit_with_info(img, mask, model=model, mode="imagebart", seed=0, top_k=None).palette
    assert drawn and set(drawn) <= keep


def test_a_missing_table_is_computed_first_with_progress_and_cancel():
    """prepare_palette (what the widget and the CLI call before an edit): the table an edit
    with palette "on" would compute, counted over the codes and stopped by cancel, which keeps
    nothing; edit() itself stops there too."""
    from napari_ilat.engine.editing import prepare_palette
    from napari_ilat.engine.sampler import EditCancelled

    model = ILATModel.tiny(seed=3)
    img, mask = _case()
    assert not prepare_palette(model, palette="auto") and model.vqgan.code_colours is None
    with pytest.raises(EditCancelled):
        prepare_palette(model, palette="on", cancel=lambda: True)
    assert model.vqgan.code_colours is None
    with pytest.raises(EditCancelled):  # edit()'s own lazy table: cancelled before it is kept
        edit_with_info(img, mask, model=model, seed=0, palette="on", cancel=lambda: True)
    assert model.vqgan.code_colours is None and not has_colours(model.vqgan)
    seen = []
    assert prepare_palette(model, palette="on", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 64) for k in (16, 32, 48, 64)]  # 64 codes in batches of 16
    assert np.array_equal(colours_of(model.vqgan), code_colours(model.vqgan))
    assert not prepare_palette(model, palette="on")  # computed already: nothing to compute
    with pytest.raises(ValueError, match="palette must be one of"):
        prepare_palette(model, palette="yes")
