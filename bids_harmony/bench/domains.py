"""Simulated source domains: monotone intensity maps of a target-domain slice (seed section 3)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..preprocessing import minmax_slices

SIMULATED_DOMAINS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp,
    "log": lambda image: np.log1p(3.0 * image),
    **{f"gamma{gamma}": (lambda image, gamma=gamma: image ** gamma)
       for gamma in (0.7, 0.8, 0.9, 1.2, 1.3, 1.5)},
}


def simulate_domain(slices: np.ndarray, name: str) -> np.ndarray:
    """Apply one domain's map to (n, H, W) slices in [0, 1]; each result is min-max normalised."""
    if name not in SIMULATED_DOMAINS:
        raise ValueError(f"unknown simulated domain {name!r}; known: {', '.join(SIMULATED_DOMAINS)}")
    mapped = SIMULATED_DOMAINS[name](np.clip(np.asarray(slices, dtype=np.float64), 0.0, 1.0))
    return minmax_slices(mapped)[0]
