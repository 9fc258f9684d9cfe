"""Benchmark cases from a ``bids_harmony-simulate`` dataset: which subjects, which files, which slices.

Target-scanner subjects the model was not trained on give the simulated domains (exp, log,
gamma); source-scanner subjects give the paired scanner domains, scored against the same head
imaged by the target scanner (``derivatives/groundtruth``, ``desc-pairedtarget``). Which slices
of each volume are candidates is the protocol's choice (:data:`PROTOCOLS`); a domain's slice
budget is spread evenly over its subjects' candidates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import nibabel as nib
import numpy as np
from tqdm import tqdm

from ..bids.selection import SelectedImage, open_layout, select_t1w
from ..errors import BidsError, InputError
from ..model.file import HarmonyModel
from ..preprocessing import SliceGeometry, mask_to_slices, to_slices
from .domains import SIMULATED_DOMAINS, simulate_domain
from .protocol import BenchCase, spread_indices

BRAIN_LABELS = (1, 2, 3)  # CSF, GM, WM in the simulator's dseg.tsv
MIN_BRAIN_SHARE = 0.1  # slices whose brain is at least this share of the subject's largest
DEFAULT_MAX_SLICES = 64  # slices per domain: the run time grows linearly with it
CENTRAL_SLICES = 50  # the authors' slices per volume: the central axial ones
#: ``ours``: every slice through the brain (at least ``MIN_BRAIN_SHARE`` of the volume's largest
#: brain section); ``authors``: the ``CENTRAL_SLICES`` central positions of the grid, as the authors'
#: evaluation scripts take them
PROTOCOLS = ("ours", "authors")


def candidate_slices(valid: np.ndarray, positions: np.ndarray, brain_area: np.ndarray, n_positions: int,
                     protocol: str = "ours") -> np.ndarray:
    """Indices of a volume's slices the protocol scores (valid slices only)."""
    if protocol == "authors":
        first = (n_positions - CENTRAL_SLICES) // 2
        return np.flatnonzero(valid & (positions >= first) & (positions < first + CENTRAL_SLICES))
    return np.flatnonzero(valid & (brain_area >= MIN_BRAIN_SHARE * brain_area.max()))


def trained_subjects(model: HarmonyModel, bids_dir: Path) -> set[str]:
    """Subjects of ``bids_dir`` the model was trained on (none unless it is the training dataset).

    Scoring a head the flow has seen would flatter it, so these are left out.
    """
    dataset = model.target.get("dataset")
    if dataset and Path(dataset).resolve() == Path(bids_dir).resolve():
        return set(model.target.get("training_subjects") or [])
    return set()


def groundtruth_file(image: SelectedImage, groundtruth: Path, suffix: str) -> Path:
    """``sub-X[_ses-Y]_<suffix>.nii[.gz]`` beside where the T1w would be, under groundtruth."""
    relative = image.path.resolve().relative_to(groundtruth.resolve().parents[1])
    return groundtruth / relative.parent / relative.name.replace("_T1w.nii", f"_{suffix}.nii")


def tissue_slices(image: SelectedImage, geometry: SliceGeometry, groundtruth: Path) -> np.ndarray:
    """The simulator's tissue labels on the model's slices (``(n, H, W)``; 0 outside the brain).

    The brain scores (``psnr_brain``, ``ssim_brain``), the tissue scores and the choice of slices
    use them. Each tissue's mask is resampled like the image and kept above one half, so no pixel
    gets two labels.
    """
    labels_path = groundtruth_file(image, groundtruth, "dseg")
    if not labels_path.is_file():
        raise BidsError(f"{labels_path}: no tissue labels; bids_harmony-bench needs a dataset written by "
                        "bids_harmony-simulate (derivatives/groundtruth)")
    labels = nib.load(labels_path)
    values = np.asarray(labels.dataobj)
    tissues = np.zeros((len(geometry.positions),) + tuple(geometry.config.slice_shape), np.int8)
    for label in BRAIN_LABELS:
        tissues[mask_to_slices(values == label, labels.affine, geometry)] = label
    return tissues


def domain_label(image: SelectedImage, participants: dict[str, dict]) -> str:
    """The scanner domain a source image belongs to, as the tables name it.

    The simulator's ``participants.tsv`` domain where there is one (``<domain>: <model> <field>T``),
    else the scanner model, field and station from the sidecar.
    """
    metadata = image.metadata
    scanner = " ".join(str(part) for part in (metadata.get("ManufacturersModelName"),
                                               f"{metadata.get('MagneticFieldStrength', '?')}T") if part)
    domain = participants.get(image.subject, {}).get("domain")
    return f"{domain}: {scanner}" if domain else f"{scanner} ({metadata.get('StationName', 'unknown station')})"


def read_participants(bids_dir: Path) -> dict[str, dict]:
    """``participants.tsv`` rows by subject label (without ``sub-``); empty if there is none."""
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        return {}
    import pandas as pd

    table = pd.read_csv(path, sep="\t", dtype=str)
    return {row["participant_id"].removeprefix("sub-"): row for row in table.to_dict("records")}


class SubjectSlices:
    """One image's candidate slices on the model's grid (and, for a source image, its paired
    truth): :func:`candidate_slices` of the ``protocol``. By ours, a slice is kept where the
    preprocessing found it valid and its brain is at least ``MIN_BRAIN_SHARE`` of the subject's
    largest, so edge slices of skull do not dominate the scores.
    """

    def __init__(self, image: SelectedImage, model: HarmonyModel, groundtruth: Path, paired: bool,
                 protocol: str = "ours"):
        self.image = image
        slices, geometry = to_slices(image.path, model.preprocessing)
        tissues = tissue_slices(image, geometry, groundtruth)
        keep = candidate_slices(geometry.valid, geometry.positions, (tissues > 0).reshape(len(tissues), -1).sum(1),
                                model.preprocessing.n_positions, protocol)
        self.slices, self.tissues, self.positions = slices[keep], tissues[keep], geometry.positions[keep]
        self.truth = self.slices
        if paired:
            path = groundtruth_file(image, groundtruth, "desc-pairedtarget_T1w")
            if not path.is_file():
                raise BidsError(f"{path}: missing paired target-scanner image of {image.path.name}")
            self.truth = to_slices(path, model.preprocessing, geometry=geometry)[0][keep]


def take_slices(subjects: Sequence[SubjectSlices], budget: int) -> list[tuple[SubjectSlices, np.ndarray]]:
    """Split a slice budget evenly over the pooled slices of several subjects.

    Returns each subject that gets any slice with the rows it gets.
    """
    owners = np.concatenate([np.full(len(subject.slices), index) for index, subject in enumerate(subjects)])
    rows = np.concatenate([np.arange(len(subject.slices)) for subject in subjects])
    chosen = spread_indices(len(owners), budget)
    return [(subject, rows[chosen][owners[chosen] == index]) for index, subject in enumerate(subjects)
            if np.any(owners[chosen] == index)]


def split_images(model: HarmonyModel, bids_dir: Path, participant_labels: Iterable[str] | None = None
                 ) -> tuple[list[SelectedImage], list[tuple[str, SelectedImage]]]:
    """The T1w images of a simulated dataset the model was not trained on: the target scanner's,
    and the other scanners' with their domain (:func:`domain_label`), sorted by domain."""
    bids_dir = Path(bids_dir)
    layout = open_layout(bids_dir)
    if not (bids_dir / "derivatives" / "groundtruth").is_dir():
        raise BidsError(f"{bids_dir / 'derivatives' / 'groundtruth'}: missing; bids_harmony-bench needs a "
                        "dataset written by bids_harmony-simulate")
    images = select_t1w(layout, participant_labels=participant_labels)
    trained = trained_subjects(model, bids_dir)
    images = [image for image in images if image.subject not in trained]
    filters = model.target.get("metadata_filters") or {}
    if not filters:
        raise InputError("the model records no metadata filter for its target scanner; "
                         "bids_harmony-bench cannot tell target from source images")
    targets = {image.path for image in select_t1w(layout, participant_labels=participant_labels,
                                                  bids_filters=model.target.get("bids_filters") or {},
                                                  metadata_filters=filters)}
    participants = read_participants(bids_dir)
    sources = sorted(((domain_label(image, participants), image) for image in images if image.path not in targets),
                     key=lambda pair: pair[0])
    return [image for image in images if image.path in targets], sources


def build_cases(model: HarmonyModel, bids_dir: Path, *, participant_labels: Iterable[str] | None = None,
                domains: Sequence[str] = tuple(SIMULATED_DOMAINS), paired: bool = True,
                max_slices: int = DEFAULT_MAX_SLICES, protocol: str = "ours",
                log: Callable[[str], None] = print, progress: bool = True) -> list[BenchCase]:
    """The benchmark cases of a simulated dataset: every simulated domain, then every paired domain.

    ``domains`` are the simulated domains to map the target-scanner subjects' slices to (none:
    no simulated cases); ``paired`` adds the source-scanner subjects; each domain gets at most
    ``max_slices`` slices of the ``protocol``'s candidates. ``log`` is told which subjects play
    which part.
    """
    if max_slices < 1:
        raise InputError(f"the slice budget per domain must be at least 1 (got {max_slices})")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown slice protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    bids_dir = Path(bids_dir)
    groundtruth = bids_dir / "derivatives" / "groundtruth"
    target_images, source_images = split_images(model, bids_dir, participant_labels)
    if not paired:
        source_images = []
    if domains and not target_images:
        raise BidsError(f"{bids_dir}: no target-scanner T1w ({model.target.get('metadata_filters')}) "
                        "the model was not trained on")
    log(f"Target-scanner subjects (simulated domains): {', '.join('sub-' + i.subject for i in target_images)}")
    log("Source-scanner subjects (paired domains): "
        f"{', '.join('sub-' + image.subject for _, image in source_images) or 'none'}")
    bar = tqdm(total=len(target_images) + len(source_images), desc="preprocessing", unit="image",
               disable=not progress)
    cases = []
    if domains and target_images:
        subjects = []
        for image in target_images:
            subjects.append(SubjectSlices(image, model, groundtruth, paired=False, protocol=protocol))
            bar.update()
        picked = take_slices(subjects, max_slices)
        for domain in domains:
            for subject, rows in picked:
                cases.append(BenchCase(domain, "simulated", subject.image.subject,
                                       simulate_domain(subject.slices[rows], domain), subject.slices[rows],
                                       subject.positions[rows], subject.tissues[rows]))
    by_domain: dict[str, list[SubjectSlices]] = {}
    for domain, image in source_images:
        by_domain.setdefault(domain, []).append(SubjectSlices(image, model, groundtruth, paired=True,
                                                              protocol=protocol))
        bar.update()
    bar.close()
    for domain, subjects in by_domain.items():
        for subject, rows in take_slices(subjects, max_slices):
            cases.append(BenchCase(domain, "paired", subject.image.subject, subject.slices[rows],
                                   subject.truth[rows], subject.positions[rows], subject.tissues[rows]))
    return cases
