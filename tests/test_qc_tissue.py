"""Contrast, bias profile and banding measures on synthetic volumes whose levels are known."""
import numpy as np
import pytest

from bids_harmony.qc.tissue import bias_profile, slice_banding, slice_striping, wm_gm_ratio

BIDS = {"GM": 1, "WM": 2, "CSF": 3}
SIMULATOR = {"CSF": 1, "GM": 2, "WM": 3}
VOXEL_MM = np.array([2.0, 2.0, 2.0])


def _sphere_head(table, wm_radius_mm=60.0):
    """A WM ball in a 10 mm GM shell (2 mm voxels): WM 1.2 within 30 mm of the centre, 1.0
    beyond, GM 0.8, so the WM/GM ratio is 1.25 near the border and the bias profile 1.2."""
    size = int(2 * (wm_radius_mm + 14) / VOXEL_MM[0])
    distance = np.linalg.norm((np.indices((size,) * 3) - (size - 1) / 2) * VOXEL_MM[:, None, None, None], axis=0)
    labels = np.zeros(distance.shape, dtype=np.int16)
    labels[distance < wm_radius_mm + 10] = table["GM"]
    labels[distance < wm_radius_mm] = table["WM"]
    image = np.where(labels == table["GM"], 0.8, 0.0)
    image = np.where(labels == table["WM"], np.where(distance < 30, 1.2, 1.0), image)
    return image.astype(np.float32), labels


@pytest.mark.parametrize("table", [BIDS, SIMULATOR], ids=["bids", "simulator"])
def test_contrast_and_bias_profile_take_the_label_values_they_are_given(table):
    image, labels = _sphere_head(table)
    assert wm_gm_ratio(image, labels, VOXEL_MM, wm_label=table["WM"], gm_label=table["GM"]) == pytest.approx(1.25)
    assert bias_profile(image, labels, VOXEL_MM, wm_label=table["WM"]) == pytest.approx(1.2)
    small_image, small_labels = _sphere_head(table, wm_radius_mm=20.0)
    with pytest.raises(ValueError, match="too little white matter"):
        bias_profile(small_image, small_labels, VOXEL_MM, wm_label=table["WM"])


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
