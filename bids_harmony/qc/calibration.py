"""The target scanner's QC reference, measured on held-out target subjects.

How many bits/dim a target-scanner slice costs the flow, and what a target brain's intensities
and tissue measures look like, are properties of the model and its scanner, not constants:
:func:`calibrate` measures them on T1w images of the target scanner that the flow never
trained on (the validation subjects ``bids_harmony-train`` records), with the very steps a
harmonized run's QC takes (:func:`bids_harmony.harmonize.prepare_t1w` and
:func:`~bids_harmony.qc.likelihood.slice_bits_per_dim` on the model's slices; deepbet, Atropos
and :func:`~bids_harmony.qc.summary.measure_image` on the native grid). The model file keeps
the result (``HarmonyModel.calibration``); :func:`~bids_harmony.qc.summary.run_qc` reads its
threshold and its brain-intensity barycentre.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..__about__ import software_versions
from ..errors import InputError
from ..harmonize import prepare_t1w
from ..model import HarmonyModel
from ..preprocessing import load_t1w
from .intensity import QUANTILE_LEVELS, barycentre
from .likelihood import slice_bits_per_dim
from .segmentation import brain_mask, segment_tissues
from .summary import measure_image

logger = logging.getLogger(__name__)

#: How the brain intensities of ``calibration["brain_intensity"]["quantiles"]`` are scaled.
NORMALISATION = "brain intensities divided by the median of core white matter (Atropos)"
#: The per-image measures whose median over the held-out images is the target's reference.
REFERENCE_METRICS = ("wm_gm_contrast", "wm_gm_cnr", "csf_wm_contrast", "wm_intensity_normalised",
                     "gm_volume_ml", "wm_volume_ml", "bits_per_dim")


def measure_held_out_image(path: str | Path, model: HarmonyModel) -> dict[str, Any]:
    """One held-out target image: the bits/dim of its valid slices (``slice_bits``) and
    :func:`measure_image`'s measures on its deepbet brain and Atropos tissues, with
    ``bits_per_dim`` the median of its slices."""
    image, data, name = load_t1w(path)
    prepared = prepare_t1w(image, model)
    for warning in prepared.warnings:
        logger.warning("%s: %s", name, warning)
    valid = np.flatnonzero(prepared.geometry.valid)
    if not len(valid):
        raise InputError(f"{name}: no slice of the model's grid holds enough head to calibrate on")
    bits = slice_bits_per_dim(prepared.slices[valid], model)
    if not np.all(np.isfinite(bits)):
        raise InputError(f"{name}: the flow gives {int(np.sum(~np.isfinite(bits)))} slice(s) a non-finite "
                         "bits/dim")
    brain = brain_mask(image)
    segmentation = segment_tissues(image, brain)
    try:
        measured = measure_image(data, segmentation.labels, brain, affine=image.affine,
                                 label_values=segmentation.label_values)
    except ValueError as error:  # too little white matter, no positive scale: not a usable T1w
        raise InputError(f"{name}: cannot be measured for the QC calibration ({error})") from None
    measured["bits_per_dim"] = float(np.median(bits))
    measured["slice_bits"] = bits
    logger.info("%s: %d slices, median %.3f bits/dim, WM/GM contrast %.3f, GM %.0f ml, WM %.0f ml",
                name, len(bits), measured["bits_per_dim"], measured["wm_gm_contrast"],
                measured["gm_volume_ml"], measured["wm_volume_ml"])
    return measured


def calibrate(model: HarmonyModel, t1w_files: Sequence[str | Path], *, subjects: Sequence[str],
              percentile: float = 99.0, command: str | None = None) -> dict[str, Any]:
    """The QC calibration of ``model`` on held-out T1w images of its target scanner.

    ``subjects`` are the labels the images belong to (recorded, not checked); the threshold is
    the ``percentile`` of the bits/dim of all valid slices of all images, and the reference of
    each measure the median over the images. Returns the JSON-able dictionary
    ``HarmonyModel.calibration`` holds; ``command`` is recorded with it.
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"the percentile must be in (0, 100], not {percentile}")
    paths = [Path(path) for path in t1w_files]
    if not paths:
        raise InputError("the QC calibration needs at least one held-out T1w image of the target scanner")
    logger.info("QC calibration on %d held-out image(s) of %d subject(s)", len(paths), len(set(subjects)))
    measures = [measure_held_out_image(path, model) for path in paths]
    bits = np.concatenate([measured["slice_bits"] for measured in measures])
    threshold = float(np.percentile(bits, percentile))
    logger.info("QC calibration: %d slices, median %.3f bits/dim, %g th percentile %.3f",
                len(bits), float(np.median(bits)), percentile, threshold)
    return {
        "subjects": sorted(set(subjects)),
        "images": [path.name for path in paths],
        "bits_per_dim": {"percentile": float(percentile), "threshold": threshold,
                         "median": float(np.median(bits)), "slices": int(len(bits))},
        "brain_intensity": {
            "normalisation": NORMALISATION,
            "levels": QUANTILE_LEVELS.tolist(),
            "quantiles": barycentre([measured["brain_quantiles"] for measured in measures]).tolist(),
        },
        "reference": {metric: float(np.median([measured[metric] for measured in measures]))
                      for metric in REFERENCE_METRICS},
        "command": command,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(),
    }
