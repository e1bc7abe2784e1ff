import numpy as np
import pytest

from napari_ilat.evaluation.metrics import all_metrics, mae, paired_difference, psnr, ssim, thumbnail_code


def test_psnr_is_standard_not_reference_plus_one():
    a = np.zeros((8, 8, 3))
    b = np.full((8, 8, 3), 0.1)  # MSE = 0.01 -> 20 dB (the reference code would say 21)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")
    assert psnr((a * 255).astype(np.uint8), (b * 255 + 0.5).astype(np.uint8)) == pytest.approx(
        10 * np.log10(1 / (26 / 255) ** 2)
    )


def test_masked_metrics_look_only_inside_the_mask():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 3))
    b = a.copy()
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    b[~mask] = 0  # damage only outside
    m = all_metrics(b, a, mask)
    assert m["psnr_mask"] == float("inf") and m["mae_mask"] == 0
    assert m["psnr"] < 20 and m["mae"] > 0.3
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(b, a, mask) > ssim(b, a)
    assert mae(a[..., 0], b[..., 0], mask) == 0


@pytest.mark.parametrize("n_values, levels", [(512, 8), (1000, 10), (999, 9), (64, 4), (16384, 25)])
def test_thumbnail_code_quantizes_to_the_budget(n_values, levels):
    # a flat colour survives the thumbnail and the bicubic round trip, so the output is the
    # quantizer's level for that colour: L levels per channel with L^3 <= n_values
    colour = np.array([0.03, 0.51, 0.97])
    out = thumbnail_code(np.broadcast_to(colour, (32, 48, 3)), 8, n_values)
    expected = (np.minimum(np.floor(colour * levels), levels - 1) + 0.5) / levels
    assert out.shape == (32, 48, 3)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-9)


def test_thumbnail_code_loses_detail_finer_than_the_factor():
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.random((8, 8, 3)), 16, 0), 16, 1)  # 16-px blocks
    fine = rng.random((128, 128, 3))  # pixel noise: a 16x16 thumbnail keeps ~nothing
    assert psnr(thumbnail_code(smooth, 8, 4096), smooth) > psnr(thumbnail_code(fine, 8, 4096), fine) + 5
    # a finer factor keeps more; uint8 input is read as [0, 1]
    u8 = (smooth * 255).astype(np.uint8)
    assert psnr(thumbnail_code(u8, 4, 512), u8) > psnr(thumbnail_code(u8, 8, 512), u8)
    with pytest.raises(ValueError, match="divisible"):
        thumbnail_code(smooth[:100], 8, 512)
    with pytest.raises(ValueError, match="HxWx3"):
        thumbnail_code(smooth[..., 0], 8, 512)
    with pytest.raises(ValueError, match="levels"):
        thumbnail_code(smooth, 8, 7)


def test_hue_error_measures_turned_colours_on_coloured_pixels_only():
    from napari_ilat.evaluation.metrics import hue_error

    red = np.zeros((4, 4, 3), np.uint8)
    red[...] = (200, 0, 0)
    green = red[..., [1, 0, 2]]
    assert hue_error(red, red) == 0
    assert abs(hue_error(red, green) - 120) < 1e-6
    assert abs(hue_error(green, red) - 120) < 1e-6  # circular, symmetric
    grey = np.full((4, 4, 3), 128, np.uint8)
    assert np.isnan(hue_error(grey, red))  # hue means nothing for a grey reference
    half = red.copy()
    half[:2] = 128  # only the coloured half counts
    assert abs(hue_error(half, green) - 120) < 1e-6


def test_psnr_cap():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255
    assert psnr(a, a) == float("inf") and psnr(a, a, cap=50.0) == 50.0
    assert psnr(a, b, cap=50.0) == psnr(a, b) < 50.0


def test_paired_difference_is_the_mean_difference_and_its_standard_error():
    a, b = [3.0, 5.0, 4.0, 6.0], [1.0, 2.0, 2.0, 3.0]  # differences 2, 3, 2, 3
    diff, se = paired_difference(a, b)
    assert diff == pytest.approx(2.5)
    assert se == pytest.approx(np.std([2, 3, 2, 3], ddof=1) / 2)
    assert paired_difference([1.0], [0.5]) == (0.5, 0.0)  # one case: no spread to estimate
