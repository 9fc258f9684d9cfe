"""Scanner signatures measured on an image with tissue labels.

The label values are arguments: the simulator's ground truth (1 CSF, 2 GM, 3 WM) and BIDS's
dseg table (1 GM, 2 WM, 3 CSF) disagree, so each caller passes the values of its own table.
Both measures are ratios of medians, so they ignore the arbitrary intensity scale of a scan
and are robust to noise and partial-volume tails.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def core_mask(labels: np.ndarray, label: int) -> np.ndarray:
    """Voxels of ``label`` whose face neighbours carry the same label (no partial volume)."""
    return ndimage.binary_erosion(labels == label)


def wm_gm_ratio(image: np.ndarray, labels: np.ndarray, voxel_mm: np.ndarray, *, wm_label: int,
                gm_label: int, block_mm: float = 24.0, min_voxels: int = 50) -> float:
    """White over grey matter intensity, measured locally so a smooth bias field cancels.

    The brain is cut into cubes of ``block_mm``; in each cube holding enough core voxels of
    both tissues the ratio of their median intensities is taken; the result is the median over
    cubes. A global ratio would mix contrast with the receive field (grey matter lies further
    out than white matter, where array coils are more sensitive).
    """
    block = np.maximum(np.round(block_mm / np.asarray(voxel_mm, dtype=float)).astype(int), 1)
    grid = tuple(-(-size // step) for size, step in zip(labels.shape, block))
    per_tissue = []
    for label in (wm_label, gm_label):
        where = np.nonzero(core_mask(labels, label))
        cubes = np.ravel_multi_index(tuple(w // b for w, b in zip(where, block)), grid)
        order = np.argsort(cubes, kind="stable")
        cubes, values = cubes[order], image[where][order]
        ids, starts, counts = np.unique(cubes, return_index=True, return_counts=True)
        medians = {
            cube: np.median(values[start:start + count])
            for cube, start, count in zip(ids, starts, counts)
            if count >= min_voxels
        }
        per_tissue.append(medians)
    white, grey = per_tissue
    ratios = [white[cube] / grey[cube] for cube in white.keys() & grey.keys()]
    if not ratios:
        raise ValueError("too few white- and grey-matter voxels to measure their contrast")
    return float(np.median(ratios))


def bias_profile(image: np.ndarray, labels: np.ndarray, voxel_mm: np.ndarray, *, wm_label: int,
                 inner_mm: float = 30.0, outer_mm: float = 55.0) -> float:
    """Deep over superficial white matter (median intensity): above 1 means centre brightening.

    Distances are from the centroid of the white matter, in millimetres.
    """
    white = core_mask(labels, wm_label)
    coordinates = np.argwhere(white) * np.asarray(voxel_mm)
    distance = np.linalg.norm(coordinates - coordinates.mean(0), axis=1)
    values = image[white]
    deep, superficial = values[distance < inner_mm], values[distance > outer_mm]
    if not len(deep) or not len(superficial):
        raise ValueError(f"no core white matter within {inner_mm} mm of its centroid or beyond "
                         f"{outer_mm} mm: too little white matter to measure its bias profile")
    return float(np.median(deep) / np.median(superficial))


def _white_matter_levels(slices: np.ndarray, white_matter: np.ndarray, min_voxels: int) -> np.ndarray:
    """Median white-matter intensity per slice; NaN where a slice has too little of it."""
    return np.array([np.median(image[mask]) if mask.sum() >= min_voxels else np.nan
                     for image, mask in zip(slices, white_matter)])


def slice_banding(slices: np.ndarray, white_matter: np.ndarray, min_voxels: int = 50,
                  detrend_slices: float | None = None) -> float:
    """Median jump of the white matter's median intensity between adjacent slices, relative to
    its median over the volume: how much a slice-by-slice method stripes a volume. A smooth
    drift of the level along the slices counts too (see :func:`slice_striping`), unless
    ``detrend_slices`` is given: the level's Gaussian average over that many slices (sigma) is
    then taken off first, so that a drift such as a scanner's field profile along the head does
    not count, only banding proper.

    ``slices`` (n, H, W) in the volume's intensity scale, ``white_matter`` the matching mask;
    slices with fewer than ``min_voxels`` white-matter pixels are skipped (and break adjacency).
    """
    levels = _white_matter_levels(slices, white_matter, min_voxels)
    levels = levels / np.nanmedian(levels)
    if detrend_slices is not None:
        measured = np.isfinite(levels)
        weights = ndimage.gaussian_filter1d(measured.astype(float), detrend_slices, mode="nearest")
        trend = ndimage.gaussian_filter1d(np.where(measured, levels, 0.0), detrend_slices, mode="nearest")
        levels = levels - trend / np.maximum(weights, 1e-12)
    jumps = np.abs(np.diff(levels))
    jumps = jumps[np.isfinite(jumps)]
    if not len(jumps):
        raise ValueError("too few slices with white matter to measure banding")
    return float(np.median(jumps))


def slice_striping(slices: np.ndarray, white_matter: np.ndarray, min_voxels: int = 50) -> float:
    """Median deviation of each slice's white-matter median from the mean of its two
    neighbours', relative to the volume's median: stripes alone, since a level that drifts
    linearly along the slices deviates by nothing (a jump measure counts such a drift in full).

    Arguments as :func:`slice_banding`.
    """
    levels = _white_matter_levels(slices, white_matter, min_voxels)
    deviations = np.abs(levels[1:-1] - 0.5 * (levels[:-2] + levels[2:]))
    deviations = deviations[np.isfinite(deviations)]
    if not len(deviations):
        raise ValueError("too few slices with white matter to measure striping")
    return float(np.median(deviations) / np.nanmedian(levels))
