"""Image-quality metrics of the paper's tables: PSNR and SSIM on [0, 1] slices.

Both are computed per slice, over the whole slice or within a mask (the brain): PSNR from the
mean squared error over the masked pixels, SSIM as the mean of the SSIM map over them (the map
itself is computed on the whole slice, so the local windows see real neighbours).
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

# a perfect match would give an infinite PSNR; cap it so means stay finite
MAX_PSNR_DB = 100.0


def psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB for data range 1."""
    error = np.square(np.asarray(image, np.float64) - np.asarray(reference, np.float64))
    mse = float(error[mask].mean() if mask is not None else error.mean())
    return MAX_PSNR_DB if mse <= 10 ** (-MAX_PSNR_DB / 10) else float(-10.0 * np.log10(mse))


def ssim(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Structural similarity (skimage's Gaussian-free 7x7 windows) for data range 1."""
    mean, ssim_map = structural_similarity(np.asarray(image, np.float64), np.asarray(reference, np.float64),
                                           data_range=1.0, full=True)
    return float(ssim_map[mask].mean() if mask is not None else mean)
