"""Histogram matching to the target domain: the global-intensity baseline of the paper's tables.

A fair version, not a strawman: each source slice is matched to the target's intensity
quantiles **at the same slice position** (stored in the model, from the training slices), over
the head only (above 2 % of the slice range, as the stored quantiles are), so the background does
not swamp the histogram. Background pixels are scaled linearly onto the target's lowest head
quantile, which keeps the map monotone over the whole slice.
"""
from __future__ import annotations

import numpy as np

HEAD_THRESHOLD = 0.02  # the share of the slice range the model's quantiles were taken above


def _target_quantiles(quantiles: np.ndarray, position: int) -> np.ndarray:
    """The position's quantiles, or the mean over covered positions where it has none."""
    row = quantiles[position]
    if np.any(row > 0):
        return row
    covered = quantiles[np.any(quantiles > 0, axis=1)]
    return covered.mean(0) if len(covered) else np.linspace(0.0, 1.0, quantiles.shape[1])


def histogram_match(slices: np.ndarray, positions: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Match each (H, W) slice in [0, 1] to the target quantiles at its position."""
    slices = np.asarray(slices, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, quantiles.shape[1])
    matched = np.empty_like(slices)
    for index, (image, position) in enumerate(zip(slices, np.asarray(positions))):
        target = np.maximum.accumulate(_target_quantiles(quantiles, int(position)))
        head = image > HEAD_THRESHOLD
        output = image * (target[0] / HEAD_THRESHOLD)
        if head.any():
            values, inverse = np.unique(image[head], return_inverse=True)
            ranks = np.cumsum(np.bincount(inverse.ravel()))  # pixels at or below each value
            output[head] = np.interp(ranks / ranks[-1], levels, target)[inverse.ravel()]
        matched[index] = np.clip(output, 0.0, 1.0)
    return matched.astype(np.float32)
