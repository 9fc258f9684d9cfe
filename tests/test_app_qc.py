"""The participant level's WM-segmentation QC and per-subject reports, on the shared run of
``participant_run`` (the real command, the real Atropos, deepbet, nireports and validator): its
QC subjects were harmonized by a ``--skip-qc`` run first, then run again with QC."""
import html.parser
import json
import math
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import QC_SUBJECTS
from test_app import RUNS

from bids_harmony.qc.summary import IMAGE_METRICS

SECTIONS = ("Summary", "Harmonization", "Segmentation", "Metrics", "About")
QC_RUNS = sorted(relative for relative in RUNS if relative.split("/")[0].removeprefix("sub-") in QC_SUBJECTS)


def _stem(relative):
    return relative.split("/")[-1].removesuffix("_T1w.nii.gz")


def _anat(run, relative):
    return (run.output_dir / relative).parent


def test_qc_reuses_the_harmonization_of_the_skip_qc_run(participant_run):
    assert participant_run.qc_returncode == 0, participant_run.qc_stderr[-3000:]
    assert f"{len(QC_RUNS)} T1w run(s) harmonized, 0 failed" in participant_run.qc_stderr
    assert "harmonize started" not in participant_run.qc_stderr and "prepare started" not in participant_run.qc_stderr
    assert "segment_source started" in participant_run.qc_stderr


def test_every_qc_run_has_its_segmentations_and_metrics_and_the_others_none(participant_run):
    for relative in sorted(set(RUNS) - set(QC_RUNS)):
        assert not (_anat(participant_run, relative) / f"{_stem(relative)}_desc-qc_metrics.json").exists()
    for relative in QC_RUNS:
        anat, stem = _anat(participant_run, relative), _stem(relative)
        source = nib.load(str(participant_run.bids_dir / relative))
        for name in ("desc-brain_mask", "desc-source_dseg", "desc-harmonized_dseg",
                     *(f"label-{tissue}_desc-{which}_probseg" for tissue in ("GM", "WM", "CSF")
                       for which in ("source", "harmonized"))):
            image = nib.load(str(anat / f"{stem}_{name}.nii.gz"))
            assert image.shape == source.shape[:3] and np.allclose(image.affine, source.affine), name
        dseg = np.asarray(nib.load(str(anat / f"{stem}_desc-source_dseg.nii.gz")).dataobj)
        assert set(np.unique(dseg)) == {0, 1, 2, 3}
        record = json.loads((anat / f"{stem}_desc-qc_metrics.json").read_text())
        for which in ("source", "harmonized"):
            assert set(record["metrics"][which]) == set(IMAGE_METRICS)
            for key in ("gm_volume_ml", "wm_volume_ml", "wm_gm_contrast", "wm_gm_cnr", "bits_per_dim"):
                assert math.isfinite(record["metrics"][which][key]) and record["metrics"][which][key] > 0, key
        assert 0.0 <= record["metrics"]["wm_dice_source_harmonized"] <= 1.0
        assert record["source"] == f"bids:raw:{relative}"
        assert record["label_values"] == {"GM": 1, "WM": 2, "CSF": 3}
    for description in ("source", "harmonized"):
        table = (participant_run.output_dir / f"desc-{description}_dseg.tsv").read_text().splitlines()
        assert table == ["index\tname", "1\tGM", "2\tWM", "3\tCSF"]


def test_metrics_tell_a_t1w_from_a_t2w_named_t1w(participant_run):
    def record(relative):
        return json.loads((_anat(participant_run, relative) / f"{_stem(relative)}_desc-qc_metrics.json").read_text())

    t1w, t2w = record("sub-05/anat/sub-05_T1w.nii.gz"), record("sub-06/anat/sub-06_T1w.nii.gz")
    assert t1w["metrics"]["source"]["wm_gm_contrast"] > 1.0 and not t1w["flags"]["not_t1w_like"]
    assert t2w["flags"]["not_t1w_like"]
    assert t1w["scanner"]["ManufacturersModelName"]  # from the source's sidecar
    # harmonization of a T1w keeps its white matter where it was
    assert t1w["metrics"]["wm_dice_source_harmonized"] > 0.8 and not t1w["flags"]["anatomy_changed"]


def test_progress_names_the_qc_nodes(participant_run):
    assert "sub-05 T1w: segment_harmonized finished" in participant_run.qc_stderr
    assert "sub-02 T1w: metrics finished" in participant_run.qc_stderr


class _Page(html.parser.HTMLParser):
    """Section ids, and every file or address the page loads or links to."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        for key in ("src", "href", "data"):
            if attrs.get(key) and not attrs[key].startswith("#"):
                self.links.append(attrs[key])


def _page(path):
    page = _Page()
    page.feed(path.read_text())
    return page


def test_each_subject_has_an_offline_report_with_every_section_and_its_figures(participant_run):
    subjects = sorted({relative.split("/")[0] for relative in RUNS})
    for subject in subjects:
        report = participant_run.output_dir / f"{subject}.html"
        page = _page(report)
        runs = [relative for relative in QC_RUNS if relative.startswith(subject + "/")]
        expected = SECTIONS if runs else ("Summary", "About")  # --skip-qc: no figures
        assert [section for section in SECTIONS if section in page.ids] == list(expected), (subject, page.ids)
        assert not [link for link in page.links if "://" in link], page.links  # nothing from the network
        for link in page.links:
            assert (participant_run.output_dir / link).is_file(), link
        figures = sorted({link for link in page.links if link.endswith(".svg")})  # shown, and linked
        assert len(figures) == 5 * len(runs), figures  # two before/after, two segmentations, histogram
        text = report.read_text()
        assert "No errors to report!" in text and "CC0" in text
        assert ("WM Dice, source vs harmonized" in text) == bool(runs)
        assert ("skipped (--skip-qc)" in text) == (not runs)
    assert "flag(s): not_t1w_like" in (participant_run.output_dir / "sub-06.html").read_text()


def test_reports_only_rebuilds_the_reports_from_the_output_folder(participant_run, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(participant_run.output_dir, copy, symlinks=True)
    (copy / "sub-05.html").unlink()
    for fragment in (copy / "sub-05" / "figures").glob("*.html"):  # summary, metrics table, provenance
        fragment.unlink()
    harmonized = sorted(copy.rglob("*_desc-harmonized_T1w.nii.gz"))
    before = {path: path.stat().st_mtime_ns for path in harmonized}
    result = subprocess.run([sys.executable, "-m", "bids_harmony.cli.run", str(participant_run.bids_dir), str(copy),
                             "participant", "--reports-only", "--participant-label", "05"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    page = _page(copy / "sub-05.html")
    assert set(SECTIONS) <= set(page.ids)
    assert all((copy / link).is_file() for link in page.links)
    text = (copy / "sub-05.html").read_text()
    assert "WM Dice, source vs harmonized" in text
    assert "bids_harmony with iterations=2; our additions on: target_background, anchor_level" in text
    assert {path: path.stat().st_mtime_ns for path in harmonized} == before  # nothing is recomputed
    untouched = (copy / "sub-01.html").stat().st_mtime_ns  # only the selected subject's report
    assert untouched == (participant_run.output_dir / "sub-01.html").stat().st_mtime_ns


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_reports_only_without_participant_outputs_is_a_one_line_error(participant_run, tmp_path, folder):
    output_dir = tmp_path / "out"
    if folder == "empty":
        output_dir.mkdir()
    result = subprocess.run([sys.executable, "-m", "bids_harmony.cli.run", str(participant_run.bids_dir),
                             str(output_dir), "participant", "--reports-only"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no participant-level outputs" in result.stderr
