"""``bids_harmony-simulate`` as a user runs it: arguments, errors, determinism, figure."""
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_harmony.cli.simulate import main


def _run(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "bids_harmony.cli.simulate", *map(str, arguments)],
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--scanners", "target", "prisma"], "unknown scanner 'prisma'"),
        (["--anatomies", "einstein"], "unknown anatomy 'einstein'"),
        (["--subjects-per-scanner", "0"], "--subjects-per-scanner must be at least 1"),
        (["--nprocs", "0"], "--nprocs must be at least 1"),
    ],
)
def test_bad_arguments_give_one_line_and_write_nothing(tmp_path, arguments, message):
    out = tmp_path / "out"
    result = _run(out, *arguments)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_is_protected(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = _run(out, "--scanners", "target", "--subjects-per-scanner", "1")
    assert result.returncode != 0
    assert "exists and is not empty (use --overwrite)" in result.stderr
    result = _run(out, "--scanners", "target", "--subjects-per-scanner", "1", "--overwrite")
    assert result.returncode != 0 and "only replaces a dataset written by" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def _one_subject(path, seed):
    assert main([str(path), "--scanners", "target", "--subjects-per-scanner", "1",
                 "--anatomies", "icbm152", "--seed", str(seed), "--overwrite"]) == 0
    return nib.load(str(path / "sub-01" / "anat" / "sub-01_T1w.nii.gz")).get_fdata()


def test_same_seed_same_dataset_and_overwrite(tmp_path):
    first = _one_subject(tmp_path / "a", 5)
    again = _one_subject(tmp_path / "a", 5)  # --overwrite replaces our own dataset
    other = _one_subject(tmp_path / "b", 6)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
    assert not any(p.name.startswith(".a.partial") for p in tmp_path.iterdir())


def test_figure_shows_one_head_per_scanner(tmp_path):
    from bids_harmony.simulate.figure import draw_scanner_panel
    import matplotlib.image

    figure = tmp_path / "panel.png"
    draw_scanner_panel(figure, "icbm152", ["target", "domain2"], seed=0)
    pixels = matplotlib.image.imread(str(figure))
    assert pixels.shape[1] > pixels.shape[0] * 0.6 and pixels.std() > 0.1


def test_installed_entry_points_report_the_version():
    from bids_harmony import __version__

    scripts = Path(sys.executable).parent
    for command in ("bids_harmony", "bids_harmony-simulate"):
        result = subprocess.run([str(scripts / command), "--version"], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.split() == [command, __version__]
    result = subprocess.run([str(scripts / "bids_harmony-simulate"), "--help"], capture_output=True, text=True)
    assert "--subjects-per-scanner" in result.stdout and "(default: 4)" in result.stdout
