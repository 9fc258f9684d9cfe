"""The QC of one harmonized run, as ``desc-qc_metrics.json`` holds it.

:func:`measure_image` measures one image on its own tissue segmentation; :func:`run_qc`
puts the source's and the harmonized image's measures side by side with what ties them
(WM overlap, the contrast check) and the flags a user should look at, against the target
scanner's reference when the model file carries one (:mod:`bids_harmony.qc.calibration`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .intensity import QUANTILE_LEVELS, wasserstein_from_quantiles, white_matter_level, wm_normalised_quantiles
from .likelihood import likelihood_summary
from .metrics import MIN_VOXELS, cnr, contrast_ratio, dice, tissue_volumes_ml, voxel_volume_mm3
from .tissue import slice_banding

#: Format of ``desc-qc_metrics.json`` (the group level refuses files it does not understand).
METRICS_FORMAT_VERSION = 1
#: Below this Dice of source and harmonized WM, harmonization moved tissue boundaries.
MIN_WM_DICE = 0.8
#: Banding is flagged when harmonization at least doubles it and it exceeds this level.
MIN_FLAGGED_BANDING = 0.01
#: Gaussian width (slices) of the drift taken off before measuring banding.
BANDING_DETREND_SLICES = 3.0
#: Per-image measures, in the order tables show them.
IMAGE_METRICS = ("gm_volume_ml", "wm_volume_ml", "csf_volume_ml", "wm_gm_contrast", "wm_gm_cnr",
                 "csf_wm_contrast", "wm_intensity_normalised", "bits_per_dim", "ood_fraction",
                 "out_of_distribution", "slice_banding", "wasserstein_to_target")


def measure_image(data: np.ndarray, labels: np.ndarray, brain: np.ndarray, *, affine: np.ndarray,
                  label_values: Mapping[str, int], min_voxels: int = MIN_VOXELS) -> dict[str, Any]:
    """Volumes (ml), WM/GM contrast and CNR, CSF/WM contrast, the WM median over the brain
    median, and the WM-normalised brain intensity quantiles (``brain_quantiles``)."""
    data = np.asarray(data, dtype=np.float64)
    wm, gm, csf = label_values["WM"], label_values["GM"], label_values["CSF"]
    volumes = tissue_volumes_ml(labels, voxel_volume_mm3(affine), label_values)
    brain_median = float(np.median(data[np.asarray(brain, dtype=bool)]))
    if not brain_median > 0:
        raise ValueError(f"the brain's median intensity is {brain_median}: no positive scale")
    return {
        "gm_volume_ml": volumes["GM"], "wm_volume_ml": volumes["WM"], "csf_volume_ml": volumes["CSF"],
        "wm_gm_contrast": contrast_ratio(data, labels, wm, gm, min_voxels=min_voxels),
        "wm_gm_cnr": cnr(data, labels, wm, gm, min_voxels=min_voxels),
        "csf_wm_contrast": 1.0 / contrast_ratio(data, labels, wm, csf, min_voxels=min_voxels),
        "wm_intensity_normalised": white_matter_level(data, labels, wm, min_voxels) / brain_median,
        "brain_quantiles": wm_normalised_quantiles(data, brain, labels, wm).tolist(),
    }


def grid_banding(grid_slices: np.ndarray, white_matter: np.ndarray) -> float:
    """Slice banding of an image on the model's slice grid (``(n, H, W)``, native intensities),
    with a smooth drift along the slices taken off (``qc.tissue.slice_banding``)."""
    return slice_banding(grid_slices, white_matter, detrend_slices=BANDING_DETREND_SLICES)


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays as Python numbers and lists."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_qc(*, source: Mapping[str, Any], harmonized: Mapping[str, Any], source_wm: np.ndarray,
           harmonized_wm: np.ndarray, source_bits: np.ndarray, harmonized_bits: np.ndarray,
           source_banding: float, harmonized_banding: float, contrast_agreement: float | None,
           min_contrast_agreement: float, calibration: Mapping[str, Any] | None,
           label_values: Mapping[str, int]) -> dict[str, Any]:
    """The QC record of one run.

    ``source`` and ``harmonized`` are :func:`measure_image` results; ``*_wm`` the two WM masks
    (same grid); ``*_bits`` the per-slice bits/dim of the valid slices; ``calibration`` the
    model file's target statistics, or ``None`` (then no out-of-distribution flag and no
    distance to the target can be given, and the record says so).
    """
    threshold = None
    target_quantiles = None
    if calibration:
        threshold = float(calibration["bits_per_dim"]["threshold"])
        target_quantiles = np.asarray(calibration["brain_intensity"]["quantiles"], dtype=np.float64)
    metrics: dict[str, dict[str, Any]] = {}
    for which, measured, bits, banding in (("source", source, source_bits, source_banding),
                                           ("harmonized", harmonized, harmonized_bits, harmonized_banding)):
        row = {key: value for key, value in measured.items() if key != "brain_quantiles"}
        row.update(likelihood_summary(bits, threshold))
        row["slice_banding"] = float(banding)
        row["wasserstein_to_target"] = (None if target_quantiles is None else
                                        wasserstein_from_quantiles(measured["brain_quantiles"], target_quantiles))
        metrics[which] = {key: row[key] for key in IMAGE_METRICS}
    wm_dice = dice(source_wm, harmonized_wm)
    flags = {
        "not_t1w_like": contrast_agreement is not None and contrast_agreement < min_contrast_agreement,
        "contrast_reversed": metrics["harmonized"]["wm_gm_contrast"] <= 1.0,
        "anatomy_changed": wm_dice < MIN_WM_DICE,
        "banding_increased": harmonized_banding > max(2.0 * source_banding, MIN_FLAGGED_BANDING),
        "harmonized_out_of_distribution": bool(metrics["harmonized"]["out_of_distribution"]),
    }
    return _plain({
        "format_version": METRICS_FORMAT_VERSION,
        "metrics": {**metrics, "wm_dice_source_harmonized": wm_dice, "contrast_agreement": contrast_agreement},
        "flags": flags,
        "thresholds": {"bits_per_dim": threshold, "min_wm_dice": MIN_WM_DICE,
                       "min_contrast_agreement": min_contrast_agreement,
                       "banding": f"harmonized > max(2 x source, {MIN_FLAGGED_BANDING})",
                       "wm_gm_contrast": "harmonized > 1"},
        "target_calibrated": calibration is not None,
        "brain_quantiles": {"levels": QUANTILE_LEVELS, "source": source["brain_quantiles"],
                            "harmonized": harmonized["brain_quantiles"],
                            "target": target_quantiles},
        "label_values": dict(label_values),
    })
