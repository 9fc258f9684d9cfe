"""Session fixtures: offline TemplateFlow and anatomy caches, and simulated datasets.

Datasets are made once per session by the real command (``bids_harmony-simulate``), with
real anatomies, and shared read-only by the tests.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports templateflow: a private, seeded home, so tests never download.
_SCRATCH = Path(tempfile.gettempdir()) / f"bids_harmony-tests-{os.getuid()}"
os.environ["TEMPLATEFLOW_HOME"] = str(_SCRATCH / "templateflow")
os.environ.setdefault("BIDS_HARMONY_CACHE", str(_SCRATCH / "cache"))


@pytest.fixture(scope="session", autouse=True)
def templateflow_home() -> Path:
    from bids_harmony.templates import seed_templateflow_home

    return seed_templateflow_home(os.environ["TEMPLATEFLOW_HOME"])


def _simulate(path: Path, *arguments: str) -> Path:
    from bids_harmony.cli.simulate import main

    assert main([str(path), "--nprocs", "2", *arguments]) == 0
    return path


@pytest.fixture(scope="session")
def multiscanner_dataset(tmp_path_factory) -> Path:
    """Two subjects on each of the five scanners, with paired ground truth (seed 7)."""
    return _simulate(tmp_path_factory.mktemp("sim") / "multiscanner", "--subjects-per-scanner", "2",
                     "--seed", "7")


def coarse_copy(source: Path, root: Path, subjects: list[str] | None = None) -> Path:
    """A copy of a dataset's top-level files and of its (or ``subjects``') T1w images resampled to
    2 mm voxels, with their sidecars: for tests of mechanics (runs, resumes, plugins, errors,
    commands), where a 1 mm head only costs time. Registration, segmentation and resampling scale
    with the voxels; the optimisation, on the model's fixed grid, does not."""
    import shutil

    import nibabel as nib
    from nibabel.processing import resample_to_output

    root.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copyfile(path, root / path.name)
    for label in subjects or sorted(path.name.removeprefix("sub-") for path in source.glob("sub-*")):
        for t1w in sorted(source.glob(f"sub-{label}/anat/*_T1w.nii.gz")):
            destination = root / t1w.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            resample_to_output(nib.load(t1w), voxel_sizes=2.0).to_filename(destination)
            shutil.copyfile(str(t1w).replace(".nii.gz", ".json"), str(destination).replace(".nii.gz", ".json"))
    return root


@pytest.fixture(scope="session")
def coarse_dataset(multiscanner_dataset, tmp_path_factory) -> Path:
    """``multiscanner_dataset`` at 2 mm (:func:`coarse_copy`)."""
    return coarse_copy(multiscanner_dataset, tmp_path_factory.mktemp("coarse") / "multiscanner")


@pytest.fixture(scope="session")
def target_cohort(tmp_path_factory) -> Path:
    """Eleven subjects of the target scanner (seed 11)."""
    return _simulate(tmp_path_factory.mktemp("sim") / "cohort", "--scanners", "target",
                     "--subjects-per-scanner", "11", "--seed", "11")


def tree_digest(root: Path) -> dict[str, str]:
    """Every file (SHA-256), folder and link under ``root``: any change to an input shows up."""
    import hashlib

    state = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            state[relative] = f"link:{path.readlink()}"
        elif path.is_dir():
            state[relative] = "dir"
        else:
            state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _head_in_world(image):
    """World (RAS) coordinates of every voxel and the head's centre and extent, from an Otsu mask."""
    import numpy as np
    from skimage.filters import threshold_otsu

    data = np.asarray(image.dataobj, dtype=np.float32)
    head = data > threshold_otsu(data)
    ijk = np.indices(data.shape).reshape(3, -1)
    world = (image.affine[:3, :3] @ ijk + image.affine[:3, 3:4]).reshape((3,) + data.shape)
    centre = np.array([world[axis][head].mean() for axis in range(3)])
    top = world[2][head].max()
    return data, world, centre, top


def _write_variant(source: Path, destination: Path, change=None, sidecar: Path | None = None) -> None:
    """A copy of a simulated T1w (optionally changed: defaced, cut, skull-stripped) and its sidecar."""
    import shutil

    import nibabel as nib
    import numpy as np

    destination.parent.mkdir(parents=True, exist_ok=True)
    if change is None:
        shutil.copyfile(source, destination)
    else:
        changed = change(nib.load(str(source)))
        nib.Nifti1Image(np.asarray(changed.dataobj, dtype=np.float32), changed.affine).to_filename(str(destination))
    sidecar = sidecar or Path(str(source).replace(".nii.gz", ".json"))
    if sidecar.is_file():
        shutil.copyfile(sidecar, str(destination).replace(".nii.gz", ".json"))


def _defaced(image):
    """Face removed as defacing tools do: everything in front of and below the eyes is zeroed."""
    import nibabel as nib

    data, world, centre, _ = _head_in_world(image)
    face = (world[1] > centre[1] + 30.0) & (world[2] < centre[2] + 5.0)
    return nib.Nifti1Image(data * ~face, image.affine)


def _field_of_view(image, keep):
    """The image cropped, as a scanner's shorter field of view would be: only the planes (along
    the array axis closest to inferior-superior) that hold voxels where ``keep(world, centre,
    top)`` is true."""
    import numpy as np

    data, world, centre, top = _head_in_world(image)
    axis = int(np.argmax(np.abs(image.affine[2, :3])))
    planes = np.flatnonzero(keep(world, centre, top).any(axis=tuple(a for a in range(3) if a != axis)))
    crop = [slice(None)] * 3
    crop[axis] = slice(planes.min(), planes.max() + 1)
    return image.slicer[tuple(crop)]


def _vertex_cut(image):
    return _field_of_view(image, lambda world, centre, top: world[2] < top - 25.0)


def _cerebellum_cut(image):
    return _field_of_view(image, lambda world, centre, top: world[2] > centre[2] - 25.0)


@pytest.fixture(scope="session")
def app_dataset(multiscanner_dataset, tmp_path_factory) -> Path:
    """A BIDS dataset as users have them, made from simulated heads: sessions, runs, ``acq-``, a
    defaced T1w, a skull-stripped T1w, fields of view cut at the vertex and at the cerebellum,
    and a T2w-contrast image named T1w (the ICBM 2009c T2w template, at 2 mm: its QC segmentation
    costs less, and its resolution is not what is tested)."""
    import json
    import shutil

    import nibabel as nib
    import numpy as np

    from nibabel.processing import resample_to_output

    from bids_harmony.templates import template_file

    root = tmp_path_factory.mktemp("app") / "ds"
    source = multiscanner_dataset
    root.mkdir()
    shutil.copyfile(source / "dataset_description.json", root / "dataset_description.json")
    (root / "README").write_text("Simulated heads, arranged as users' datasets are (bids_harmony tests).\n")

    def t1w(label: str) -> Path:
        return source / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"

    _write_variant(t1w("01"), root / "sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz")
    _write_variant(t1w("03"), root / "sub-01/ses-1/anat/sub-01_ses-1_run-2_T1w.nii.gz")
    _write_variant(t1w("05"), root / "sub-01/ses-2/anat/sub-01_ses-2_acq-mprage_T1w.nii.gz")
    _write_variant(t1w("07"), root / "sub-02/anat/sub-02_T1w.nii.gz", _defaced)
    labels = source / "derivatives" / "groundtruth" / "sub-09" / "anat" / "sub-09_dseg.nii.gz"

    def skull_stripped(image):
        from scipy import ndimage

        brain = np.isin(np.asarray(nib.load(str(labels)).dataobj), (1, 2, 3))  # CSF, GM, WM (dseg.tsv)
        return nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32) * ndimage.binary_fill_holes(brain),
                               image.affine)

    _write_variant(t1w("09"), root / "sub-03/anat/sub-03_T1w.nii.gz", skull_stripped)
    _write_variant(t1w("04"), root / "sub-04/anat/sub-04_T1w.nii.gz", _vertex_cut)
    _write_variant(t1w("06"), root / "sub-05/anat/sub-05_T1w.nii.gz", _cerebellum_cut)
    t2w = resample_to_output(nib.load(str(template_file("T2w"))), voxel_sizes=2.0)
    destination = root / "sub-06" / "anat" / "sub-06_T1w.nii.gz"
    destination.parent.mkdir(parents=True)
    nib.Nifti1Image(np.asarray(t2w.dataobj, dtype=np.float32), t2w.affine).to_filename(str(destination))
    (root / "sub-06" / "anat" / "sub-06_T1w.json").write_text(json.dumps({"Manufacturer": "unknown"}))
    return root


APP_ITERATIONS = 2
#: The subjects of ``app_dataset`` whose runs get the WM-segmentation QC in ``participant_run``:
#: a defaced T1w of another scanner (sub-02), a target-scanner T1w cut below (sub-05) and the T2w
#: named T1w (sub-06), whose sidecar names no scanner.
QC_SUBJECTS = ("02", "05", "06")


@pytest.fixture(scope="session")
def participant_run(app_dataset, tmp_path_factory):
    """The participant level of the real command (a subprocess, as users run it) with the
    bundled model, shared by the output tests: every subject of ``app_dataset`` with
    ``--skip-qc``, then :data:`QC_SUBJECTS` again with QC, in the same output folder and work
    dir (their harmonization is reused; QC on all eight runs would double the suite's time on
    2 cores). Two iterations instead of four (``APP_ITERATIONS``) keep it short."""
    import subprocess
    import sys
    from types import SimpleNamespace

    base = tmp_path_factory.mktemp("participant")
    output_dir, work_dir, bids_copy = base / "out", base / "work", base / "harmonized_bids"
    before = tree_digest(app_dataset)
    command = [sys.executable, "-m", "bids_harmony.cli.run", str(app_dataset), str(output_dir), "participant",
               "--model", "demo", "-w", str(work_dir), "--nprocs", "2", "--omp-nthreads", "1",
               "--iterations", str(APP_ITERATIONS)]
    environment = {**os.environ, "NIPYPE_NO_ET": "1"}
    harmonized = subprocess.run([*command, "--bids-copy", str(bids_copy), "--skip-qc"], capture_output=True,
                                text=True, env=environment, timeout=1800)
    with_qc = subprocess.run([*command, "--skip-bids-validation", "--participant-label", *QC_SUBJECTS],
                             capture_output=True, text=True, env=environment, timeout=1800)
    return SimpleNamespace(bids_dir=app_dataset, output_dir=output_dir, work_dir=work_dir, bids_copy=bids_copy,
                           returncode=harmonized.returncode, stdout=harmonized.stdout, stderr=harmonized.stderr,
                           qc_returncode=with_qc.returncode, qc_stderr=with_qc.stderr,
                           input_before=before, input_after=tree_digest(app_dataset))
