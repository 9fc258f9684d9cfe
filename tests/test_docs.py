"""The documentation site builds with Sphinx, warnings as errors, and its command-line reference
is generated from the real argument parsers (sphinx-argparse)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("sphinxarg")
pytest.importorskip("myst_parser")

ROOT = Path(__file__).resolve().parent.parent

#: options of each entry point, which only sphinx-argparse can have put in its part of the page
CLI_OPTIONS = {
    "bids_harmony": ["--participant-label", "--bids-filter-file", "--skip-qc", "--model"],
    "bids_harmony-simulate": ["--subjects-per-scanner", "--anatomies"],
    "bids_harmony-train": ["--target", "--calibrate-only"],
    "bids_harmony-bench": ["--max-slices", "--no-ablations"],
    "bids_harmony-demo": ["--seed", "--work-dir"],
}


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs_html")
    env = {**os.environ, "NIPYPE_NO_ET": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), "docs", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, f"sphinx failed:\n{build.stdout}\n{build.stderr}"
    return out


def cli_sections(page: str) -> dict[str, str]:
    """The HTML of the sections sphinx-argparse generated, gathered by program.

    sphinx-argparse names its sections ``<prog>-<group>`` (``bids_harmony-train-training``).
    """
    sections: dict[str, str] = {prog: "" for prog in CLI_OPTIONS}
    for chunk in re.split(r'(?=<section id=")', page):
        match = re.match(r'<section id="([^"]+)"', chunk)
        if not match:
            continue
        owners = [prog for prog in CLI_OPTIONS if match.group(1).startswith(prog + "-")]
        if owners:
            sections[max(owners, key=len)] += chunk
    return sections


def test_docs_build_without_warnings(html):
    for page in ("index", "app", "outputs", "qc", "cli", "harmonization", "history", "changes"):
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.parametrize("prog", sorted(CLI_OPTIONS))
def test_cli_reference_is_generated_from_the_parsers(html, prog):
    generated = cli_sections((html / "cli.html").read_text(encoding="utf-8"))[prog]
    assert generated, f"sphinx-argparse generated nothing for {prog}"
    for option in CLI_OPTIONS[prog]:
        assert option in generated, f"{option} of {prog} missing from the generated CLI reference"
