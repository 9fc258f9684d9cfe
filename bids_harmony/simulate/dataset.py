"""Write a simulated multi-scanner BIDS dataset with paired target-scanner ground truth.

Layout::

    OUT/dataset_description.json, README, participants.tsv/.json
    OUT/sub-<l>/anat/sub-<l>_T1w.nii.gz + .json          what the subject's scanner saw
    OUT/derivatives/groundtruth/
        sub-<l>/anat/sub-<l>_dseg.nii.gz + .json         tissue labels on that grid
        sub-<l>/anat/sub-<l>_desc-pairedtarget_T1w.nii.gz  the same head on the target scanner
        sub-<l>/anat/sub-<l>_desc-pairedtarget_dseg.nii.gz (source-scanner subjects only)

Everything is written into a temporary sibling folder that replaces ``OUT`` only once the
whole dataset is complete, so an interrupted run never leaves a dataset that looks whole.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..__about__ import __version__
from ..bids import build_bids_path, dataset_description, write_json
from ..errors import InputError, OutputExistsError
from ..threads import limit_threads
from .acquisition import Subject, acquire, random_subject
from .anatomy import Anatomy, load_anatomy
from .scanners import SCANNERS, TARGET
from .tissues import LABELS

COMMAND = "bids_harmony-simulate"
GROUNDTRUTH = Path("derivatives") / "groundtruth"
_LICENCE = (
    "Simulated from: ICBM152 2009 templates (MNI, permissive licence), FreeSurfer fsaverage "
    "(FreeSurfer licence v1.0), Colin27 (Debian mricron-data, BSD-3). See README."
)


@dataclass(frozen=True)
class PlannedSubject:
    index: int
    label: str
    scanner: str
    anatomy: str


def plan_subjects(scanners: list[str], anatomies: list[str], per_scanner: int) -> list[PlannedSubject]:
    """Subjects interleaved over scanners; each scanner cycles through every anatomy."""
    if per_scanner < 1:
        raise InputError(f"subjects per scanner must be at least 1 (got {per_scanner})")
    total = per_scanner * len(scanners)
    width = max(2, len(str(total)))
    planned = []
    for index in range(total):
        scanner_index, nth = index % len(scanners), index // len(scanners)
        anatomy = anatomies[(nth + scanner_index) % len(anatomies)]
        planned.append(PlannedSubject(index, f"{index + 1:0{width}d}", scanners[scanner_index], anatomy))
    return planned


def subject_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent, reproducible random streams per subject (0 anatomy, 1 scan, 2 target)."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


# Anatomies are loaded once in the parent; forked workers share them copy-on-write.
_ANATOMIES: dict[str, Anatomy] = {}


def _save_with_sidecar(image, image_path: Path, sidecar: dict) -> None:
    image_path.parent.mkdir(parents=True, exist_ok=True)
    image.to_filename(str(image_path))
    write_json(str(image_path).replace(".nii.gz", ".json"), sidecar)


def _simulate_subject(planned: PlannedSubject, seed: int, root: str) -> dict:
    root_path = Path(root)
    subject: Subject = random_subject(_ANATOMIES[planned.anatomy], subject_rng(seed, planned.index, 0))
    scanner = SCANNERS[planned.scanner]
    scan = acquire(subject, scanner, subject_rng(seed, planned.index, 1))
    entities = {"subject": planned.label, "datatype": "anat", "extension": ".nii.gz"}
    raw_path = build_bids_path({**entities, "suffix": "T1w"})
    _save_with_sidecar(scan.image, root_path / raw_path, scanner.sidecar())

    derivatives = root_path / GROUNDTRUTH
    raw_uri = f"bids:raw:{raw_path}"
    labels_path = derivatives / build_bids_path({**entities, "suffix": "dseg"}, derivative=True)
    _save_with_sidecar(
        scan.labels,
        labels_path,
        {"Sources": [raw_uri], "SpatialReference": raw_uri,
         "Description": "Tissue labels of the simulated head on the grid of the subject's T1w.",
         "Simulation": scan.record},
    )
    if planned.scanner != TARGET:
        target = SCANNERS[TARGET]
        paired = acquire(subject, target, subject_rng(seed, planned.index, 2))
        paired_entities = {**entities, "desc": "pairedtarget"}
        paired_path = derivatives / build_bids_path({**paired_entities, "suffix": "T1w"}, derivative=True)
        _save_with_sidecar(
            paired.image,
            paired_path,
            {**target.sidecar(), "SkullStripped": False, "Sources": [raw_uri],
             "SpatialReference": raw_uri,
             "Description": "The same simulated head and pose imaged by the target scanner.",
             "Simulation": paired.record},
        )
        paired_labels = derivatives / build_bids_path({**paired_entities, "suffix": "dseg"}, derivative=True)
        _save_with_sidecar(
            paired.labels,
            paired_labels,
            {"Sources": [raw_uri], "SpatialReference": raw_uri,
             "Description": "Tissue labels of the simulated head on the paired target-scanner grid."},
        )
    return {
        "participant_id": f"sub-{planned.label}",
        "scanner": planned.scanner,
        "domain": scanner.domain,
        "manufacturers_model_name": scanner.model,
        "magnetic_field_strength": scanner.field_strength,
        "station_name": scanner.station_name,
        "anatomy": planned.anatomy,
    }


_PARTICIPANTS_SIDECAR = {
    "scanner": {"Description": "Simulated scanner (bids_harmony-simulate key)",
                "Levels": {key: f"{s.domain}: {s.manufacturer} {s.model} {s.field_strength} T"
                           for key, s in SCANNERS.items()}},
    "domain": {"Description": "Domain of the BlindHarmony paper's Table 1"},
    "manufacturers_model_name": {"Description": "Scanner model"},
    "magnetic_field_strength": {"Description": "Main field", "Units": "T"},
    "station_name": {"Description": "Scanner station (site)"},
    "anatomy": {"Description": "Real brain the simulated subject was made from",
                "Levels": {"icbm152": "ICBM152 2009 symmetric template",
                           "colin27": "Colin27 (one person)",
                           "fsaverage": "FreeSurfer fsaverage"}},
}


def _readme(scanners: list[str], anatomies: list[str], per_scanner: int, seed: int) -> str:
    lines = [
        "# Simulated multi-scanner T1w dataset",
        "",
        f"Written by {COMMAND} {__version__} (seed {seed}, {per_scanner} subject(s) per scanner).",
        "Each subject is a real brain (anatomy column of participants.tsv) deformed by a random",
        "smooth diffeomorphism and posed at random in the scanner, imaged with an MPRAGE signal",
        "model, scanner-specific transmit/receive fields, voxel size and Rician noise.",
        "",
        "Scanners (BlindHarmony, ICCV 2023, supplementary Table 1):",
    ]
    for key in scanners:
        scanner = SCANNERS[key]
        lines.append(f"- {key}: {scanner.domain}, {scanner.manufacturer} {scanner.model} "
                     f"{scanner.field_strength} T, {scanner.station_name}")
    lines += [
        "",
        f"Anatomies: {', '.join(anatomies)}.",
        "",
        "derivatives/groundtruth holds each subject's tissue labels and, for subjects not on the",
        "target scanner, the same head imaged by the target scanner (desc-pairedtarget).",
        "",
        f"Licence: {_LICENCE}",
        "",
    ]
    return "\n".join(lines)


def _check_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out_dir}: output directory exists and is not empty")
        description = out_dir / "dataset_description.json"
        try:
            generated = json.loads(description.read_text()).get("GeneratedBy", [{}])[0].get("Name")
        except (OSError, ValueError, IndexError, AttributeError):
            generated = None
        if generated != COMMAND:
            raise InputError(
                f"{out_dir}: --overwrite only replaces a dataset written by {COMMAND}; "
                "this folder holds something else"
            )


def simulate_dataset(
    out_dir: str | Path,
    subjects_per_scanner: int,
    seed: int = 0,
    scanners: list[str] | None = None,
    anatomies: list[str] | None = None,
    nprocs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Simulate and write the dataset; returns the participants table."""
    scanners = list(scanners or SCANNERS)
    anatomies = list(anatomies or [])
    unknown = [key for key in scanners if key not in SCANNERS]
    if unknown:
        raise InputError(f"unknown scanner {unknown[0]!r}; known: {', '.join(SCANNERS)}")
    if not anatomies:
        raise InputError("no anatomy is available to simulate from")
    if nprocs < 1:
        raise InputError(f"the number of worker processes must be at least 1 (got {nprocs})")
    out_dir = Path(out_dir).absolute()
    _check_output(out_dir, overwrite)
    planned = plan_subjects(scanners, anatomies, subjects_per_scanner)
    for name in anatomies:
        _ANATOMIES[name] = load_anatomy(name)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        rows = _run(planned, seed, staging, nprocs, progress)
        _write_top_level(staging, rows, scanners, anatomies, subjects_per_scanner, seed)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp made it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return rows


def _run(planned, seed, staging, nprocs, progress) -> pd.DataFrame:
    bar = tqdm(total=len(planned), desc="simulating subjects", unit="subject",
               disable=not progress, file=sys.stderr)
    results = {}
    if nprocs == 1:
        for item in planned:
            results[item.index] = _simulate_subject(item, seed, str(staging))
            bar.update()
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(nprocs, mp_context=context, initializer=limit_threads,
                                 initargs=(1,)) as pool:  # workers split the cores between them
            futures = {pool.submit(_simulate_subject, item, seed, str(staging)): item for item in planned}
            for future in as_completed(futures):
                results[futures[future].index] = future.result()
                bar.update()
    bar.close()
    return pd.DataFrame([results[index] for index in sorted(results)])


def _write_top_level(root: Path, participants: pd.DataFrame, scanners, anatomies, per_scanner, seed):
    write_json(
        root / "dataset_description.json",
        {
            **dataset_description(
                name="bids_harmony simulated multi-scanner T1w",
                generated_by=COMMAND,
                description="MPRAGE simulation of the BlindHarmony Table 1 scanners from real anatomies",
                dataset_type="raw",
                license_text=_LICENCE,
            ),
            "Authors": ["bids_harmony developers"],
        },
    )
    (root / "README").write_text(_readme(scanners, anatomies, per_scanner, seed))
    participants.to_csv(root / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    write_json(root / "participants.json", _PARTICIPANTS_SIDECAR)
    derivatives = root / GROUNDTRUTH
    write_json(
        derivatives / "dataset_description.json",
        dataset_description(
            name="bids_harmony simulated ground truth",
            generated_by=COMMAND,
            description="Tissue labels and paired target-scanner images of the simulated subjects",
            source_datasets=[{"URL": "bids:raw:.", "Version": __version__}],
            dataset_links={"raw": "../.."},
            license_text=_LICENCE,
        ),
    )
    (derivatives / "README").write_text(
        "# Ground truth of the simulated dataset\n\nTissue labels (dseg.tsv) of every subject and, "
        "for subjects scanned on a source scanner, the same head imaged by the target scanner "
        "(desc-pairedtarget). Each sidecar's Simulation entry records how it was made.\n"
    )
    lookup = pd.DataFrame({"index": list(LABELS), "name": list(LABELS.values())})
    lookup.to_csv(derivatives / "dseg.tsv", sep="\t", index=False)
