"""Choosing T1w images from a BIDS dataset: entities, fMRIPrep-style filters, scanner metadata.

The target scanner is chosen by metadata (``ManufacturersModelName=TrioTim``,
``StationName=...``, ``MagneticFieldStrength=3``...), by the filter file format fMRIPrep uses
(``{"t1w": {"session": "01", ...}}``), and by participant / session labels. Scanners are told
apart by the identity a DICOM converter records: manufacturer, model, field, serial number and
station.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BidsError, InputError

SCANNER_KEYS = ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength",
                "DeviceSerialNumber", "StationName")
_T1W_QUERY = {"datatype": "anat", "suffix": "T1w", "extension": [".nii", ".nii.gz"]}


@dataclass(frozen=True)
class SelectedImage:
    path: Path
    subject: str
    session: str | None
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def scanner(self) -> tuple:
        return tuple(self.metadata.get(key) for key in SCANNER_KEYS)


def read_bids_filters(path: str | Path | None) -> dict[str, Any]:
    """The ``t1w`` query of an fMRIPrep ``--bids-filter-file`` (other keys are ignored)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such BIDS filter file") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a valid JSON filter file ({error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("t1w", {}), dict):
        raise InputError(f"{path}: a BIDS filter file maps queries such as \"t1w\" to entity filters")
    return dict(content.get("t1w", {}))


def parse_metadata_filters(items: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings from the command line."""
    filters = {}
    for item in items or []:
        key, separator, value = item.partition("=")
        if not separator or not key or not value:
            raise InputError(f"metadata filter {item!r} is not of the form KEY=VALUE")
        filters[key] = value
    return filters


def _matches(metadata: dict, key: str, wanted: str) -> bool:
    if key not in metadata:
        return False
    value = metadata[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return abs(float(wanted) - float(value)) < 1e-6
        except ValueError:
            return False
    return str(value) == wanted


def open_layout(bids_dir: str | Path, database_dir: str | Path | None = None):
    """A pybids layout of a BIDS folder, with a one-line error for a folder that is not one.

    ``database_dir`` keeps pybids' index between runs (it is reused when it exists).
    """
    from bids import BIDSLayout

    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputError(f"{bids_dir}: no such directory")
    if not (bids_dir / "dataset_description.json").is_file():
        raise BidsError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    try:
        return BIDSLayout(str(bids_dir), validate=False,
                          database_path=str(database_dir) if database_dir else None)
    except Exception as error:
        raise BidsError(f"{bids_dir}: pybids cannot index it ({str(error).splitlines()[0]})") from None


def clean_labels(labels: list[str] | None, prefix: str) -> list[str] | None:
    """Labels without their ``sub-``/``ses-`` prefix; a label that could name a path is refused."""
    if not labels:
        return None
    cleaned = []
    for label in labels:
        bare = label.removeprefix(f"{prefix}-")
        if not bare or not bare.isalnum():
            raise InputError(f"{prefix} label {label!r}: a BIDS label has letters and digits only")
        cleaned.append(bare)
    return cleaned


def select_t1w(
    layout,
    participant_labels: list[str] | None = None,
    session_labels: list[str] | None = None,
    bids_filters: dict[str, Any] | None = None,
    metadata_filters: dict[str, str] | None = None,
) -> list[SelectedImage]:
    """The T1w images matching every filter, sorted by subject and session."""
    query = {**_T1W_QUERY, **(bids_filters or {})}
    participant_labels = clean_labels(participant_labels, "sub")
    session_labels = clean_labels(session_labels, "ses")
    if participant_labels:
        query["subject"] = participant_labels
    if session_labels:
        query["session"] = session_labels
    if participant_labels:
        known = set(layout.get_subjects())
        missing = sorted(set(query["subject"]) - known)
        if missing:
            raise BidsError(f"{layout.root}: no participant(s) {', '.join('sub-' + m for m in missing)}")
    selected = []
    for image in layout.get(return_type="object", **query):
        metadata = image.get_metadata()
        if all(_matches(metadata, key, value) for key, value in (metadata_filters or {}).items()):
            entities = image.get_entities()
            selected.append(SelectedImage(Path(image.path), entities["subject"], entities.get("session"),
                                          metadata))
    return sorted(selected, key=lambda image: (image.subject, image.session or "", str(image.path)))


def scanner_summary(images: list[SelectedImage]) -> list[dict[str, Any]]:
    """Each distinct scanner identity among ``images``, with its number of images."""
    counts = Counter(image.scanner for image in images)
    return [{**dict(zip(SCANNER_KEYS, identity)), "images": count}
            for identity, count in counts.most_common()]
