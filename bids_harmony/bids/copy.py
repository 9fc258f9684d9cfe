"""A raw-like BIDS copy of the input dataset with each harmonized T1w in place of its source,
for downstream BIDS-Apps (fMRIPrep and the like) that take a raw dataset."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from ..__about__ import __version__
from ..atomic import atomic_copy
from ..errors import InputError
from .paths import sidecar_path

COPY_MARKER = "bids_harmony --bids-copy"


def check_copy_target(copy_dir: Path, bids_dir: Path, output_dir: Path) -> None:
    """Refuse a copy inside the input dataset or the output folder, or over a folder that is not
    an earlier copy of ours (it would be replaced)."""
    copy, bids, output = copy_dir.resolve(), bids_dir.resolve(), output_dir.resolve()
    if copy.is_relative_to(bids) or copy.is_relative_to(output) or output.is_relative_to(copy):
        raise InputError(f"{copy_dir}: the BIDS copy must be outside the BIDS dataset and the output folder")
    if copy_dir.exists() and any(copy_dir.iterdir()) and not _is_our_copy(copy_dir):
        raise InputError(f"{copy_dir}: exists and is not a BIDS copy made by bids_harmony; choose an empty "
                         "or new folder")


def _is_our_copy(folder: Path) -> bool:
    try:
        description = json.loads((folder / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    return any(entry.get("Description") == COPY_MARKER for entry in description.get("GeneratedBy", []))


def _link(source: Path, destination: Path) -> None:
    """A hard link (survives being bound into a container), else a relative symbolic link."""
    try:
        os.link(source, destination)
    except OSError:
        os.symlink(os.path.relpath(source, destination.parent), destination)


def write_bids_copy(bids_dir: Path, copy_dir: Path, harmonized: dict[Path, Path], left_out: list[Path],
                    model_sha256: str) -> Path:
    """Build the copy beside ``copy_dir`` and move it into place once complete.

    ``harmonized`` maps each source T1w to its harmonized image, which replaces it (the sidecar
    keeps the source's metadata and says what was done); ``left_out`` are T1w runs that failed:
    they are not in the copy (their source must not pass for harmonized). Every other file of
    the dataset, ``derivatives/`` aside, is linked.
    """
    staging = copy_dir.with_name(f".{copy_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    skipped = {Path(path).resolve() for path in left_out}
    sidecars = {sidecar_path(path).resolve() for path in [*harmonized, *left_out]}
    replacements = {Path(source).resolve(): Path(target) for source, target in harmonized.items()}
    try:
        for source in sorted(bids_dir.rglob("*")):
            relative = source.relative_to(bids_dir)
            if relative.parts[0] == "derivatives" or source.is_dir():
                continue
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            resolved = source.resolve()
            if resolved in skipped or resolved in sidecars or relative.name == "dataset_description.json":
                continue
            if resolved in replacements:
                atomic_copy(replacements[resolved], destination.with_name(relative.name.split(".nii")[0] + ".nii.gz"))
                continue
            _link(source, destination)
        for source in harmonized:
            _write_sidecar(Path(source), bids_dir, staging, model_sha256)
        _write_description(bids_dir, staging)
        if copy_dir.exists():
            shutil.rmtree(copy_dir)
        staging.rename(copy_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copy_dir


def _write_sidecar(source: Path, bids_dir: Path, staging: Path, model_sha256: str) -> None:
    sidecar = sidecar_path(source)
    content = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    content["HarmonizedWith"] = {"Software": f"bids_harmony {__version__}", "ModelSHA256": model_sha256,
                                 "Source": source.relative_to(bids_dir).as_posix()}
    destination = staging / sidecar.relative_to(bids_dir)
    destination.write_text(json.dumps(content, indent=2) + "\n")


def _write_description(bids_dir: Path, staging: Path) -> None:
    description = json.loads((bids_dir / "dataset_description.json").read_text())
    description["Name"] = f"{description.get('Name', bids_dir.name)} (T1w harmonized with bids_harmony)"
    description["DatasetType"] = "raw"
    description["GeneratedBy"] = [*description.get("GeneratedBy", []),
                                  {"Name": "bids_harmony", "Version": __version__, "Description": COPY_MARKER}]
    (staging / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
