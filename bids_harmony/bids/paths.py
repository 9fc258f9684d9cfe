"""File names from BIDS entities, through pybids' own path patterns (never by hand)."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import bids


@lru_cache(maxsize=None)
def _patterns(config: str) -> tuple[str, ...]:
    path = os.path.join(os.path.dirname(bids.__file__), "layout", "config", f"{config}.json")
    with open(path) as handle:
        return tuple(json.load(handle)["default_path_patterns"])


def build_bids_path(entities: dict, derivative: bool = False) -> str:
    """Relative path of a file with these entities (raw or derivatives naming)."""
    from bids.layout.writing import build_path

    path = build_path(entities, list(_patterns("derivatives" if derivative else "bids")), strict=True)
    if path is None:
        raise ValueError(f"no BIDS path pattern fits {entities}")
    return path


def sidecar_path(image: str | Path) -> Path:
    """The JSON sidecar beside a NIfTI image (``.nii`` or ``.nii.gz``)."""
    return Path(str(image).split(".nii")[0] + ".json")


def write_json(path: str | Path, content: dict) -> None:
    """A JSON sidecar, indented, with a trailing newline, parents created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
