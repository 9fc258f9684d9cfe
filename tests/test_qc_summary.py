"""The QC record of a run: intensity distributions, the flow's bits/dim, flags, the histogram."""
import json

import numpy as np
import pytest

from bids_harmony.model import load_model
from bids_harmony.qc.intensity import (
    QUANTILE_LEVELS,
    barycentre,
    wasserstein_from_quantiles,
    white_matter_level,
    wm_normalised_quantiles,
)
from bids_harmony.qc.likelihood import likelihood_summary, slice_bits_per_dim
from bids_harmony.qc.summary import IMAGE_METRICS, measure_image, run_qc

BIDS = {"GM": 1, "WM": 2, "CSF": 3}


def _three_tissues(wm=150.0, gm=100.0, csf=30.0):
    """Three 10^3-voxel cubes of constant tissue (WM, GM, CSF) on a 2 mm grid: 8 ml each."""
    labels = np.zeros((12, 36, 12), dtype=np.int16)
    image = np.zeros(labels.shape, dtype=np.float32)
    for column, (tissue, value) in enumerate((("WM", wm), ("GM", gm), ("CSF", csf))):
        where = np.s_[1:11, 1 + 12 * column:11 + 12 * column, 1:11]
        labels[where], image[where] = BIDS[tissue], value
    return image, labels, labels > 0, np.diag([2.0, 2.0, 2.0, 1.0])


def test_measure_image_gives_known_volumes_contrasts_and_normalised_intensity():
    image, labels, brain, affine = _three_tissues()
    # a tiny spread so CNR is defined: +-1 alternating inside each cube
    image = image + np.where(np.indices(image.shape).sum(0) % 2 == 0, 1.0, -1.0) * (labels > 0)
    measured = measure_image(image, labels, brain, affine=affine, label_values=BIDS)
    for tissue in ("gm", "wm", "csf"):
        assert measured[f"{tissue}_volume_ml"] == pytest.approx(8.0)
    assert measured["wm_gm_contrast"] == pytest.approx(1.5, rel=0.02)
    assert measured["csf_wm_contrast"] == pytest.approx(0.2, rel=0.02)
    assert measured["wm_intensity_normalised"] == pytest.approx(1.5, rel=0.02)  # brain median is GM's
    assert len(measured["brain_quantiles"]) == len(QUANTILE_LEVELS)


def test_wm_normalised_quantiles_ignore_the_intensity_scale():
    image, labels, brain, _ = _three_tissues()
    one = wm_normalised_quantiles(image, brain, labels, BIDS["WM"])
    scaled = wm_normalised_quantiles(7.0 * image, brain, labels, BIDS["WM"])
    assert np.allclose(one, scaled)
    assert one[-1] == pytest.approx(1.0) and one[0] == pytest.approx(0.2)
    assert white_matter_level(image, labels, BIDS["WM"]) == 150.0


def test_wasserstein_of_a_shift_is_the_shift_and_barycentre_is_the_mean():
    base = np.quantile(np.random.default_rng(0).normal(size=5000), QUANTILE_LEVELS)
    assert wasserstein_from_quantiles(base, base + 0.25) == pytest.approx(0.25)
    assert wasserstein_from_quantiles(base, base) == 0.0
    assert np.allclose(barycentre([base, base + 1.0]), base + 0.5)
    with pytest.raises(ValueError):
        wasserstein_from_quantiles(base[:10], base[:10])


def test_bits_per_dim_are_deterministic_clipped_and_lower_for_the_model_own_mean_slice():
    model = load_model()
    rng = np.random.default_rng(1)
    mean_slice = model.mean_slices[model.mean_slices.shape[0] // 2]
    noise = rng.uniform(size=mean_slice.shape).astype(np.float32)
    bits = slice_bits_per_dim(np.stack([mean_slice, noise]), model)
    assert bits.shape == (2,) and np.all(np.isfinite(bits))
    assert bits[0] < bits[1]  # a target-like slice beats noise
    assert np.array_equal(bits, slice_bits_per_dim(np.stack([mean_slice, noise]), model))
    assert np.allclose(slice_bits_per_dim(np.stack([mean_slice + 5.0]), model),
                       slice_bits_per_dim(np.ones((1,) + mean_slice.shape, np.float32), model))
    with pytest.raises(ValueError):
        slice_bits_per_dim(np.zeros((1, 8, 8), np.float32), model)


def test_likelihood_summary_against_a_threshold():
    assert likelihood_summary(np.array([1.0, 2.0, 9.0]), 5.0) == {
        "bits_per_dim": 2.0, "ood_fraction": pytest.approx(1 / 3), "out_of_distribution": False}
    assert likelihood_summary(np.array([6.0, 7.0]), 5.0)["out_of_distribution"] is True
    assert likelihood_summary(np.array([6.0]), None)["out_of_distribution"] is None


def _record(harmonized_scale=1.0, wm_moved=0, banding=(0.01, 0.01), calibration=None):
    image, labels, brain, affine = _three_tissues()
    image = image + np.where(np.indices(image.shape).sum(0) % 2 == 0, 1.0, -1.0) * (labels > 0)
    harmonized_labels = labels.copy()
    if wm_moved:  # part of the WM relabelled GM
        harmonized_labels[1:1 + wm_moved, 1:11, 1:11] = BIDS["GM"]
    harmonized = image * harmonized_scale
    measure = {name: measure_image(data, lab, brain, affine=affine, label_values=BIDS)
               for name, data, lab in (("source", image, labels), ("harmonized", harmonized, harmonized_labels))}
    return run_qc(source=measure["source"], harmonized=measure["harmonized"], source_wm=labels == 2,
                  harmonized_wm=harmonized_labels == 2, source_bits=np.array([8.0, 8.2]),
                  harmonized_bits=np.array([8.0, 8.1]), source_banding=banding[0], harmonized_banding=banding[1],
                  contrast_agreement=0.9, min_contrast_agreement=0.5, calibration=calibration, label_values=BIDS)


def test_run_qc_flags_what_harmonization_broke_and_is_json():
    clean = _record()
    assert not any(clean["flags"].values())
    assert set(clean["metrics"]["source"]) == set(IMAGE_METRICS)
    assert clean["metrics"]["wm_dice_source_harmonized"] == 1.0
    assert clean["target_calibrated"] is False and clean["metrics"]["harmonized"]["wasserstein_to_target"] is None
    json.dumps(clean, allow_nan=False)
    assert _record(wm_moved=6)["flags"]["anatomy_changed"]  # Dice 2*400/(1000+400) < 0.8
    assert _record(banding=(0.01, 0.05))["flags"]["banding_increased"]
    calibration = {"bits_per_dim": {"threshold": 7.0},
                   "brain_intensity": {"quantiles": list(_record()["brain_quantiles"]["source"])}}
    calibrated = _record(calibration=calibration)
    assert calibrated["flags"]["harmonized_out_of_distribution"]  # 8.05 > 7
    assert calibrated["metrics"]["source"]["wasserstein_to_target"] == pytest.approx(0.0, abs=1e-9)


def test_brain_histogram_is_an_svg_with_the_three_curves(tmp_path):
    from bids_harmony.reports.figures import brain_histogram

    record = _record(calibration={"bits_per_dim": {"threshold": 9.0},
                                  "brain_intensity": {"quantiles": list(np.linspace(0.1, 1.2, 101))}})
    out = brain_histogram(record["brain_quantiles"], str(tmp_path / "h.svg"))
    text = open(out).read()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "target scanner (reference)" in text and "harmonized" in text
