"""Brain tissue segmentation for QC: ANTs Atropos (through antspyx) on the native grid.

Atropos is a model-free finite mixture (k-means initialisation, Gaussian classes, an MRF
prior), so it adapts to each image's contrast: the same head segmented before and after
harmonization tells whether the anatomy survived, and how separable its tissues are.
No deep segmenter on PyPI ships its weights for offline use (see ``ECOSYSTEM.md``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import nibabel as nib
import numpy as np

from ..errors import InputError, ProcessingError, one_line
from ..preprocessing import extract_brain
from ..scratch import private_tempdir
from ..threads import ants_single_threaded

logger = logging.getLogger(__name__)

#: The BIDS / sMRIPrep dseg table (0 is background); the default of :func:`segment_tissues`.
BIDS_LABELS: Mapping[str, int] = {"GM": 1, "WM": 2, "CSF": 3}

#: Atropos's three classes as a T1w orders them, darkest first.
T1W_ORDER = ("CSF", "GM", "WM")

#: Intensities inside the mask are truncated at this quantile before Atropos, as ANTs' own
#: pipelines do (``ImageMath TruncateImageIntensity ... 0.999``): a deepbet mask keeps a few
#: extra-cerebral voxels (fat, vessels) at twice the WM level, and k-means gives them a class
#: of their own, merging CSF and GM (measured on a simulated head at 1 mm: 0.1 % of the mask,
#: GM Dice 0.00 untruncated, 0.85 truncated).
TRUNCATION_QUANTILE = 0.999


@dataclass(frozen=True)
class TissueSegmentation:
    """Hard labels and per-tissue posteriors on the segmented image's own grid.

    ``labels``: int16, 0 outside the mask, ``label_values[name]`` inside; ``probabilities``:
    tissue name -> float32 posterior in [0, 1] (0 outside the mask); ``label_values``: the
    table used, for the ``dseg.tsv`` that goes with ``labels``.
    """

    labels: np.ndarray
    probabilities: dict[str, np.ndarray]
    label_values: dict[str, int]


def _name(image: nib.spatialimages.SpatialImage) -> str:
    return image.get_filename() or "the image"


def _checked_label_values(label_values: Mapping[str, int] | None) -> dict[str, int]:
    values = dict(BIDS_LABELS if label_values is None else label_values)
    if sorted(values) != sorted(T1W_ORDER):
        raise InputError(f"label_values must name exactly {', '.join(T1W_ORDER)}, not {sorted(values)}")
    numbers = list(values.values())
    if (len(set(numbers)) != len(numbers)
            or not all(isinstance(n, (int, np.integer)) and 0 < n <= np.iinfo(np.int16).max for n in numbers)):
        raise InputError(f"label_values must be distinct positive int16 values (0 is background): {values}")
    return {name: int(value) for name, value in values.items()}


def brain_mask(image: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Brain mask of ``image`` (bool, its own grid) from deepbet, as harmonization's own."""
    mask = extract_brain(image)
    if not mask.any():
        raise ProcessingError(f"{_name(image)}: deepbet found no brain")
    return mask


def segment_tissues(image: nib.spatialimages.SpatialImage, brain_mask: np.ndarray, *,
                    fixed_seed: bool = True, mrf: float = 0.2, iterations: int = 5,
                    label_values: Mapping[str, int] | None = None) -> TissueSegmentation:
    """GM, WM and CSF of ``image`` inside ``brain_mask`` (same shape), by Atropos.

    ``ants.atropos(i="kmeans[3]", m="[mrf,1x1x1]", c="[iterations,0]")`` on the intensities
    truncated at the mask's :data:`TRUNCATION_QUANTILE` quantile. Atropos takes no
    seed value, only a choice between a constant seed (its ``--use-random-seed 0``, our
    ``fixed_seed=True``) and the clock; with ITK single-threaded the result is then the same
    on every run. Its classes come out ordered by intensity; they are named here by their
    posterior-weighted mean intensities, darkest to brightest CSF, GM, WM (a T1w's order), and
    written with ``label_values`` (default :data:`BIDS_LABELS`: 1 GM, 2 WM, 3 CSF).
    """
    values = _checked_label_values(label_values)
    name = _name(image)
    shape = image.shape[:3]
    if len(image.shape) > 3 and int(np.prod(image.shape[3:])) != 1:
        raise InputError(f"{name}: a 3-D image is needed, not {image.shape}")
    mask = np.asarray(brain_mask)
    if mask.shape != shape:
        raise InputError(f"{name}: brain mask {mask.shape} does not match the image grid {shape}")
    mask = mask.astype(bool)
    if not mask.any():
        raise InputError(f"{name}: the brain mask is empty")
    if not (np.isfinite(mrf) and mrf >= 0):
        raise InputError(f"mrf must be a non-negative number, not {mrf}")
    if int(iterations) != iterations or iterations < 1:
        raise InputError(f"iterations must be a positive integer, not {iterations}")
    data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    if not np.all(np.isfinite(data[mask])):
        raise InputError(f"{name}: non-finite intensities inside the brain mask")
    data = np.minimum(data, np.quantile(data[mask], TRUNCATION_QUANTILE)).astype(np.float32)

    ants_single_threaded()
    import ants  # antspyx: imported lazily, it is slow to import

    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    ants_image = ants.from_numpy(np.ascontiguousarray(data), spacing=spacing)
    ants_mask = ants.from_numpy(np.ascontiguousarray(mask, dtype=np.float32), spacing=spacing)
    with private_tempdir():  # antspyx writes the posteriors to tempfile names and keeps them
        try:
            result = ants.atropos(a=ants_image, x=ants_mask, i="kmeans[3]", m=f"[{mrf},1x1x1]",
                                  c=f"[{int(iterations)},0]", r=0 if fixed_seed else 1)
            classes = np.rint(result["segmentation"].numpy()).astype(np.int16)
            posteriors = [np.clip(p.numpy(), 0.0, 1.0).astype(np.float32) * mask
                          for p in result["probabilityimages"]]
        except Exception as error:  # ITK's failures, as one line
            raise ProcessingError(f"{name}: Atropos tissue segmentation failed ({one_line(error)})") from error
    if len(posteriors) != len(T1W_ORDER):
        raise ProcessingError(f"{name}: Atropos returned {len(posteriors)} posteriors, not {len(T1W_ORDER)}")

    weights = np.array([float(p[mask].sum()) for p in posteriors])
    if not np.all(weights > 0):
        raise ProcessingError(f"{name}: Atropos left a tissue class empty (posterior sums {weights.tolist()})")
    means = np.array([float(np.dot(p[mask], data[mask])) for p in posteriors]) / weights
    tissue_of_class = {int(k) + 1: T1W_ORDER[rank] for rank, k in enumerate(np.argsort(means, kind="stable"))}
    logger.debug("%s: Atropos class means %s -> %s", name, means.round(3).tolist(), tissue_of_class)

    labels = np.zeros(shape, dtype=np.int16)
    for atropos_class, tissue in tissue_of_class.items():
        labels[mask & (classes == atropos_class)] = values[tissue]
    probabilities = {tissue: posteriors[atropos_class - 1] for atropos_class, tissue in tissue_of_class.items()}
    return TissueSegmentation(labels=labels, probabilities=probabilities, label_values=values)
