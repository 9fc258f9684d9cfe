"""BIDS naming, sidecars and dataset descriptions (pybids underneath)."""
from .paths import build_bids_path, write_json
from .description import dataset_description

__all__ = ["build_bids_path", "dataset_description", "write_json"]
