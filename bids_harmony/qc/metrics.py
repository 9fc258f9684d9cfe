"""Segmentation QC numbers: tissue volumes, WM/GM contrast and CNR, and Dice overlap.

Arrays in, numbers out. Every function takes its label values as arguments: a BIDS dseg
(1 GM, 2 WM, 3 CSF) and the simulator's ground truth (1 CSF, 2 GM, 3 WM) disagree, and a
silently wrong table would swap grey and white matter. A measure that cannot be taken (too few
voxels, a zero denominator, non-finite intensities) raises ``ValueError`` instead of returning
NaN or infinity, so no non-finite number reaches a metrics file.

Contrast and CNR are measured on *core* voxels (a tissue eroded by one voxel, see
:func:`bids_harmony.qc.tissue.core_mask`), so partial volume at tissue borders does not count.
They are global over the brain, hence include the bias field; :func:`~bids_harmony.qc.tissue.wm_gm_ratio`
is the local, bias-cancelling variant.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .tissue import core_mask

#: Fewest core voxels per tissue for a contrast or CNR (as ``qc.tissue``'s ``min_voxels``).
MIN_VOXELS = 50


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel in mm^3: the absolute determinant of the affine's 3x3 part (correct
    for oblique and flipped grids, where the zooms' product may be read from a stale header)."""
    volume = abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])))
    if not np.isfinite(volume) or volume <= 0:
        raise ValueError(f"the affine has a degenerate voxel volume ({volume} mm^3)")
    return volume


def tissue_volumes_ml(labels: np.ndarray, voxel_volume_mm3: float,
                      label_values: Mapping[str, int]) -> dict[str, float]:
    """Volume in millilitres of each tissue of ``label_values`` (name -> label value).

    A tissue without voxels has volume 0.0: that is a measurement, and flags are the caller's.
    """
    if not np.isfinite(voxel_volume_mm3) or voxel_volume_mm3 <= 0:
        raise ValueError(f"voxel volume must be positive and finite, not {voxel_volume_mm3}")
    labels = np.asarray(labels)
    return {name: float(np.count_nonzero(labels == value)) * float(voxel_volume_mm3) / 1000.0
            for name, value in label_values.items()}


def _core_values(image: np.ndarray, labels: np.ndarray, label: int, tissue: str,
                 min_voxels: int) -> np.ndarray:
    """Intensities of ``label``'s core voxels, as float64; ``ValueError`` when there are too
    few or some are not finite."""
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    values = image[core_mask(labels, label)].astype(np.float64)
    if len(values) < min_voxels:
        raise ValueError(f"too few core {tissue} voxels (label {label}): {len(values)}, "
                         f"at least {min_voxels} are needed")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the image has non-finite intensities in {tissue} (label {label})")
    return values


def contrast_ratio(image: np.ndarray, labels: np.ndarray, wm_label: int, gm_label: int, *,
                   min_voxels: int = MIN_VOXELS) -> float:
    """Median white-matter over median grey-matter intensity, on core voxels.

    A ratio of medians ignores the arbitrary intensity scale of a scan: above 1 on a T1w,
    1 for no contrast, below 1 for a contrast that is not T1w-like.
    """
    white = _core_values(image, labels, wm_label, "WM", min_voxels)
    grey = _core_values(image, labels, gm_label, "GM", min_voxels)
    grey_median = float(np.median(grey))
    if grey_median <= 0:
        raise ValueError(f"grey-matter median intensity is {grey_median}: a ratio needs a "
                         "positive intensity scale")
    return float(np.median(white)) / grey_median


def cnr(image: np.ndarray, labels: np.ndarray, wm_label: int, gm_label: int, *,
        min_voxels: int = MIN_VOXELS) -> float:
    """Contrast-to-noise ratio of white against grey matter, on core voxels:

    ``|mean(WM) - mean(GM)| / sqrt(var(WM) + var(GM))``, with population variances (ddof 0).

    The spread within a tissue holds noise, the bias field and real tissue variation alike, so
    this is the separability of the two intensity distributions (what a segmenter sees), not a
    noise-only CNR; scale-free like :func:`contrast_ratio`.
    """
    white = _core_values(image, labels, wm_label, "WM", min_voxels)
    grey = _core_values(image, labels, gm_label, "GM", min_voxels)
    spread = float(np.sqrt(white.var() + grey.var()))
    if spread == 0:
        raise ValueError("white and grey matter are both constant: their CNR is undefined")
    return abs(float(white.mean()) - float(grey.mean())) / spread


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |a & b| / (|a| + |b|)`` of two boolean masks of the same shape.

    Two empty masks raise ``ValueError`` rather than score 1.0: in QC an empty tissue on both
    sides is a failed segmentation, and a perfect score would read as "anatomy preserved".
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes: {a.shape} and {b.shape}")
    total = np.count_nonzero(a) + np.count_nonzero(b)
    if total == 0:
        raise ValueError("both masks are empty: their Dice overlap is undefined")
    return 2.0 * np.count_nonzero(a & b) / total


def before_after_metrics(source: np.ndarray, harmonized: np.ndarray, source_labels: np.ndarray,
                         harmonized_labels: np.ndarray, *, voxel_volume_mm3: float,
                         label_values: Mapping[str, int],
                         min_voxels: int = MIN_VOXELS) -> dict[str, float]:
    """The segmentation QC of one run: what ``desc-qc_metrics.json`` reports, flat and finite.

    Each image is measured on its own segmentation (as the target's reference is on its own);
    pass ``source_labels`` twice to measure both intensities on one labelling instead.
    ``label_values`` names the ``GM`` and ``WM`` values of both label arrays. Keys:
    ``{gm,wm}_volume_ml_{source,harmonized}``, ``wm_gm_contrast_{source,harmonized}``,
    ``wm_gm_cnr_{source,harmonized}``, ``wm_dice_source_harmonized``.
    """
    wm, gm = label_values["WM"], label_values["GM"]
    metrics: dict[str, float] = {}
    for which, image, labels in (("source", source, source_labels),
                                 ("harmonized", harmonized, harmonized_labels)):
        volumes = tissue_volumes_ml(labels, voxel_volume_mm3, {"GM": gm, "WM": wm})
        metrics[f"gm_volume_ml_{which}"] = volumes["GM"]
        metrics[f"wm_volume_ml_{which}"] = volumes["WM"]
        metrics[f"wm_gm_contrast_{which}"] = contrast_ratio(image, labels, wm, gm, min_voxels=min_voxels)
        metrics[f"wm_gm_cnr_{which}"] = cnr(image, labels, wm, gm, min_voxels=min_voxels)
    metrics["wm_dice_source_harmonized"] = dice(np.asarray(source_labels) == wm,
                                                np.asarray(harmonized_labels) == wm)
    return metrics
