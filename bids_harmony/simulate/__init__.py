"""Multi-scanner demo data: real anatomies imaged by the simulated Table 1 scanners."""
from .anatomy import SOURCES as ANATOMY_SOURCES, available_anatomies, load_anatomy
from .dataset import simulate_dataset
from .scanners import SCANNERS, TARGET

__all__ = [
    "ANATOMY_SOURCES",
    "SCANNERS",
    "TARGET",
    "available_anatomies",
    "load_anatomy",
    "simulate_dataset",
]
