"""Figures of the per-subject report that nireports has no reportlet for."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

#: Okabe-Ito colours (safe for colour-blind readers): source, harmonized, target.
COLOURS = {"source": "#E69F00", "harmonized": "#0072B2", "target": "#009E73"}
LABELS = {"source": "source", "harmonized": "harmonized", "target": "target scanner (reference)"}


def density_from_quantiles(levels: Sequence[float], quantiles: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """A smooth density on ``grid`` of the distribution given by ``quantiles`` at ``levels``:
    a Gaussian kernel estimate over evenly spaced draws of its quantile function."""
    from scipy.stats import gaussian_kde

    draws = np.interp(np.linspace(0.005, 0.995, 400), levels, quantiles)
    if np.ptp(draws) == 0:
        return np.zeros_like(grid)
    return gaussian_kde(draws, bw_method=0.08)(grid)


def brain_histogram(brain_quantiles: Mapping[str, Sequence[float] | None], out_file: str) -> str:
    """Brain intensity distributions (WM-normalised) of the source, the harmonized image and, when
    the model carries it, the target scanner's reference, as one SVG; returns ``out_file``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = np.asarray(brain_quantiles["levels"], dtype=float)
    shown = {name: np.asarray(brain_quantiles[name], dtype=float)
             for name in ("source", "harmonized", "target") if brain_quantiles.get(name) is not None}
    high = max(float(np.interp(0.995, levels, values)) for values in shown.values())
    grid = np.linspace(0.0, max(high * 1.1, 1.2), 400)
    plt.rcParams["svg.hashsalt"] = "bids_harmony"  # the same figure gives the same file
    figure, axis = plt.subplots(figsize=(7.0, 2.6))
    for name, values in shown.items():
        axis.plot(grid, density_from_quantiles(levels, values, grid), color=COLOURS[name], lw=2,
                  ls="--" if name == "target" else "-", label=LABELS[name])
    axis.axvline(1.0, color="0.6", lw=0.8, ls=":")
    axis.set_xlabel("brain intensity / median of white matter")
    axis.set_ylabel("density")
    axis.set_yticks([])
    axis.spines[["top", "right", "left"]].set_visible(False)
    axis.legend(frameon=False, fontsize=9)
    if "target" not in shown:
        axis.set_title("the model file has no target reference (not calibrated)", fontsize=9, color="0.4")
    figure.tight_layout()
    figure.savefig(out_file, format="svg", metadata={"Date": None})
    plt.close(figure)
    return out_file
