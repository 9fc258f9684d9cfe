"""The built wheel: ``bids_harmony.workflows`` (a top-level folder of the repository) and the
bundled model are in it, importable from a fresh, non-editable install."""
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(REPOSITORY)], check=True, capture_output=True, text=True)
    (built,) = wheels.glob("bids_harmony-*.whl")
    return built


def test_wheel_installs_workflows_and_model(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies from this environment, as plain paths (its editable-install hooks stay out)
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, text=True)
    probe = ("import bids_harmony, bids_harmony.workflows as w; from bids_harmony.model import bundled_model_path; "
             "print(bids_harmony.__file__); print(w.__file__); print(bundled_model_path().stat().st_size); "
             "print(w.init_harmonize_t1w_wf.__name__)")
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={"NIPYPE_NO_ET": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    package, workflows, model_size, builder = result.stdout.split()
    assert Path(package).is_relative_to(site) and Path(workflows).is_relative_to(site)
    assert Path(workflows).parent == Path(package).parent / "workflows"
    assert int(model_size) > 1_000_000 and builder == "init_harmonize_t1w_wf"


def test_wheel_declares_every_command(wheel):
    """The wheel's entry points are the commands the README and the container use, and it
    carries the licence."""
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
        declared = archive.read(entry_points).decode()
        assert any(name.endswith("licenses/LICENSE") or name.endswith(".dist-info/LICENSE")
                   for name in archive.namelist())
    for command in ("bids_harmony", "bids_harmony-demo", "bids_harmony-simulate", "bids_harmony-train",
                    "bids_harmony-bench"):
        assert f"\n{command} = " in "\n" + declared


def test_version_and_licence_are_stated_once():
    """CITATION.cff repeats the package's version and licence; they must not drift."""
    import yaml

    import bids_harmony

    citation = yaml.safe_load((REPOSITORY / "CITATION.cff").read_text())
    assert citation["version"] == bids_harmony.__version__
    assert citation["license"] == "Apache-2.0" and "license=\"Apache-2.0\"" in (REPOSITORY / "setup.py").read_text()
    assert "Apache License" in (REPOSITORY / "LICENSE").read_text().splitlines()[1]
    assert (REPOSITORY / "CHANGES.md").read_text().startswith("# Changes")
