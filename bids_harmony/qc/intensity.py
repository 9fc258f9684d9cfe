"""Brain intensity distributions on a common scale, and distances between them.

Intensities are divided by the white matter's median (a T1w's brightest tissue, the scale
every scanner agrees on), then summarised by quantiles; the Wasserstein-1 distance of two
distributions is the mean absolute gap of their quantile functions, and the average of
quantile functions is their Wasserstein barycentre (the reference of a scanner's subjects).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .tissue import core_mask

#: Quantile levels kept per image: every percentile.
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)


def white_matter_level(image: np.ndarray, labels: np.ndarray, wm_label: int, min_voxels: int = 50) -> float:
    """Median intensity of core white matter (``wm_label``, eroded by one voxel)."""
    values = np.asarray(image)[core_mask(np.asarray(labels), wm_label)]
    if len(values) < min_voxels:
        raise ValueError(f"too few core WM voxels (label {wm_label}): {len(values)}, at least {min_voxels}")
    level = float(np.median(values))
    if not np.isfinite(level) or level <= 0:
        raise ValueError(f"the white matter's median intensity is {level}: no positive scale")
    return level


def wm_normalised_quantiles(image: np.ndarray, brain: np.ndarray, labels: np.ndarray, wm_label: int,
                            levels: np.ndarray = QUANTILE_LEVELS) -> np.ndarray:
    """Quantiles (at ``levels``) of the brain's intensities divided by the WM median."""
    image = np.asarray(image, dtype=np.float64)
    values = image[np.asarray(brain, dtype=bool)]
    if not len(values) or not np.all(np.isfinite(values)):
        raise ValueError("the brain mask is empty or holds non-finite intensities")
    return np.quantile(values / white_matter_level(image, labels, wm_label), levels)


def wasserstein_from_quantiles(a: np.ndarray, b: np.ndarray, levels: np.ndarray = QUANTILE_LEVELS) -> float:
    """Wasserstein-1 distance of two distributions given by quantiles at the same ``levels``:
    the integral over the levels of the quantile functions' absolute gap (trapezoid rule)."""
    gap = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    levels = np.asarray(levels, dtype=np.float64)
    if gap.shape != levels.shape:
        raise ValueError(f"quantiles {gap.shape} do not match the levels {levels.shape}")
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(levels)))


def barycentre(quantiles: Sequence[np.ndarray]) -> np.ndarray:
    """The Wasserstein barycentre of distributions given by quantiles at the same levels."""
    stacked = np.asarray(quantiles, dtype=np.float64)
    if stacked.ndim != 2 or not len(stacked):
        raise ValueError("a barycentre needs at least one quantile function")
    return stacked.mean(axis=0)
