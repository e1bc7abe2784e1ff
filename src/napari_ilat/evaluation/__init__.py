"""Evaluation: metrics (PSNR/SSIM/MAE), quality and speed benchmarks on the held-out data."""
