"""The simulated multi-scanner dataset, read back from disk as a user would."""
import json
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids import BIDSLayout
from nibabel.processing import resample_from_to
from scipy import stats

from bids_harmony.qc import bias_profile, wm_gm_ratio
from bids_harmony.simulate.scanners import SCANNERS

GROUNDTRUTH = "derivatives/groundtruth"


@pytest.fixture(scope="module")
def participants(multiscanner_dataset):
    return pd.read_csv(multiscanner_dataset / "participants.tsv", sep="\t")


def _files(root, subject):
    """Source T1w, its labels, and (for source scanners) the paired target T1w and labels."""
    anat = root / GROUNDTRUTH / subject / "anat"
    files = {
        "image": root / subject / "anat" / f"{subject}_T1w.nii.gz",
        "labels": anat / f"{subject}_dseg.nii.gz",
        "paired_image": anat / f"{subject}_desc-pairedtarget_T1w.nii.gz",
        "paired_labels": anat / f"{subject}_desc-pairedtarget_dseg.nii.gz",
    }
    return {key: path for key, path in files.items() if path.exists()}


def _label_values(root):
    """Tissue name -> label value, from the ground truth's own table (not BIDS's 1 GM, 2 WM)."""
    table = pd.read_csv(root / GROUNDTRUTH / "dseg.tsv", sep="\t")
    return dict(zip(table["name"], table["index"]))


def _measure(image_path, labels_path, label_values):
    image = nib.load(str(image_path))
    data = image.get_fdata(dtype=np.float32)
    labels = np.asarray(nib.load(str(labels_path)).dataobj)
    zooms = image.header.get_zooms()[:3]
    wm, gm = label_values["WM"], label_values["GM"]
    return (wm_gm_ratio(data, labels, zooms, wm_label=wm, gm_label=gm),
            bias_profile(data, labels, zooms, wm_label=wm))


@pytest.fixture(scope="module")
def scanner_signatures(multiscanner_dataset, participants):
    """Per subject: contrast and bias profile of its scan and of its paired target scan."""
    label_values = _label_values(multiscanner_dataset)
    rows = []
    for _, row in participants.iterrows():
        files = _files(multiscanner_dataset, row.participant_id)
        ratio, bias = _measure(files["image"], files["labels"], label_values)
        entry = {"subject": row.participant_id, "scanner": row.scanner, "ratio": ratio, "bias": bias}
        if "paired_image" in files:
            entry["paired_ratio"], entry["paired_bias"] = _measure(files["paired_image"], files["paired_labels"],
                                                                   label_values)
        rows.append(entry)
    return pd.DataFrame(rows)


def test_official_validator_reports_no_errors(multiscanner_dataset):
    result = subprocess.run(
        ["bids-validator-deno", str(multiscanner_dataset), "--recursive", "--format", "json"],
        capture_output=True, text=True, timeout=300,
    )
    report = json.loads(result.stdout)
    parts = {"raw": report, **report.get("derivativesSummary", {})}
    assert "/derivatives/groundtruth/" in parts
    for name, part in parts.items():
        errors = [issue for issue in part["issues"]["issues"] if issue["severity"] == "error"]
        assert not errors, (name, errors[:3])
    assert report["summary"]["subjects"] and len(report["summary"]["subjects"]) == 10


def test_layout_metadata_and_participants(multiscanner_dataset, participants):
    layout = BIDSLayout(multiscanner_dataset, derivatives=True)
    t1w = layout.get(suffix="T1w", extension=".nii.gz", scope="raw")
    assert len(t1w) == 10
    paired = layout.get(suffix="T1w", desc="pairedtarget", extension=".nii.gz", scope="derivatives")
    assert len(paired) == 8
    assert set(participants.scanner) == set(SCANNERS)
    assert participants.groupby("scanner").size().eq(2).all()
    assert participants.anatomy.nunique() >= 3
    for _, row in participants.iterrows():
        metadata = layout.get(subject=row.participant_id[4:], suffix="T1w", extension=".nii.gz",
                              scope="raw")[0].get_metadata()
        scanner = SCANNERS[row.scanner]
        assert metadata["ManufacturersModelName"] == scanner.model
        assert metadata["MagneticFieldStrength"] == scanner.field_strength
        # BIDS units: seconds and degrees
        assert 1.0 < metadata["RepetitionTimePreparation"] < 3.0
        assert 0.005 < metadata["RepetitionTimeExcitation"] < 0.012
        assert 0.002 < metadata["EchoTime"] < 0.005
        assert 5 <= metadata["FlipAngle"] <= 12
        assert ("InversionTime" in metadata) == (row.scanner != "domain1")  # Vida: TI unknown
        for key in ("DeviceSerialNumber", "StationName", "InstitutionName", "Manufacturer"):
            assert metadata[key]
    vision = layout.get(suffix="T1w", extension=".nii.gz", ManufacturersModelName="MAGNETOM Vision",
                        scope="raw")[0]
    assert vision.get_metadata()["InversionTime"] == pytest.approx(0.020)
    # the target and Domain 4 share model and protocol; only the site tells them apart
    target = layout.get(suffix="T1w", extension=".nii.gz", StationName="TRIO-A", scope="raw")
    domain4 = layout.get(suffix="T1w", extension=".nii.gz", StationName="TRIO-E", scope="raw")
    assert len(target) == len(domain4) == 2
    meta_a, meta_e = target[0].get_metadata(), domain4[0].get_metadata()
    differing = {key for key in meta_a if meta_a[key] != meta_e.get(key)}
    assert differing == {"DeviceSerialNumber", "StationName", "InstitutionName"}


def test_scans_are_stored_as_a_scanner_would(multiscanner_dataset, participants):
    for _, row in participants.iterrows():
        scanner = SCANNERS[row.scanner]
        image = nib.load(str(_files(multiscanner_dataset, row.participant_id)["image"]))
        assert image.shape == scanner.matrix
        assert np.allclose(image.header.get_zooms(), scanner.voxel_size, atol=1e-4)
        assert image.get_data_dtype() == np.int16
        assert image.dataobj.slope != 1.0  # int16 with a scale factor
        assert int(image.header["sform_code"]) > 0 and int(image.header["qform_code"]) > 0
        # a sagittal slab: the first voxel axis (partitions) runs left-right
        assert nib.aff2axcodes(image.affine)[0] in ("L", "R")
        assert np.allclose(image.affine, image.header.get_qform(), atol=1e-4)


def test_source_scanners_differ_from_target_in_contrast(scanner_signatures):
    """Domains 1-3 change the local WM/GM contrast; Domain 4 (same model) does not."""
    sources = scanner_signatures.dropna(subset=["paired_ratio"])
    change = (sources.ratio / sources.paired_ratio - 1.0).abs().groupby(sources.scanner).mean()
    for domain in ("domain1", "domain2", "domain3"):
        assert change[domain] > 0.02, change.to_dict()
    assert change["domain4"] < 0.01, change.to_dict()


def test_contrast_lies_in_the_range_published_relaxation_times_imply(scanner_signatures):
    """Wright et al. 2008 T1 (mean +- 1 sd) and +-15 % B1+ bound the MPRAGE WM/GM ratio.

    3 T protocols: 1.50-2.30; the 1.5 T Vision protocol: 1.30-2.04 (docs/simulation.md).
    """
    by_field = scanner_signatures.assign(
        field=scanner_signatures.scanner.map(lambda key: SCANNERS[key].field_strength)
    )
    three_tesla = by_field[by_field.field == 3.0].ratio
    one_and_half = by_field[by_field.field == 1.5].ratio
    assert three_tesla.between(1.50, 2.30).all(), three_tesla.to_list()
    assert one_and_half.between(1.30, 2.04).all(), one_and_half.to_list()
    assert three_tesla.mean() > one_and_half.mean()


def test_every_source_scanner_has_its_own_bias_profile(scanner_signatures):
    sources = scanner_signatures.dropna(subset=["paired_bias"])
    change = (sources.bias / sources.paired_bias - 1.0).abs().groupby(sources.scanner).mean()
    assert (change > 0.03).all(), change.to_dict()
    # 3 T target: centre brightening; the 1.5 T Vision is much flatter
    profiles = scanner_signatures.groupby("scanner").bias.mean()
    assert profiles["target"] > 1.03
    assert abs(profiles["domain2"] - 1.0) < abs(profiles["target"] - 1.0)


def _noise_to_white_matter(image_path, labels_path):
    """Background noise sd (Rayleigh in air) relative to median white matter."""
    image = nib.load(str(image_path))
    data = image.get_fdata(dtype=np.float32)
    labels = np.asarray(nib.load(str(labels_path)).dataobj)
    air = np.zeros(data.shape, dtype=bool)
    air[:, :16, -24:] = True  # a corner of the field of view, far from the head
    air &= labels == 0
    sigma = np.sqrt(np.mean(data[air] ** 2) / 2.0)
    return sigma / np.median(data[labels == 3])


def test_domain4_differs_from_target_only_by_site_effects(multiscanner_dataset, participants, scanner_signatures):
    domain4 = participants[participants.scanner == "domain4"].participant_id
    for subject in domain4:
        files = _files(multiscanner_dataset, subject)
        noise = _noise_to_white_matter(files["image"], files["labels"])
        paired_noise = _noise_to_white_matter(files["paired_image"], files["paired_labels"])
        expected = SCANNERS["target"].site.snr / SCANNERS["domain4"].site.snr
        assert noise / paired_noise == pytest.approx(expected, rel=0.15)
    assert SCANNERS["domain4"].protocol == SCANNERS["target"].protocol


def test_paired_ground_truth_has_the_same_anatomy(multiscanner_dataset, participants):
    for subject in participants[participants.scanner != "target"].participant_id:
        files = _files(multiscanner_dataset, subject)
        paired_labels = nib.load(str(files["paired_labels"]))
        source_labels = resample_from_to(nib.load(str(files["labels"])), paired_labels, order=0)
        a, b = np.asarray(source_labels.dataobj), np.asarray(paired_labels.dataobj)
        for label, minimum in ((3, 0.85), (2, 0.7)):
            dice = 2 * np.sum((a == label) & (b == label)) / (np.sum(a == label) + np.sum(b == label))
            assert dice > minimum, (subject, label, dice)
        source = resample_from_to(nib.load(str(files["image"])), paired_labels, order=1).get_fdata()
        paired = nib.load(str(files["paired_image"])).get_fdata()
        brain = (b >= 1) & (b <= 3)
        rho = stats.spearmanr(source[brain][::7], paired[brain][::7]).statistic
        assert rho > 0.8, (subject, rho)
