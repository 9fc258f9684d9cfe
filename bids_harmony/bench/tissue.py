"""Tissue-level scores of a harmonized image against the same head on the target scanner.

Whole-slice PSNR is dominated by bias and background; what users measure downstream is tissue
contrast. Every score here compares an image with its truth in the simulator's true tissue
labels (1 CSF, 2 GM, 3 WM), each image scaled by its own white-matter median first, so that the
arbitrary intensity scale of a scan does not count:

- ``wm_gm`` and ``csf_wm``: ratios of the tissues' medians over core voxels (no partial volume);
  their gaps to the truth's ratios (``*_gap``) are what the tables report;
- ``brain_rmse``: root mean square difference over the brain after the white-matter scaling;
- ``tissue_w1``: the Wasserstein-1 distance of each tissue's intensity distribution to the
  truth's, averaged over the three tissues.

Volumes (``(X, Y, Z)``) are eroded in 3-D, stacks of slices (``(n, H, W)``) slice by slice, so
that slices that are not neighbours do not erode each other.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import ndimage

from ..qc.intensity import QUANTILE_LEVELS, wasserstein_from_quantiles

#: The simulator's tissue labels (derivatives/groundtruth/dseg.tsv).
TISSUES = {"CSF": 1, "GM": 2, "WM": 3}
MIN_VOXELS = 50
#: Scores per image and per image pair, in the order tables show them.
TISSUE_SCORES = ("wm_gm", "csf_wm", "wm_gm_gap", "csf_wm_gap", "brain_rmse", "tissue_w1")


def core_masks(labels: np.ndarray, slices: bool) -> dict[str, np.ndarray]:
    """Each tissue's voxels whose face neighbours carry the same label (in-plane only when
    ``labels`` is a stack of ``slices``)."""
    structure = ndimage.generate_binary_structure(3, 1)
    if slices:
        structure[0] = structure[2] = False
    labels = np.asarray(labels)
    return {name: ndimage.binary_erosion(labels == value, structure)
            for name, value in TISSUES.items()}


def _medians(image: np.ndarray, cores: Mapping[str, np.ndarray]) -> dict[str, float]:
    medians = {}
    for name, core in cores.items():
        if core.sum() < MIN_VOXELS:
            raise ValueError(f"too few core {name} voxels to score tissue contrast: {int(core.sum())}")
        medians[name] = float(np.median(image[core]))
    if not medians["WM"] > 0:
        raise ValueError(f"the white matter's median is {medians['WM']}: no positive scale")
    return medians


def tissue_scores(image: np.ndarray, truth: np.ndarray, labels: np.ndarray, *,
                  slices: bool = False) -> dict[str, float]:
    """:data:`TISSUE_SCORES` of ``image`` against ``truth``, both on the grid of ``labels``.

    ``slices``: the arrays are stacks of 2-D slices, not a volume.
    """
    image, truth, labels = np.asarray(image, dtype=np.float64), np.asarray(truth, dtype=np.float64), np.asarray(labels)
    if not image.shape == truth.shape == labels.shape:
        raise ValueError(f"image {image.shape}, truth {truth.shape} and labels {np.shape(labels)} differ in shape")
    cores = core_masks(labels, slices)
    measured, expected = _medians(image, cores), _medians(truth, cores)
    image, truth = image / measured["WM"], truth / expected["WM"]
    ratios = {name: {"wm_gm": medians["WM"] / medians["GM"], "csf_wm": medians["CSF"] / medians["WM"]}
              for name, medians in (("image", measured), ("truth", expected))}
    brain = np.isin(labels, list(TISSUES.values()))
    distances = [wasserstein_from_quantiles(np.quantile(image[labels == value], QUANTILE_LEVELS),
                                            np.quantile(truth[labels == value], QUANTILE_LEVELS))
                 for value in TISSUES.values()]
    return {
        "wm_gm": ratios["image"]["wm_gm"], "csf_wm": ratios["image"]["csf_wm"],
        "wm_gm_gap": ratios["image"]["wm_gm"] - ratios["truth"]["wm_gm"],
        "csf_wm_gap": ratios["image"]["csf_wm"] - ratios["truth"]["csf_wm"],
        "brain_rmse": float(np.sqrt(np.mean(np.square(image[brain] - truth[brain])))),
        "tissue_w1": float(np.mean(distances)),
    }
