"""Bad input to the BIDS-App (``bids_harmony BIDS_DIR OUTPUT_DIR participant``).

Each case: one line on stderr (``error: ...``) naming the file or folder and the problem, no
traceback, a non-zero exit, nothing half-written in the output folder, and the input dataset
left exactly as it was (every file's SHA-256 and the file list). Errors that need no image
processing stop before any Nipype node runs; the broken images are the subjects of one small
dataset, harmonized in one participant run beside a good subject.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import tree_digest as snapshot

from bids_harmony.cli.common import run_cli
from bids_harmony.cli.run import main
from bids_harmony.errors import BidsError, InputError, ModelError
from bids_harmony.model import bundled_model_path, load_model, save_model

FAST_S = 60  # generous on a shared 2-core machine; these cases load at most the demo model


# --------------------------------------------------------------------------- helpers

def run_app(capture, *argv) -> tuple[int, str, float]:
    """The command as a user runs it (``run_cli`` turns our errors into one line)."""
    capture.readouterr()
    started = time.monotonic()
    code = run_cli(main, [str(item) for item in argv])
    elapsed = time.monotonic() - started
    _, err = capture.readouterr()
    return code, err, elapsed


def one_line_error(err: str, *names) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert str(name) in line, f"{name!r} not named in: {line}"
    return line


def nothing_written(output_dir: Path, work_dir: Path | None = None) -> None:
    """No output that could pass for a result: absent, or without sub-* or a description."""
    if output_dir.exists() and output_dir.is_dir():
        assert not list(output_dir.glob("sub-*")), sorted(output_dir.rglob("*"))
        assert not (output_dir / "dataset_description.json").exists()
        assert not (output_dir / "logs").exists()
    if work_dir is not None and work_dir.is_dir():  # no Nipype node ran
        assert not (work_dir / "bids_harmony_wf").exists(), sorted(work_dir.rglob("*"))


def write_image(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))
    return path


def small_head(shape=(24, 24, 24)) -> np.ndarray:
    """A bright ellipsoid in a dark box: enough to be an image, never processed here."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(axis ** 2 for axis in grid) < 0.6
    rng = np.random.default_rng(0)
    return (inside * 800.0 + rng.normal(20, 5, shape)).astype(np.float32)


def make_dataset(root: Path, subjects=("01",)) -> Path:
    """A tiny BIDS dataset that the validator accepts (warnings only)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    for label in subjects:
        write_image(root / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz", small_head())
    return root


@pytest.fixture
def tiny(tmp_path) -> dict[str, Path]:
    bids_dir = make_dataset(tmp_path / "bids")
    return {"bids": bids_dir, "out": tmp_path / "out", "work": tmp_path / "work", "tmp": tmp_path}


@pytest.fixture(scope="module")
def demo_model():
    return load_model(bundled_model_path())


def refused(capsys, paths, *argv, names=(), code=None, model="demo", skip_validation=True,
            output_is_input=False) -> str:
    """Run with ``argv`` (after BIDS_DIR OUTPUT_DIR participant) and check the refusal."""
    before = snapshot(paths["bids"])
    extra = (["--model", model] if model else []) + (["--skip-bids-validation"] if skip_validation else [])
    exit_code, err, elapsed = run_app(capsys, paths.get("bids_arg", paths["bids"]), paths["out"],
                                      "participant", "-w", paths["work"], "--nprocs", "1", *extra, *argv)
    line = one_line_error(err, *names)
    assert exit_code != 0
    if code is not None:
        assert exit_code == code, (exit_code, line)
    nothing_written(paths["work"] if output_is_input else paths["out"], paths["work"])
    assert snapshot(paths["bids"]) == before
    assert elapsed < FAST_S, f"took {elapsed:.0f} s: it should stop before any processing"
    return line


# --------------------------------------------------------------------------- the folders

def test_nonexistent_bids_dir(capsys, tiny):
    missing = tiny["tmp"] / "no_such_dataset"
    line = refused(capsys, {**tiny, "bids_arg": missing}, names=[missing], code=InputError.exit_code)
    assert "no such directory" in line
    assert not missing.exists()


@pytest.mark.parametrize("skip_validation", [False, True], ids=["validated", "skip-validation"])
def test_folder_that_is_not_bids(capsys, tmp_path, skip_validation):
    folder = tmp_path / "not_bids"
    write_image(folder / "sub-01" / "anat" / "sub-01_T1w.nii.gz", small_head())
    (folder / "notes.txt").write_text("just some files\n")
    paths = {"bids": folder, "out": tmp_path / "out", "work": tmp_path / "work"}
    line = refused(capsys, paths, names=[folder], code=BidsError.exit_code, skip_validation=skip_validation)
    assert "not a BIDS dataset" in line and "dataset_description.json" in line


def test_dataset_that_fails_the_validator(capsys, tiny):
    stray = tiny["bids"] / "sub-01" / "anat" / "sub-01_foo.nii.gz"
    shutil.copy(tiny["bids"] / "sub-01" / "anat" / "sub-01_T1w.nii.gz", stray)
    line = refused(capsys, tiny, names=[tiny["bids"]], code=BidsError.exit_code, skip_validation=False)
    assert "not valid BIDS" in line
    assert "sub-01_foo.nii.gz" in line  # the validator's first error, where it is


def test_output_dir_is_the_bids_dir(capsys, tiny):
    line = refused(capsys, {**tiny, "out": tiny["bids"]}, names=[tiny["bids"]], code=InputError.exit_code,
                   output_is_input=True)
    assert "cannot be the BIDS dataset itself" in line


@pytest.mark.parametrize("inside", ["out", "sub-01/out", "derivativesX/out"])
def test_output_dir_inside_the_bids_dir(capsys, tiny, inside):
    output_dir = tiny["bids"] / inside
    line = refused(capsys, {**tiny, "out": output_dir}, names=[output_dir], code=InputError.exit_code)
    assert "inside the BIDS dataset" in line
    assert not output_dir.exists()


def test_work_dir_inside_the_bids_dir(capsys, tiny):
    work_dir = tiny["bids"] / "work"
    line = refused(capsys, {**tiny, "work": work_dir}, names=[work_dir], code=InputError.exit_code)
    assert "work dir" in line
    assert not work_dir.exists()


@pytest.mark.parametrize("how", ["output-is-a-link-to-bids", "bids-dir-is-a-link", "work-dir-via-link"])
def test_inside_the_bids_dir_through_a_symlink(capsys, tiny, how):
    """The same refusals when a path reaches the dataset through a symbolic link (the run stops
    after the boilerplate if it is wrongly accepted, so the bug costs no processing)."""
    link = tiny["tmp"] / "link"
    link.symlink_to(tiny["bids"], target_is_directory=True)
    paths = {
        "output-is-a-link-to-bids": {**tiny, "out": link},
        "bids-dir-is-a-link": {**tiny, "bids_arg": link, "out": tiny["bids"] / "out"},
        "work-dir-via-link": {**tiny, "work": link / "work"},
    }[how]
    line = refused(capsys, paths, "--boilerplate-only", code=InputError.exit_code,
                   output_is_input=how == "output-is-a-link-to-bids")
    assert "BIDS dataset" in line


def test_output_dir_under_derivatives_is_accepted(capsys, tiny):
    """fMRIPrep's suggestion, BIDS_DIR/derivatives/<name>: accepted (the run stops after the
    boilerplate), and nothing outside derivatives/ is touched."""
    before = snapshot(tiny["bids"])
    output_dir = tiny["bids"] / "derivatives" / "bids_harmony"
    code, err, _ = run_app(capsys, tiny["bids"], output_dir, "participant", "--model", "demo",
                           "-w", tiny["work"], "--nprocs", "1", "--boilerplate-only")
    assert code == 0, err
    assert "Traceback" not in err and "error:" not in err, err
    assert (output_dir / "dataset_description.json").is_file()
    assert list((output_dir / "logs").glob("CITATION.*"))
    assert not list(output_dir.glob("sub-*"))
    after = snapshot(tiny["bids"])
    assert {key: value for key, value in after.items() if not key.startswith("derivatives")} == before
    assert not (tiny["work"] / "bids_harmony_wf").exists()  # no node ran


@pytest.mark.parametrize("kind", ["output", "work"])
def test_unwritable_output_and_work_dir(capsys, tiny, kind):
    """A folder whose parent is a regular file cannot be made (even by root)."""
    blocker = tiny["tmp"] / "a_file"
    blocker.write_text("not a folder\n")
    folder = blocker / "sub"
    paths = {**tiny, "out" if kind == "output" else "work": folder}
    line = refused(capsys, paths, names=[folder], code=InputError.exit_code)
    assert ("output folder" if kind == "output" else "work dir") in line and "cannot be written" in line
    assert blocker.read_text() == "not a folder\n"


# --------------------------------------------------------------------------- the selection

def test_unknown_participant_label(capsys, tiny):
    line = refused(capsys, tiny, "--participant-label", "99", names=[tiny["bids"], "sub-99"],
                   code=BidsError.exit_code)
    assert "no participant" in line


@pytest.mark.parametrize("label", ["../01", "sub-01/..", "..", "01/anat", "sub-0 1"])
def test_participant_label_that_could_name_a_path(capsys, tiny, label):
    line = refused(capsys, tiny, "--participant-label", label, names=[repr(label)], code=InputError.exit_code)
    assert "letters and digits only" in line


def test_session_label_that_could_name_a_path(capsys, tiny):
    line = refused(capsys, tiny, "--session-label", "../../etc", names=["'../../etc'"],
                   code=InputError.exit_code)
    assert "letters and digits only" in line


# --------------------------------------------------------------------------- the model

def test_no_model(capsys, tiny):
    line = refused(capsys, tiny, model=None, code=ModelError.exit_code)
    assert "no model" in line
    assert "bids_harmony-train" in line and "--model demo" in line


def test_missing_model_file(capsys, tiny):
    missing = tiny["tmp"] / "models" / "target.pt"
    line = refused(capsys, tiny, model=missing, names=[missing], code=ModelError.exit_code)
    assert "no such model file" in line


@pytest.mark.parametrize("damage", ["truncated", "flipped-bytes", "empty", "text"])
def test_corrupt_model_file(capsys, tiny, damage):
    content = bundled_model_path().read_bytes()
    broken = tiny["tmp"] / f"{damage}.pt"
    if damage == "truncated":
        broken.write_bytes(content[: len(content) // 2])
    elif damage == "flipped-bytes":  # inside the weights: the zip CRC or our checksum catches it
        middle = len(content) // 2
        broken.write_bytes(content[:middle] + bytes(255 - b for b in content[middle:middle + 64])
                           + content[middle + 64:])
    elif damage == "empty":
        broken.write_bytes(b"")
    else:
        broken.write_text('{"format": "bids_harmony-model"}\n')
    line = refused(capsys, tiny, model=broken, names=[broken], code=ModelError.exit_code)
    assert "model file" in line


class _RunsCode:
    """Unpickling this creates ``marker``: the proof that a model file's code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_model_file_with_a_pickle_payload(capsys, tiny, container):
    """A model file must never run code: it is refused, and the payload never executes."""
    marker = tiny["tmp"] / "payload_ran"
    evil = tiny["tmp"] / f"evil-{container}.pt"
    if container == "torch.save":  # looks like a model, with an arbitrary object inside
        payload = torch.load(bundled_model_path(), map_location="cpu", weights_only=True)
        payload["training"] = {"notes": _RunsCode(marker)}
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(_RunsCode(marker)))
    assert not marker.exists()
    line = refused(capsys, tiny, model=evil, names=[evil], code=ModelError.exit_code)
    assert "model file" in line
    if container == "torch.save":
        assert "Python objects" in line
    assert not marker.exists(), "the model file's pickle payload was executed"


@pytest.mark.parametrize("change", ["mean_slices", "slice_shape", "n_positions"])
def test_model_made_for_another_grid(capsys, tiny, demo_model, change):
    """A model whose target statistics or flow do not fit its own slice grid (e.g. statistics
    from another grid put in a model): refused by name, before any image is processed."""
    model = dataclasses.replace(demo_model)
    if change == "mean_slices":
        model.mean_slices = demo_model.mean_slices[:, 8:-8, :]
    elif change == "slice_shape":
        model.preprocessing = dataclasses.replace(demo_model.preprocessing, slice_shape=(128, 160))
    else:
        model.preprocessing = dataclasses.replace(demo_model.preprocessing,
                                                  n_positions=demo_model.preprocessing.n_positions // 2)
    other = tiny["tmp"] / f"grid-{change}.pt"
    save_model(model, other)
    line = refused(capsys, tiny, model=other, names=[other], code=ModelError.exit_code)
    assert "slice grid" in line or "do not match" in line


# --------------------------------------------------------------------------- the device

def test_device_cuda_without_a_gpu(capsys, tiny):
    if torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU")
    line = refused(capsys, tiny, "--device", "cuda", names=["--device cuda"], code=InputError.exit_code)
    assert "no CUDA device" in line


# --------------------------------------------------------------------------- broken images

BAD_SUBJECTS = {
    "fourd": "expected a 3D",
    "trunc": ("cannot be read", "not a readable"),
    "nan": "NaN",
    "const": "constant",
}


@pytest.fixture
def broken_dataset(tmp_path, coarse_dataset) -> Path:
    """sub-good (a simulated T1w, at 2 mm: its QC segmentation is what takes time here), four
    subjects whose T1w is broken, and one with a T2w only."""
    root = tmp_path / "broken"
    (root / "sub-good" / "anat").mkdir(parents=True)
    shutil.copy(coarse_dataset / "dataset_description.json", root / "dataset_description.json")
    source = coarse_dataset / "sub-01" / "anat"
    shutil.copy(source / "sub-01_T1w.nii.gz", root / "sub-good" / "anat" / "sub-good_T1w.nii.gz")
    if (source / "sub-01_T1w.json").is_file():
        shutil.copy(source / "sub-01_T1w.json", root / "sub-good" / "anat" / "sub-good_T1w.json")

    def t1w(label: str) -> Path:
        return root / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"

    write_image(t1w("fourd"), np.stack([small_head()] * 3, axis=-1))
    good = (root / "sub-good" / "anat" / "sub-good_T1w.nii.gz").read_bytes()
    t1w("trunc").parent.mkdir(parents=True)
    t1w("trunc").write_bytes(good[: len(good) // 3])  # a valid gzip start, a header, then nothing
    write_image(t1w("nan"), np.full((24, 24, 24), np.nan, dtype=np.float32))
    write_image(t1w("const"), np.full((24, 24, 24), 100.0, dtype=np.float32))
    write_image(root / "sub-not1w" / "anat" / "sub-not1w_T2w.nii.gz", small_head())
    return root


def test_broken_images_fail_alone(capfd, tmp_path, broken_dataset):
    """One participant run: each broken T1w fails in the first node with one line naming its
    file and the problem (and a crash file); the good subject is still harmonized; exit 1."""
    before = snapshot(broken_dataset)
    output_dir, work_dir = tmp_path / "out", tmp_path / "work"
    code, err, _ = run_app(capfd, broken_dataset, output_dir, "participant", "--model", "demo",
                           "--skip-bids-validation", "-w", work_dir, "--nprocs", "2", "--iterations", "1")
    assert code != 0, err
    assert "Traceback" not in err, err
    assert not [line for line in err.splitlines() if line.startswith("error:")], err
    failed = [line for line in err.splitlines() if line.startswith("FAILED ")]

    harmonized = output_dir / "sub-good" / "anat" / "sub-good_desc-harmonized_T1w.nii.gz"
    assert harmonized.is_file(), err
    assert not [line for line in failed if line.startswith("FAILED sub-good")], err
    for label, problems in BAD_SUBJECTS.items():
        source = broken_dataset / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
        lines = [line for line in failed if line.startswith(f"FAILED sub-{label}:")]
        assert len(lines) == 1, (label, err)
        line = lines[0]
        assert line.startswith(f"FAILED sub-{label}: {source}: "), line
        problems = (problems,) if isinstance(problems, str) else problems
        assert any(problem in line for problem in problems), line
        assert "unexpected error" not in line, line
        crashes = list((output_dir / f"sub-{label}" / "log").glob("*/crash-*.txt"))
        assert crashes, (label, sorted(output_dir.rglob("*")))
        assert f"(crash file: {crashes[0].parent}" in line, line
        assert not list(output_dir.rglob(f"sub-{label}*desc-harmonized*")), label
    lines = [line for line in failed if line.startswith("FAILED sub-not1w:")]
    assert len(lines) == 1 and "no T1w" in lines[0], err
    assert not (output_dir / "sub-not1w").exists() or not list((output_dir / "sub-not1w").rglob("*_T1w*"))
    assert len(failed) == len(BAD_SUBJECTS) + 1, err
    summary = [line for line in err.splitlines() if line.startswith("bids_harmony: ")]
    assert summary and "1 T1w run(s) harmonized, 5 failed" in summary[-1], err
    assert snapshot(broken_dataset) == before
