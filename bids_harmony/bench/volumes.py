"""The volume level of the benchmark: harmonize whole source volumes as the app does and score
their tissue contrast against the same head on the target scanner.

Each paired source image goes through the app's steps (:func:`~bids_harmony.harmonize.prepare_t1w`,
:func:`~bids_harmony.harmonize.harmonize_volume_slices`, :func:`~bids_harmony.harmonize.reassemble`)
once per method, comes back on its native grid, and is resampled by world coordinates onto the
paired target-scanner image, in whose true tissue labels :func:`~.tissue.tissue_scores` scores it.
Banding is measured on the model's slice grid in native intensities, as the app's QC does.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.processing import resample_from_to

from ..bids.selection import SelectedImage
from ..harmonize import harmonize_volume_slices, prepare_t1w, reassemble
from ..model.file import HarmonyModel
from ..preprocessing import grid_volume, mask_to_slices
from ..qc.summary import grid_banding
from ..settings import HarmonizationParams
from .baselines import histogram_match
from .cases import groundtruth_file
from .tissue import TISSUE_SCORES, TISSUES, tissue_scores

#: Scores of the volume table, per method and source image.
VOLUME_SCORES = (*TISSUE_SCORES, "banding")


def _histogram_matched(slices: np.ndarray, geometry, model: HarmonyModel) -> np.ndarray:
    matched = np.array(slices, dtype=np.float32, copy=True)
    valid = np.flatnonzero(geometry.valid)
    matched[valid] = histogram_match(slices[valid], geometry.positions[valid], model.quantiles)
    return matched


def score_volume(image: SelectedImage, paired_t1w, paired_labels, source_labels, model: HarmonyModel,
                 columns: dict[str, HarmonizationParams | None]) -> list[dict]:
    """One row per column for a source image: ``none`` is the source itself, ``histogram
    matching`` the slice-wise baseline put back on the native grid (no smoothing), any other
    column BlindHarmony with its settings."""
    prepared = prepare_t1w(image.path, model)
    slices, geometry = prepared.slices, prepared.geometry
    truth_image = nib.load(paired_t1w)
    truth = np.asarray(truth_image.dataobj, dtype=np.float64)
    labels = np.asarray(nib.load(paired_labels).dataobj).astype(np.int16)
    source_image = nib.load(source_labels)
    white_matter = mask_to_slices(np.asarray(source_image.dataobj) == TISSUES["WM"], source_image.affine, geometry)
    rows, optimised = [], {}
    for name, params in columns.items():
        started = time.perf_counter()
        if name == "none":
            final, native = slices, nib.load(image.path)
        elif params is None:
            final, native = reassemble(_histogram_matched(slices, geometry, model), slices, geometry,
                                       smooth_across_slices=False)
        else:  # columns that differ only in the last step share the optimisation
            key = tuple(sorted(params.optimisation_settings().items()))
            if key not in optimised:
                optimised[key] = harmonize_volume_slices(slices, geometry, model, params)
            final, native = reassemble(optimised[key], slices, geometry, params.smooth_across_slices)
        seconds = time.perf_counter() - started
        on_truth = np.asarray(resample_from_to(native, truth_image, order=1).dataobj, dtype=np.float64)
        scores = tissue_scores(on_truth, truth, labels)
        scores["banding"] = grid_banding(np.moveaxis(grid_volume(final, geometry), 2, 0), white_matter)
        rows.append({"subject": image.subject, "method": name, **scores, "seconds": seconds})
    return rows


def score_volumes(model: HarmonyModel, sources: Sequence[tuple[str, SelectedImage]], groundtruth: Path,
                  columns: dict[str, HarmonizationParams | None],
                  progress: Callable[[], None] | None = None) -> pd.DataFrame:
    """:func:`score_volume` of each ``(domain, image)`` in ``sources``, with its paired target
    image, that image's labels and the source's own labels from ``groundtruth`` (the dataset's
    ``derivatives/groundtruth``)."""
    rows = []
    for domain, image in sources:
        for row in score_volume(image, groundtruth_file(image, groundtruth, "desc-pairedtarget_T1w"),
                                groundtruth_file(image, groundtruth, "desc-pairedtarget_dseg"),
                                groundtruth_file(image, groundtruth, "dseg"), model, columns):
            rows.append({"domain": domain, **row})
        if progress is not None:
            progress()
    return pd.DataFrame(rows)
