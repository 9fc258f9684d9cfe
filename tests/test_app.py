"""The BIDS-App's participant level, end to end: the real command, pybids, Nipype MultiProc, the
bundled model and the official validator on a simulated dataset (one shared run)."""
import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import APP_ITERATIONS, QC_SUBJECTS

from bids_harmony.bids.derivatives import BIDSIGNORE, harmonized_t1w_path
from bids_harmony.model import load_model
from bids_harmony.preprocessing import grid_volume, load_geometry, read_itk_transform, to_slices

RUNS = {
    "sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz",
    "sub-01/ses-1/anat/sub-01_ses-1_run-2_T1w.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_acq-mprage_T1w.nii.gz",
    "sub-02/anat/sub-02_T1w.nii.gz",  # defaced
    "sub-03/anat/sub-03_T1w.nii.gz",  # skull-stripped
    "sub-04/anat/sub-04_T1w.nii.gz",  # cut at the vertex
    "sub-05/anat/sub-05_T1w.nii.gz",  # cut below, through the cerebellum
    "sub-06/anat/sub-06_T1w.nii.gz",  # a T2w named T1w
}


def _outputs(run, suffix):
    return sorted(run.output_dir.rglob(f"*{suffix}"))


def test_every_t1w_run_is_harmonized_on_its_native_grid(participant_run):
    assert participant_run.returncode == 0, participant_run.stderr[-3000:]
    assert f"{len(RUNS)} T1w run(s) harmonized, 0 failed" in participant_run.stderr
    assert "Traceback" not in participant_run.stderr
    for relative in RUNS:
        source = participant_run.bids_dir / relative
        output = harmonized_t1w_path(source, participant_run.bids_dir, participant_run.output_dir)
        assert output.is_file(), output
        harmonized, original = nib.load(str(output)), nib.load(str(source))
        assert harmonized.shape == original.shape
        assert np.allclose(harmonized.affine, original.affine)
        data = np.asarray(harmonized.dataobj)
        assert np.isfinite(data).all() and data.max() > 0
    assert len(_outputs(participant_run, "_desc-harmonized_T1w.nii.gz")) == 2 * len(RUNS)  # native + res-1p2


def test_progress_names_subject_and_node(participant_run):
    assert "sub-01 ses_1_run_1: harmonize started" in participant_run.stderr
    assert "sub-02 T1w: reassemble finished" in participant_run.stderr


def test_input_dataset_is_untouched(participant_run):
    assert participant_run.input_after == participant_run.input_before


def test_output_is_valid_bids_derivatives(participant_run):
    result = subprocess.run(["bids-validator-deno", str(participant_run.output_dir), "--format", "json"],
                            capture_output=True, text=True)
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [issue for issue in issues if issue["severity"] == "error"]
    assert errors == [] and result.returncode == 0, errors[:3]
    description = json.loads((participant_run.output_dir / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_harmony"
    assert description["DatasetLinks"]["raw"] == participant_run.bids_dir.as_uri()
    assert description["SourceDatasets"] == [{"URL": participant_run.bids_dir.as_uri()}]
    assert (participant_run.output_dir / ".bidsignore").read_text().split() == list(BIDSIGNORE)


def test_sidecars_record_sources_model_and_settings(participant_run):
    model = load_model()
    source = participant_run.bids_dir / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    native = harmonized_t1w_path(source, participant_run.bids_dir, participant_run.output_dir)
    sidecar = json.loads(native.with_name(native.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-02/anat/sub-02_T1w.nii.gz"]
    import hashlib

    assert sidecar["SourceSHA256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert sidecar["SkullStripped"] is False and sidecar["Description"]
    assert sidecar["HarmonizationModel"]["SHA256"] == model.sha256
    assert sidecar["HarmonizationParameters"]["iterations"] == APP_ITERATIONS
    assert sidecar["Device"] == "cpu"
    assert 0.5 <= sidecar["ContrastAgreement"] <= 1.0 and sidecar["Warnings"] == []
    assert sidecar["SourceScanner"]["ManufacturersModelName"]
    assert {"bids_harmony", "torch", "nipype"} <= set(sidecar["HarmonizationSoftware"])
    grid = json.loads(native.with_name("sub-02_res-1p2_desc-harmonized_T1w.json").read_text())
    assert grid["Resolution"].startswith("1.2 mm isotropic")
    assert "NaN" not in native.with_name("sub-02_desc-harmonized_T1w.json").read_text()


def test_t2w_named_t1w_is_harmonized_with_a_warning(participant_run):
    path = participant_run.output_dir / "sub-06" / "anat" / "sub-06_desc-harmonized_T1w.json"
    sidecar = json.loads(path.read_text())
    assert sidecar["ContrastAgreement"] < 0.5
    assert any("does not look like the target's T1w contrast" in warning for warning in sidecar["Warnings"])


def test_saved_transform_resamples_the_input_onto_the_grid(participant_run):
    """The placement transform, read by ANTs and by nitransforms, gives the 1.2 mm grid image of
    the input (the grid the harmonized res-1p2 output is on)."""
    import ants
    from nitransforms.linear import load as load_transform
    from nitransforms.resampling import apply

    anat = participant_run.output_dir / "sub-02" / "anat"
    transform = anat / "sub-02_from-T1w_to-slicegrid_mode-image_xfm.txt"
    reference = anat / "sub-02_res-1p2_desc-harmonized_T1w.nii.gz"
    source = participant_run.bids_dir / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    slices, geometry = to_slices(source, load_model().preprocessing)
    expected = grid_volume(slices, geometry)
    assert np.allclose(read_itk_transform(transform), geometry.template_to_native, atol=1e-9)
    moved = ants.apply_transforms(fixed=ants.image_read(str(reference)), moving=ants.image_read(str(source)),
                                  transformlist=[str(transform)], interpolator="linear").numpy()
    head = expected > 0.05 * expected.max()
    assert np.corrcoef(moved[head], expected[head])[0, 1] > 0.999
    assert np.median(np.abs(moved[head] - expected[head])) < 0.01 * expected.max()
    resampled = np.asarray(apply(load_transform(str(transform), fmt="itk"), str(source), reference=str(reference),
                                 order=1).dataobj)
    assert np.corrcoef(resampled[head], expected[head])[0, 1] > 0.999


def test_logs_hold_configuration_and_methods_boilerplate(participant_run):
    logs = participant_run.output_dir / "logs"
    harmonized, with_qc = (json.loads(path.read_text()) for path in sorted(logs.glob("config-*.json")))
    assert harmonized["harmonization"]["iterations"] == APP_ITERATIONS and harmonized["device"] == "cpu"
    assert sum(len(runs) for runs in harmonized["runs"].values()) == len(RUNS)
    assert harmonized["skip_qc"] and not with_qc["skip_qc"] and sorted(with_qc["runs"]) == list(QC_SUBJECTS)
    assert harmonized["seconds"] > 0 and harmonized["started"] < with_qc["started"]
    markdown = (logs / "CITATION.md").read_text()
    assert f"optimised for {APP_ITERATIONS} iterations" in markdown and "[@blindharmony]" in markdown
    assert markdown.count("The T1-weighted image was harmonized") == 1
    bib = (logs / "CITATION.bib").read_text()
    for key in ("blindharmony", "nsf", "nflows", "nipype1", "pybids", "ants"):
        assert f"{{{key}," in bib
    assert "<h2>References</h2>" in (logs / "CITATION.html").read_text()


def test_no_crash_files_and_no_staging_left_in_output(participant_run):
    assert not list(participant_run.output_dir.rglob("crash-*"))
    assert not list(participant_run.output_dir.rglob("*.partial"))


def _next_step(in_file):
    """A parent pipeline's next step: it reads the harmonized image."""
    import nibabel

    nibabel.load(in_file).get_fdata()
    return in_file


def test_workflow_output_equals_harmonize_image_when_embedded(multiscanner_dataset, tmp_path, participant_run):
    """A parent workflow feeds ``init_harmonize_t1w_wf`` a T1w and consumes its output (the
    "plug into fMRIPrep-style pipelines" use); the image equals ``harmonize_image``'s, and the
    participant run's of the same file (another process, work dir and plugin): same inputs and
    settings, the same image data."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    from bids_harmony.harmonize import harmonize_image
    from bids_harmony.model import bundled_model_path
    from bids_harmony.settings import HarmonizationParams
    from bids_harmony.workflows import init_harmonize_t1w_wf

    t1w = multiscanner_dataset / "sub-03" / "anat" / "sub-03_T1w.nii.gz"
    parent = pe.Workflow(name="parent_wf", base_dir=str(tmp_path))
    parent.config["execution"]["crashdump_dir"] = str(tmp_path)  # not the current folder
    source = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="source")
    source.inputs.t1w = str(t1w)
    params = HarmonizationParams(iterations=APP_ITERATIONS)
    harmonize_wf = init_harmonize_t1w_wf(model_file=str(bundled_model_path()), params=params, omp_nthreads=2)
    collected = {}
    consumer = pe.Node(niu.Function(function=_next_step, input_names=["in_file"], output_names=["out"]),
                       name="consumer")
    parent.connect([
        (source, harmonize_wf, [("t1w", "inputnode.t1w")]),
        (harmonize_wf, consumer, [("outputnode.t1w_harmonized", "in_file")]),
    ])  # fmt: skip
    graph = parent.run(plugin="Linear")
    for node in graph.nodes():
        if node.name == "consumer":
            collected["out"] = node.result.outputs.out
    from_workflow = np.asarray(nib.load(collected["out"]).dataobj)
    direct = harmonize_image(str(t1w), load_model(), params).image
    assert from_workflow.dtype == np.float32
    assert np.array_equal(from_workflow, np.asarray(direct.dataobj))
    same_file = participant_run.output_dir / "sub-01/ses-1/anat/sub-01_ses-1_run-2_desc-harmonized_T1w.nii.gz"
    assert np.array_equal(from_workflow, np.asarray(nib.load(str(same_file)).dataobj))
    geometry_file = next(tmp_path.rglob("geometry.json"))
    assert load_geometry(geometry_file).valid.sum() > 60


def test_workflow_builds_without_running(tmp_path):
    """The graph: the three processing nodes, the GPU flag on the harmonization node only."""
    from bids_harmony.model import bundled_model_path
    from bids_harmony.settings import HarmonizationParams
    from bids_harmony.workflows import init_bids_harmony_wf

    workflow = init_bids_harmony_wf(
        subjects={"01": ["/data/sub-01/anat/sub-01_run-1_T1w.nii.gz", "/data/sub-01/anat/sub-01_run-2_T1w.nii.gz"],
                  "02": ["/data/sub-02/anat/sub-02_T1w.nii.gz"]},
        bids_dir="/data", output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"), run_uuid="x",
        model_file=str(bundled_model_path()), params=HarmonizationParams(iterations=2), device="cuda",
    )
    nodes = {node.fullname: node for node in workflow._create_flat_graph().nodes()}
    harmonize = nodes["bids_harmony_wf.sub_01_wf.harmonize_run_1_wf.harmonize"]
    assert harmonize.inputs.use_gpu is True and harmonize.n_procs == 1 and harmonize.inputs.iterations == 2
    assert nodes["bids_harmony_wf.sub_01_wf.harmonize_run_1_wf.prepare"].inputs.model_file == str(bundled_model_path())
    assert "bids_harmony_wf.sub_02_wf.derivatives_T1w_wf.publish" in nodes
    crash_dir = nodes["bids_harmony_wf.sub_02_wf.harmonize_T1w_wf.prepare"].config["execution"]["crashdump_dir"]
    assert crash_dir == str(tmp_path / "out" / "sub-02" / "log" / "x")
    assert len([name for name in nodes if name.endswith(".harmonize")]) == 3


@pytest.mark.parametrize("flag", ["--boilerplate-only", "--write-graph"])
def test_stops_after_writing_logs(multiscanner_dataset, tmp_path, flag):
    from bids_harmony.cli.run import main

    output_dir = tmp_path / "out"
    database = tmp_path / "pybids"
    assert main([str(multiscanner_dataset), str(output_dir), "participant", "--model", "demo", flag,
                 "--participant-label", "01", "-w", str(tmp_path / "work"), "--skip-bids-validation",
                 "--bids-database-dir", str(database)]) == 0
    assert (output_dir / "logs" / "CITATION.md").is_file()
    assert list(database.iterdir())  # pybids keeps its index there, for the next run
    assert not list(output_dir.glob("sub-*"))
    if flag == "--write-graph":
        graph = (output_dir / "logs" / "graph.dot").read_text()
        assert "harmonize" in graph and "prepare" in graph


def test_bids_copy_is_valid_raw_bids_with_the_harmonized_t1w(participant_run):
    copy = participant_run.bids_copy
    result = subprocess.run(["bids-validator-deno", str(copy), "--format", "json"], capture_output=True, text=True)
    errors = [issue for issue in json.loads(result.stdout)["issues"]["issues"] if issue["severity"] == "error"]
    assert errors == [], errors[:3]
    for relative in RUNS:
        replaced = copy / relative
        harmonized = harmonized_t1w_path(participant_run.bids_dir / relative, participant_run.bids_dir,
                                         participant_run.output_dir)
        assert replaced.read_bytes() == harmonized.read_bytes()
        assert not replaced.is_symlink() and replaced.stat().st_nlink == 1  # a copy, not the source
        sidecar = json.loads(replaced.with_name(replaced.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["HarmonizedWith"]["Source"] == relative
    assert (copy / "README").stat().st_ino == (participant_run.bids_dir / "README").stat().st_ino  # a hard link
    description = json.loads((copy / "dataset_description.json").read_text())
    assert description["GeneratedBy"][-1]["Name"] == "bids_harmony"
    assert not (copy / "derivatives").exists() and not list(copy.parent.glob(".*partial*"))


def test_users_inputs_are_recognised_as_t1w(participant_run):
    """Defaced, skull-stripped and cut fields of view are ordinary T1w inputs: no warning."""
    for relative in sorted(RUNS - {"sub-06/anat/sub-06_T1w.nii.gz"}):
        output = harmonized_t1w_path(participant_run.bids_dir / relative, participant_run.bids_dir,
                                     participant_run.output_dir)
        sidecar = json.loads(output.with_name(output.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["ContrastAgreement"] >= 0.5 and sidecar["Warnings"] == [], (relative, sidecar["Warnings"])


def test_warns_when_output_holds_outputs_of_other_settings(participant_run, tmp_path):
    output_dir = tmp_path / "out"
    shutil.copytree(participant_run.output_dir / "sub-02", output_dir / "sub-02")
    command = [sys.executable, "-m", "bids_harmony.cli.run", str(participant_run.bids_dir), str(output_dir),
               "participant", "--model", "demo", "--participant-label", "02", "--skip-bids-validation",
               "-w", str(tmp_path / "work"), "--boilerplate-only", "--iterations", str(APP_ITERATIONS)]
    same = subprocess.run(command, capture_output=True, text=True)
    assert same.returncode == 0 and "other settings" not in same.stderr
    other = subprocess.run([*command, "--beta1", "0.3"], capture_output=True, text=True)
    assert other.returncode == 0
    assert "already holds outputs made with another model or other settings" in other.stderr
