"""The target scanner's QC calibration: measured on held-out target subjects, kept in the model
file, re-measured by ``bids_harmony-train --calibrate-only``; the bundled model's separates its
own scanner from others."""
import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import coarse_copy

from bids_harmony.bids.selection import open_layout, select_t1w
from bids_harmony.harmonize import prepare_t1w
from bids_harmony.model import FlowConfig, build_flow, bundled_model_path, load_model, save_model
from bids_harmony.model.file import FORMAT_VERSION, HarmonyModel
from bids_harmony.preprocessing import PreprocessingConfig
from bids_harmony.qc.calibration import NORMALISATION, REFERENCE_METRICS, calibrate
from bids_harmony.qc.intensity import QUANTILE_LEVELS
from bids_harmony.qc.likelihood import slice_bits_per_dim

TINY = FlowConfig(levels=2, steps_per_level=1, hidden_channels=8, num_res_blocks=1)
CONFIG = PreprocessingConfig()
SHAPE = (1,) + CONFIG.slice_shape
CALIBRATION_KEYS = {"subjects", "images", "bits_per_dim", "brain_intensity", "reference", "command", "finished",
                    "versions"}


def _tiny_model(calibration=None):
    means = np.random.default_rng(0).random((CONFIG.n_positions,) + CONFIG.slice_shape).astype(np.float32)
    return HarmonyModel(build_flow(TINY, SHAPE).eval(), TINY, SHAPE, CONFIG, means,
                        np.zeros((CONFIG.n_positions, 11), np.float32), {"scanners": []}, {"steps": 1},
                        calibration)


def _weights_digest(model):
    digest = hashlib.sha256()
    for key, tensor in sorted(model.flow.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_a_format_1_model_file_loads_without_a_calibration(tmp_path):
    path = tmp_path / "model.pt"
    save_model(_tiny_model(), path)
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 2 and payload["calibration"] is None
    del payload["calibration"]  # as format 1 wrote it
    payload["format_version"] = 1
    old = tmp_path / "format1.pt"
    torch.save(payload, old)
    loaded = load_model(old)
    assert loaded.calibration is None and loaded.flow_config == TINY


def test_the_calibration_survives_save_and_load(tmp_path):
    calibration = {"subjects": ["03", "12"], "images": ["sub-03_T1w.nii.gz"],
                   "bits_per_dim": {"percentile": 99.0, "threshold": np.float64(8.5), "median": 8.25, "slices": 256},
                   "brain_intensity": {"normalisation": NORMALISATION, "levels": QUANTILE_LEVELS,
                                       "quantiles": np.linspace(0.0, 2.0, 101)},
                   "reference": {"wm_gm_contrast": np.float32(1.5)}, "command": None, "finished": "now",
                   "versions": {"numpy": np.__version__}}
    path = tmp_path / "model.pt"
    save_model(_tiny_model(calibration), path)
    loaded = load_model(path)
    assert loaded.calibration["bits_per_dim"] == {"percentile": 99.0, "threshold": 8.5, "median": 8.25, "slices": 256}
    assert loaded.calibration["brain_intensity"]["quantiles"] == pytest.approx(np.linspace(0.0, 2.0, 101).tolist())
    assert loaded.calibration["brain_intensity"]["levels"] == pytest.approx(QUANTILE_LEVELS.tolist())
    assert loaded.calibration["reference"]["wm_gm_contrast"] == 1.5 and loaded.calibration["command"] is None
    assert set(loaded.calibration) == CALIBRATION_KEYS


@pytest.fixture(scope="module")
def cohort_images(target_cohort):
    """The target cohort's T1w images (seed 11: a dataset the bundled model never saw)."""
    return select_t1w(open_layout(target_cohort))


@pytest.fixture(scope="module")
def calibrated(target_cohort, cohort_images, tmp_path_factory):
    """The bundled model calibrated on 2 mm copies of two subjects of the target cohort (the
    segmentation at 1 mm would cost a minute per subject; what is tested is the record)."""
    images = cohort_images[:2]
    subjects = [image.subject for image in images]
    coarse = coarse_copy(target_cohort, tmp_path_factory.mktemp("coarse") / "calibration", subjects)
    return calibrate(load_model(), [coarse / image.path.relative_to(target_cohort) for image in images],
                     subjects=subjects, command="test")


def test_calibrate_on_two_target_subjects(calibrated, cohort_images):
    assert set(calibrated) == CALIBRATION_KEYS
    assert calibrated["subjects"] == [image.subject for image in cohort_images[:2]]
    assert calibrated["images"] == [image.path.name for image in cohort_images[:2]]
    bits = calibrated["bits_per_dim"]
    assert bits["percentile"] == 99.0 and np.isfinite(bits["threshold"]) and bits["threshold"] > bits["median"]
    assert 100 < bits["slices"] <= 2 * CONFIG.n_positions
    intensity = calibrated["brain_intensity"]
    assert intensity["normalisation"] == NORMALISATION and intensity["levels"] == QUANTILE_LEVELS.tolist()
    quantiles = np.asarray(intensity["quantiles"])
    assert quantiles.shape == (101,) and np.all(np.isfinite(quantiles)) and np.all(np.diff(quantiles) >= 0)
    assert quantiles[0] < quantiles[50] < 1.0 < quantiles[-1]  # the brain's median is below its WM's
    reference = calibrated["reference"]
    assert list(reference) == list(REFERENCE_METRICS) and all(np.isfinite(v) for v in reference.values())
    assert reference["wm_gm_contrast"] > 1.2 and reference["csf_wm_contrast"] < 0.8, reference
    assert 300 < reference["gm_volume_ml"] < 2000 and 300 < reference["wm_volume_ml"] < 2000, reference
    assert calibrated["command"] == "test" and "numpy" in calibrated["versions"]


def _median_bits(path, model):
    prepared = prepare_t1w(path, model)
    return float(np.median(slice_bits_per_dim(prepared.slices[prepared.geometry.valid], model)))


def test_bundled_calibration_separates_the_target_scanner_from_another(cohort_images, multiscanner_dataset):
    """The shipped threshold lies above the median bits/dim of target-scanner slices of a dataset
    the model never saw (the target cohort, seed 11) and below that of another scanner's slices
    (seed 7)."""
    model = load_model()
    assert model.calibration is not None and bundled_model_path().stat().st_size < 20 * 2**20
    assert model.calibration["subjects"] == model.target["validation_subjects"]
    threshold = model.calibration["bits_per_dim"]["threshold"]
    target = _median_bits(cohort_images[0].path, model)
    assert target < threshold, (target, threshold)
    participants = pd.read_csv(multiscanner_dataset / "participants.tsv", sep="\t")
    others = {}
    for scanner, group in participants[participants.scanner != "target"].groupby("scanner"):
        label = group.participant_id.iloc[0]
        others[scanner] = _median_bits(multiscanner_dataset / label / "anat" / f"{label}_T1w.nii.gz", model)
    assert max(others.values()) > threshold, (others, threshold)


def _calibrate_command(dataset, model, *extra):
    return [sys.executable, "-m", "bids_harmony.cli.train", str(dataset), str(model), "--target",
            "StationName=TRIO-A", "--calibrate-only", "--skip-bids-validation", "--device", "cpu", *extra]


def test_calibrate_only_measures_the_recorded_validation_subject_in_place(target_cohort, cohort_images, tmp_path,
                                                                         tmp_path_factory):
    model = load_model()
    subject = cohort_images[-1].subject
    dataset = coarse_copy(target_cohort, tmp_path_factory.mktemp("coarse") / "cohort", [subject])
    model.target = {**model.target, "validation_subjects": [subject]}
    model.calibration = None
    path = tmp_path / "copy.pt"
    save_model(model, path)
    weights = _weights_digest(load_model(path))

    result = subprocess.run(_calibrate_command(dataset, path), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"validation subject(s) sub-{subject}" in result.stdout
    updated = load_model(path)
    assert _weights_digest(updated) == weights and updated.training == model.training
    assert np.array_equal(updated.mean_slices, model.mean_slices)
    calibration = updated.calibration
    assert calibration["subjects"] == [subject] and calibration["images"] == [cohort_images[-1].path.name]
    assert np.isfinite(calibration["bits_per_dim"]["threshold"]) and "--calibrate-only" in calibration["command"]
    assert not list(tmp_path.glob("*.tmp*")) and sorted(p.name for p in tmp_path.iterdir()) == ["copy.pt"]


def test_calibrate_only_refuses_a_missing_validation_subject(target_cohort, tmp_path):
    model = load_model()
    model.target = {**model.target, "validation_subjects": ["01", "99"]}
    path = tmp_path / "copy.pt"
    save_model(model, path)
    before = path.read_bytes()
    result = subprocess.run(_calibrate_command(target_cohort, path), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "sub-99" in error and "sub-01" not in error and str(target_cohort) in error
    assert path.read_bytes() == before
    missing = subprocess.run(_calibrate_command(target_cohort, tmp_path / "none.pt"), capture_output=True, text=True)
    assert missing.returncode != 0 and "no such model file" in missing.stderr
