import numpy as np
import pytest

from napari_ilat.metrics import all_metrics, mae, psnr, ssim


def test_psnr_is_standard_not_reference_plus_one():
    a = np.zeros((8, 8, 3))
    b = np.full((8, 8, 3), 0.1)  # MSE = 0.01 -> 20 dB (the reference code would say 21)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")
    assert psnr((a * 255).astype(np.uint8), (b * 255 + 0.5).astype(np.uint8)) == pytest.approx(
        10 * np.log10(1 / (26 / 255) ** 2))


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
