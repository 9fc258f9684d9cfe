"""Tissue-level scores of the benchmark: contrast ratios, their gaps, brain RMSE and per-tissue
distances, on volumes and on stacks of slices; and the volume level on a simulated head."""
import nibabel as nib
import numpy as np
import pytest

from bids_harmony.bench.cases import groundtruth_file, split_images
from bids_harmony.bench.tissue import TISSUE_SCORES, TISSUES, core_masks, tissue_scores
from bids_harmony.bench.volumes import VOLUME_SCORES, score_volume
from bids_harmony.model import load_model

LEVELS = {"CSF": 0.25, "GM": 0.6, "WM": 1.0}


def _phantom(levels=LEVELS, shape=(12, 12, 30)):
    """Three slabs of tissue along the last axis (CSF, GM, WM), with mild noise."""
    labels = np.zeros(shape, np.int16)
    third = shape[2] // 3
    for index, name in enumerate(("CSF", "GM", "WM")):
        labels[..., index * third:(index + 1) * third] = TISSUES[name]
    image = np.zeros(shape)
    for name, level in levels.items():
        image[labels == TISSUES[name]] = level
    return image + np.random.default_rng(0).normal(0, 0.01, shape), labels


def test_the_truth_against_itself_and_a_rescaled_copy_scores_perfect():
    truth, labels = _phantom()
    for image in (truth, 3.7 * truth):
        scores = tissue_scores(image, truth, labels)
        assert list(scores) == list(TISSUE_SCORES)
        assert scores["wm_gm"] == pytest.approx(1.0 / 0.6, rel=0.02) and scores["csf_wm"] == pytest.approx(0.25, rel=0.05)
        for key in ("wm_gm_gap", "csf_wm_gap", "brain_rmse", "tissue_w1"):
            assert scores[key] == pytest.approx(0.0, abs=1e-9), key


def test_a_flatter_contrast_gives_the_gaps_their_sign_and_size():
    truth, labels = _phantom()
    image, _ = _phantom({"CSF": 0.35, "GM": 0.7, "WM": 1.0})
    scores = tissue_scores(image, truth, labels)
    assert scores["wm_gm_gap"] == pytest.approx(1 / 0.7 - 1 / 0.6, abs=0.02)  # lower WM/GM: negative
    assert scores["csf_wm_gap"] == pytest.approx(0.10, abs=0.01)  # brighter CSF: positive
    # after the WM scaling, CSF is 0.1 off and GM 0.1 off on two thirds of the brain
    assert scores["brain_rmse"] == pytest.approx(np.sqrt(2 / 3 * 0.01), abs=0.01)
    assert scores["tissue_w1"] == pytest.approx((0.1 + 0.1 + 0.0) / 3, abs=0.01)


def test_stacks_of_slices_are_eroded_in_plane_only():
    labels = np.full((3, 10, 10), TISSUES["WM"], np.int16)
    labels[1] = TISSUES["GM"]  # one slice of GM between two of WM: no 3-D neighbour agrees
    assert not core_masks(labels, slices=False)["GM"].any()
    assert core_masks(labels, slices=True)["GM"].sum() == 64
    image = np.where(labels == TISSUES["WM"], 1.0, 0.5)
    with pytest.raises(ValueError, match="too few core CSF voxels"):
        tissue_scores(image, image, labels, slices=True)


def test_volume_level_scores_the_same_head_on_both_scanners(multiscanner_dataset):
    """The paired target image scored as if it were the source scores perfect (the chain of
    native grid, resampling and labels lines up); a 1.5 T head (Domain 2) has the lower WM/GM
    contrast the simulator gives it; the slice-wise baseline, put back on the native grid, scores
    and measures banding (BlindHarmony's columns: test_bench's --volumes run)."""
    model = load_model()
    _, sources = split_images(model, multiscanner_dataset)
    domain, image = next((domain, image) for domain, image in sources if domain.startswith("Domain 2"))
    groundtruth = multiscanner_dataset / "derivatives" / "groundtruth"
    paired = groundtruth_file(image, groundtruth, "desc-pairedtarget_T1w")
    labels = groundtruth_file(image, groundtruth, "desc-pairedtarget_dseg")
    columns = {"none": None, "histogram matching": None}
    rows = score_volume(image, paired, labels, groundtruth_file(image, groundtruth, "dseg"), model, columns)
    assert [row["method"] for row in rows] == list(columns)
    assert all(np.isfinite(row[key]) for row in rows for key in VOLUME_SCORES)
    source = rows[0]
    assert source["wm_gm_gap"] < -0.05 and source["brain_rmse"] > 0.02, source

    as_source = type(image)(paired, image.subject, image.session, image.metadata)
    itself = score_volume(as_source, paired, labels, labels, model, {"none": None})[0]
    assert abs(itself["wm_gm_gap"]) < 1e-9 and itself["brain_rmse"] < 1e-9 and itself["tissue_w1"] < 1e-9
    truth = np.asarray(nib.load(paired).dataobj, dtype=np.float64)
    assert itself["wm_gm"] == pytest.approx(tissue_scores(truth, truth, np.asarray(nib.load(labels).dataobj))["wm_gm"])
