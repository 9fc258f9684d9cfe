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


@pytest.fixture(scope="session")
def target_cohort(tmp_path_factory) -> Path:
    """Eleven subjects of the target scanner (seed 11)."""
    return _simulate(tmp_path_factory.mktemp("sim") / "cohort", "--scanners", "target",
                     "--subjects-per-scanner", "11", "--seed", "11")
