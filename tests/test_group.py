"""The group level: ``bids_harmony BIDS_DIR OUTPUT_DIR group`` on what a participant level left.

The unit tier writes that output folder as the participant level does (its dataset description
and ``.bidsignore``, configurations, harmonized images with their sidecars, QC metrics files,
subject reports, a crash file), then runs the group level on it; the end-to-end test runs it on a
copy of the real participant run of ``participant_run`` (QC on some subjects, ``--skip-qc`` on others).
"""
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime

import nibabel as nib
import numpy as np
import pytest

from bids_harmony.bids.derivatives import BIDSIGNORE, write_output_description
from bids_harmony.cli.run import main
from bids_harmony.errors import InputError
from bids_harmony.qc.summary import IMAGE_METRICS, METRICS_FORMAT_VERSION
from bids_harmony.reports.group import FLAGS, collect, scanner_name, table_columns, write_group_outputs

SCANNERS = {
    "A": {"Manufacturer": "Siemens", "ManufacturersModelName": "TrioTim", "MagneticFieldStrength": 3,
          "StationName": "TRIO-A", "DeviceSerialNumber": "35001"},
    "B": {"Manufacturer": "Siemens", "ManufacturersModelName": "Avanto", "MagneticFieldStrength": 1.5,
          "DeviceSerialNumber": "26002"},
}
#: subject -> (scanner, what became of its run); sub-07 has two sessions
SUBJECTS = {"01": ("A", "ok"), "02": ("A", "ok"), "03": ("A", "flagged"), "04": ("B", "ok"), "05": ("B", "ok"),
            "06": ("B", "flagged"), "07": ("B", "ok"), "08": ("A", "crashed"), "09": ("B", "unfinished"),
            "10": ("A", "skip_qc")}
SECTIONS = ("summary", "site-effect", "before-after", "target", "flagged", "failed", "no-qc", "about")


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.float32), np.eye(4)), str(path))


def _quantiles(shift):
    return list(np.linspace(0.0, 1.2, 101) + shift)


def _record(source, scanner, index, flagged, calibrated):
    """A ``desc-qc_metrics.json`` as the participant level's QCMetrics writes it: scanner A's
    contrast is high and B's low before, both near the target's after."""
    offset = 0.15 if scanner == "A" else -0.15
    spread = 0.02 * (index % 3 - 1)  # subjects differ a little, within each scanner
    measures = {}
    for which, level in (("source", offset), ("harmonized", 0.1 * offset)):
        measures[which] = {name: 1.0 + index for name in IMAGE_METRICS}
        measures[which].update({
            "wm_gm_contrast": 1.4 + level + spread, "wm_intensity_normalised": 1.2 + 0.5 * level + spread,
            "bits_per_dim": 2.5 + abs(level) * 4 + spread, "ood_fraction": 0.1 if calibrated else None,
            "out_of_distribution": (which == "harmonized" and flagged) if calibrated else None,
            "wasserstein_to_target": abs(level) + 0.01 + abs(spread) if calibrated else None,
        })
    return {
        "format_version": METRICS_FORMAT_VERSION, "source": f"bids:raw:{source}", "scanner": SCANNERS[scanner],
        "model": {"file": "demo_model.pt", "sha256": "ab" * 32},
        "metrics": {**measures, "wm_dice_source_harmonized": 0.7 if flagged else 0.95, "contrast_agreement": 0.9},
        "flags": {"not_t1w_like": False, "contrast_reversed": False, "anatomy_changed": flagged,
                  "banding_increased": False, "harmonized_out_of_distribution": flagged and calibrated},
        "thresholds": {"bits_per_dim": 3.0 if calibrated else None, "min_wm_dice": 0.8},
        "target_calibrated": calibrated,
        "brain_quantiles": {"levels": list(np.linspace(0, 1, 101)), "source": _quantiles(offset),
                            "harmonized": _quantiles(0.0), "target": _quantiles(0.0) if calibrated else None},
        "label_values": {"GM": 1, "WM": 2, "CSF": 3},
    }


def _participant_outputs(root, calibrated=True, subjects=SUBJECTS):
    """A BIDS dataset and the output folder a participant level (one run) would have left of it."""
    bids_dir, output_dir = root / "bids", root / "out"
    bids_dir.mkdir(parents=True)
    (bids_dir / "dataset_description.json").write_text(json.dumps({"Name": "group test", "BIDSVersion": "1.10.0"}))
    run_uuid = "20260101-120000_00000000-0000-0000-0000-000000000001"  # the run with QC; --skip-qc ran after it
    write_output_description(output_dir, bids_dir, "group test", {"GM": 1, "WM": 2, "CSF": 3})
    runs, skipped = {}, {}
    for index, (subject, (scanner, fate)) in enumerate(subjects.items()):
        sessions = ["ses-1/", "ses-2/"] if subject == "07" else [""]
        selected = (skipped if fate == "skip_qc" else runs).setdefault(subject, [])
        for session in sessions:
            entities = f"sub-{subject}_{session.strip('/')}_" if session else f"sub-{subject}_"
            source = f"sub-{subject}/{session}anat/{entities}T1w.nii.gz"
            _image(bids_dir / source)
            (bids_dir / source.replace(".nii.gz", ".json")).write_text(json.dumps(SCANNERS[scanner]))
            selected.append(str(bids_dir / source))
            stem = output_dir / source.replace("_T1w.nii.gz", "")
            if fate in ("ok", "flagged", "skip_qc"):
                _image(stem.with_name(stem.name + "_desc-harmonized_T1w.nii.gz"))
                stem.with_name(stem.name + "_desc-harmonized_T1w.json").write_text(json.dumps({
                    "Sources": [f"bids:raw:{source}"], "SkullStripped": False, "SourceScanner": SCANNERS[scanner]}))
            if fate in ("ok", "flagged"):
                stem.with_name(stem.name + "_desc-qc_metrics.json").write_text(
                    json.dumps(_record(source, scanner, index, fate == "flagged", calibrated), indent=2))
                (output_dir / f"sub-{subject}.html").write_text("<html>report</html>")
            if fate == "crashed":
                crash = output_dir / f"sub-{subject}" / "log" / run_uuid / "crash-20260101-120101-user-check-x.txt"
                crash.parent.mkdir(parents=True)
                crash.write_text(f"Node: bids_harmony_wf.sub_{subject}_wf.harmonize_T1w_wf.check\n"
                                 "Traceback (most recent call last):\n  ...\n"
                                 f"bids_harmony.errors.InputError: {bids_dir / source}: the image holds no head\n")
    _configuration(output_dir, run_uuid, bids_dir, runs, skip_qc=False)
    _configuration(output_dir, "20260101-130000_00000000-0000-0000-0000-000000000002", bids_dir, skipped,
                   skip_qc=True, started=datetime(2026, 1, 1, 13))
    return bids_dir, output_dir


def _configuration(output_dir, run_uuid, bids_dir, runs, skip_qc, started=datetime(2026, 1, 1, 12)):
    (output_dir / "logs").mkdir(exist_ok=True)
    (output_dir / "logs" / f"config-{run_uuid}.json").write_text(json.dumps({
        "run_uuid": run_uuid, "started": started.isoformat(), "bids_dir": str(bids_dir), "runs": runs,
        "subjects_without_t1w": [], "skip_qc": skip_qc, "model": {"file": "demo_model.pt", "sha256": "ab" * 32},
        "model_target": "target TrioTim TRIO-A"}))


@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    """The group level on the unit-tier output folder, once for the module (read-only)."""
    bids_dir, output_dir = _participant_outputs(tmp_path_factory.mktemp("group"))
    assert main([str(bids_dir), str(output_dir), "group"]) == 0
    return output_dir


def _validator_errors(output_dir):
    result = subprocess.run(["bids-validator-deno", str(output_dir), "--format", "json"],
                            capture_output=True, text=True)
    return [issue for issue in json.loads(result.stdout)["issues"]["issues"] if issue["severity"] == "error"]


def _table(output_dir):
    lines = (output_dir / "group_T1w.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_table_has_one_row_per_selected_run_and_every_measure(group_run):
    header, rows = _table(group_run)
    assert header == table_columns()
    assert header[:5] == ["participant_id", "session_id", "source", "scanner", "qc_status"]
    assert {f"{name}_{which}" for name in IMAGE_METRICS for which in ("source", "harmonized")} <= set(header)
    assert set(FLAGS) <= set(header)
    assert len(rows) == 11  # ten subjects, one with two sessions
    by_source = {row["source"]: row for row in rows}
    ses = by_source["sub-07/ses-2/anat/sub-07_ses-2_T1w.nii.gz"]
    assert (ses["participant_id"], ses["session_id"], ses["scanner"], ses["qc_status"]) == \
        ("sub-07", "ses-2", "Avanto 26002", "ok")
    flagged = by_source["sub-03/anat/sub-03_T1w.nii.gz"]
    assert flagged["anatomy_changed"] == "true" and flagged["contrast_reversed"] == "false"
    assert float(flagged["wm_gm_contrast_source"]) == pytest.approx(1.4 + 0.15 + 0.02)
    assert flagged["session_id"] == "n/a" and flagged["scanner"] == "TrioTim TRIO-A"
    crashed = by_source["sub-08/anat/sub-08_T1w.nii.gz"]
    assert crashed["qc_status"] == "failed" and crashed["wm_gm_contrast_source"] == "n/a"
    assert by_source["sub-09/anat/sub-09_T1w.nii.gz"]["qc_status"] == "missing"
    assert by_source["sub-10/anat/sub-10_T1w.nii.gz"]["qc_status"] == "no QC"
    assert all(value != "" and value.lower() != "nan" for row in rows for value in row.values())
    dictionary = json.loads((group_run / "group_T1w.json").read_text())
    assert set(dictionary) == set(header) and dictionary["wm_volume_ml_source"]["Units"] == "ml"


def test_figures_are_svg_files_the_report_links(group_run):
    html = (group_run / "group_report.html").read_text()
    figures = sorted((group_run / "figures").glob("*.svg"))
    assert {figure.name for figure in figures} == {"group_wm_gm_contrast.svg", "group_wm_intensity_normalised.svg",
                                                   "group_bits_per_dim.svg", "group_wasserstein_to_target.svg"}
    for figure in figures:
        text = figure.read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 5000
        assert f'src="figures/{figure.name}"' in html
    assert "TrioTim TRIO-A" in (group_run / "figures" / "group_wm_gm_contrast.svg").read_text()


def test_report_has_every_section_and_links_flagged_runs_to_their_reports(group_run):
    html = (group_run / "group_report.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html and f'href="#{section}"' in html
    assert '<a href="sub-03.html">' in html and '<a href="sub-06.html">' in html
    assert "anatomy_changed" in html and "harmonized_out_of_distribution" in html
    assert '<a href="sub-01.html">' not in html  # not flagged
    for external in ("http://", "https://", "<script", "@import", "<link"):
        assert external not in html


def test_report_lists_failed_missing_and_unmeasured_runs(group_run):
    html = (group_run / "group_report.html").read_text()
    failed = html[html.index('id="failed"'):html.index('id="no-qc"')]
    assert "sub-08_T1w.nii.gz" in failed and "the image holds no head" in failed
    assert "crash file: sub-08/log/" in failed
    assert "sub-09_T1w.nii.gz" in failed and "did not finish" in failed
    no_qc = html[html.index('id="no-qc"'):html.index('id="about"')]
    assert "sub-10_T1w.nii.gz" in no_qc and "sub-08" not in no_qc


def test_site_effect_table_shows_the_scanner_share_falling(group_run):
    html = (group_run / "group_report.html").read_text()
    section = html[html.index('id="site-effect"'):html.index('id="before-after"')]
    row = section[section.index(">WM/GM contrast</td>"):].split("</tr>")[0]
    cells = [re.sub(r"<[^>]+>", " ", cell.split(">", 1)[1]).split() for cell in row.split("</td>")[1:-1]]
    (runs,), (scanners,), (before, *interval_before), (after, *_) = cells[:4]
    assert (runs, scanners) == ("8", "2")
    assert float(before) > 0.9 and float(after) < float(before)
    assert "lowered" in row  # the whole interval of the change is below zero


def test_output_folder_stays_valid_bids(group_run):
    assert {"group_*", "figures"} <= set(BIDSIGNORE)
    assert _validator_errors(group_run) == []


def test_labels_select_subjects_and_sessions(tmp_path):
    bids_dir, output_dir = _participant_outputs(tmp_path)
    data = collect(output_dir, ["sub-01", "07"], None)
    assert [run.source for run in data.runs] == ["sub-01/anat/sub-01_T1w.nii.gz",
                                                 "sub-07/ses-1/anat/sub-07_ses-1_T1w.nii.gz",
                                                 "sub-07/ses-2/anat/sub-07_ses-2_T1w.nii.gz"]
    assert [run.source for run in collect(output_dir, None, ["ses-2"]).runs] == \
        ["sub-07/ses-2/anat/sub-07_ses-2_T1w.nii.gz"]
    assert main([str(bids_dir), str(output_dir), "group", "--participant-label", "02", "04", "08"]) == 0
    _, rows = _table(output_dir)
    assert [row["participant_id"] for row in rows] == ["sub-02", "sub-04", "sub-08"]
    with pytest.raises(InputError, match=r"no participant-level outputs of sub-99"):
        collect(output_dir, ["99"])


def test_without_calibration_the_report_says_so(tmp_path):
    bids_dir, output_dir = _participant_outputs(tmp_path, calibrated=False)
    assert main([str(bids_dir), str(output_dir), "group"]) == 0
    html = (output_dir / "group_report.html").read_text()
    assert "The model was not calibrated" in html
    assert not (output_dir / "figures" / "group_wasserstein_to_target.svg").exists()
    _, rows = _table(output_dir)
    assert {row["wasserstein_to_target_harmonized"] for row in rows} == {"n/a"}


def test_the_latest_configuration_of_a_run_wins(tmp_path):
    """sub-08 crashed in the first run, then was harmonized with --skip-qc: it has no QC, it did not fail."""
    bids_dir, output_dir = _participant_outputs(tmp_path)
    source = "sub-08/anat/sub-08_T1w.nii.gz"
    stem = output_dir / source.replace("_T1w.nii.gz", "")
    _image(stem.with_name(stem.name + "_desc-harmonized_T1w.nii.gz"))
    stem.with_name(stem.name + "_desc-harmonized_T1w.json").write_text(json.dumps({"SourceScanner": SCANNERS["A"]}))
    _configuration(output_dir, "20260102-090000_00000000-0000-0000-0000-000000000003", bids_dir,
                   {"08": [str(bids_dir / source)]}, skip_qc=True, started=datetime(2026, 1, 2, 9))
    (run,) = [run for run in collect(output_dir).runs if run.subject == "08"]
    assert (run.status, run.scanner, run.problem) == ("no QC", "TrioTim TRIO-A", None)


def test_scanners_are_named_by_model_and_station_else_serial():
    assert scanner_name(SCANNERS["A"]) == "TrioTim TRIO-A"
    assert scanner_name(SCANNERS["B"]) == "Avanto 26002"
    assert scanner_name({"DeviceSerialNumber": "1234"}) == "1234"
    assert scanner_name({"Manufacturer": "Siemens", "MagneticFieldStrength": 3}) == "unknown scanner"


def test_a_metrics_file_of_another_format_is_refused_naming_it(tmp_path):
    _, output_dir = _participant_outputs(tmp_path)
    metrics = output_dir / "sub-01" / "anat" / "sub-01_desc-qc_metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "format_version": 99}))
    with pytest.raises(InputError, match=rf"^{metrics}: QC metrics format 99"):
        write_group_outputs(output_dir)
    assert not (output_dir / "group_T1w.tsv").exists() and not (output_dir / "figures").exists()


def test_an_output_folder_without_participant_outputs_is_one_line_error(tmp_path):
    bids_dir, output_dir = tmp_path / "bids", tmp_path / "out"
    bids_dir.mkdir()
    (bids_dir / "dataset_description.json").write_text(json.dumps({"Name": "empty", "BIDSVersion": "1.10.0"}))
    write_output_description(output_dir, bids_dir, "empty")
    result = subprocess.run([sys.executable, "-m", "bids_harmony.cli.run", str(bids_dir), str(output_dir), "group"],
                            capture_output=True, text=True, env={**os.environ, "NIPYPE_NO_ET": "1"})
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"error: {output_dir}: no participant-level outputs (sub-*/[ses-*/]anat/*_desc-qc_metrics.json); "
        "run the participant level first"]
    assert sorted(path.name for path in output_dir.iterdir()) == [".bidsignore", "dataset_description.json"]


def test_a_run_of_only_skipped_qc_is_an_error_that_says_why(tmp_path):
    _, output_dir = _participant_outputs(tmp_path, subjects={"10": ("A", "skip_qc"), "08": ("A", "crashed")})
    with pytest.raises(InputError, match=r"none of the 2 selected T1w run\(s\) has QC metrics .*1 ran with --skip-qc, "
                                         r"1 failed or did not finish; rerun the participant level without --skip-qc$"):
        collect(output_dir)


def test_group_on_a_finished_participant_run(participant_run, tmp_path):
    from conftest import QC_SUBJECTS
    from test_app import RUNS

    assert participant_run.qc_returncode == 0, participant_run.qc_stderr[-3000:]
    output_dir = tmp_path / "out"
    shutil.copytree(participant_run.output_dir, output_dir, symlinks=True)
    assert main([str(participant_run.bids_dir), str(output_dir), "group"]) == 0
    header, rows = _table(output_dir)
    metrics = sorted(output_dir.glob("sub-*/**/anat/*_desc-qc_metrics.json"))
    with_qc = [relative for relative in RUNS if relative.split("/")[0].removeprefix("sub-") in QC_SUBJECTS]
    assert len(metrics) == len(with_qc) == len([row for row in rows if row["qc_status"] == "ok"])
    assert len([row for row in rows if row["qc_status"] == "no QC"]) == len(RUNS) - len(with_qc)
    # the target scanner, another one, and the T2w whose sidecar names no scanner
    assert len({row["scanner"] for row in rows if row["qc_status"] == "ok"}) == 3
    for row in rows:
        if row["qc_status"] == "ok":
            assert float(row["wm_gm_contrast_source"]) > 0 and float(row["bits_per_dim_harmonized"]) > 0
    html = (output_dir / "group_report.html").read_text()
    assert all(f'id="{section}"' in html for section in SECTIONS)
    for figure in ("wm_gm_contrast", "wm_intensity_normalised", "bits_per_dim"):
        assert (output_dir / "figures" / f"group_{figure}.svg").stat().st_size > 5000
    assert _validator_errors(output_dir) == []
