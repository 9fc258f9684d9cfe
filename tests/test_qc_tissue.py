"""Banding measures on a synthetic volume whose white-matter levels are known."""
import numpy as np

from bids_harmony.qc.tissue import slice_banding, slice_striping


def _volume(levels):
    rng = np.random.default_rng(0)
    slices = np.stack([level + 0.001 * rng.standard_normal((20, 20)) for level in levels])
    return slices, np.ones_like(slices, dtype=bool)


def test_detrended_banding_ignores_a_smooth_drift_and_keeps_the_stripes():
    positions = np.arange(80)
    drift = 1.0 + 0.2 * np.sin(positions / 80 * np.pi)  # a field profile along the head
    stripes = np.where(positions % 2 == 0, 0.01, -0.01)  # every other slice 2 % off
    smooth, mask = _volume(drift)
    striped, _ = _volume(drift + stripes)
    assert slice_banding(smooth, mask) > 0.003  # the drift counts in the plain jumps
    assert slice_banding(smooth, mask, detrend_slices=4) < 0.0005
    assert slice_striping(smooth, mask) < 0.0005
    assert 0.015 < slice_banding(striped, mask, detrend_slices=4) < 0.025
    assert 0.015 < slice_striping(striped, mask) < 0.025
    # slices without white matter break adjacency but not the trend
    mask[30:33] = False
    assert slice_banding(smooth, mask, detrend_slices=4) < 0.0005
