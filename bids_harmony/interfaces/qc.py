"""The WM-segmentation QC of one run, one interface per core function (:mod:`bids_harmony.qc`)."""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from .harmonization import num_threads_trait

#: The dseg table of the QC segmentations (BIDS / sMRIPrep), in the order of the probseg outputs.
TISSUES = ("GM", "WM", "CSF")


def _save_like(data: np.ndarray, reference: nib.spatialimages.SpatialImage, path: str, dtype) -> str:
    """``data`` on ``reference``'s grid, with its header's geometry, as ``dtype``."""
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), reference.affine, header)
    image.header.set_slope_inter(1.0, 0.0)
    image.to_filename(path)
    return path


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the source T1w")
    num_threads = num_threads_trait()


class _BrainMaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the brain mask (uint8, the T1w's grid)")


class BrainMask(SimpleInterface):
    """deepbet's brain mask of the source (:func:`~bids_harmony.qc.segmentation.brain_mask`)."""

    input_spec = _BrainMaskInputSpec
    output_spec = _BrainMaskOutputSpec

    def _run_interface(self, runtime):
        from ..preprocessing import load_t1w
        from ..qc.segmentation import brain_mask
        from ..threads import limit_threads

        limit_threads(self.inputs.num_threads)
        image, _, _ = load_t1w(self.inputs.in_file)  # the first QC node: its one-line errors, as prepare's
        self._results["out_file"] = _save_like(brain_mask(image), image,
                                               os.path.join(runtime.cwd, "brain_mask.nii.gz"), np.uint8)
        return runtime


class _SegmentTissuesInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the image to segment")
    mask_file = File(exists=True, mandatory=True, desc="the brain mask (same grid)")
    label_values = traits.Dict(traits.Str, traits.Int, {"GM": 1, "WM": 2, "CSF": 3}, usedefault=True,
                               desc="the dseg table: tissue -> label value")


class _SegmentTissuesOutputSpec(TraitedSpec):
    dseg_file = File(exists=True, desc="hard labels (int16)")
    probseg_files = traits.List(File(exists=True), desc=f"posteriors of {', '.join(TISSUES)} (float32)")
    wm_file = File(exists=True, desc="the white-matter mask (uint8), for the reportlets' contour")


class SegmentTissues(SimpleInterface):
    """Atropos tissue classes (:func:`~bids_harmony.qc.segmentation.segment_tissues`)."""

    input_spec = _SegmentTissuesInputSpec
    output_spec = _SegmentTissuesOutputSpec

    def _run_interface(self, runtime):
        from ..qc.segmentation import segment_tissues

        image = nib.load(self.inputs.in_file)
        mask = np.asarray(nib.load(self.inputs.mask_file).dataobj) > 0
        segmentation = segment_tissues(image, mask, label_values=self.inputs.label_values)
        self._results["dseg_file"] = _save_like(segmentation.labels, image,
                                                os.path.join(runtime.cwd, "dseg.nii.gz"), np.int16)
        self._results["probseg_files"] = [
            _save_like(segmentation.probabilities[tissue], image,
                       os.path.join(runtime.cwd, f"probseg_{tissue}.nii.gz"), np.float32)
            for tissue in TISSUES
        ]
        wm = segmentation.labels == segmentation.label_values["WM"]
        self._results["wm_file"] = _save_like(wm, image, os.path.join(runtime.cwd, "wm.nii.gz"), np.uint8)
        return runtime


class _GridImagesInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the source T1w (its grid)")
    slices_file = File(exists=True, mandatory=True, desc="the source's slices (PrepareT1w)")
    geometry_file = File(exists=True, mandatory=True, desc="their geometry (PrepareT1w)")
    wm_file = File(exists=True, mandatory=True, desc="the source's WM mask (native grid)")


class _GridImagesOutputSpec(TraitedSpec):
    source_grid = File(exists=True, desc="the source on the model's slice grid (native intensities)")
    wm_grid = File(exists=True, desc="its WM mask on that grid (uint8)")


class GridImages(SimpleInterface):
    """The source and its WM on the model's 1.2 mm grid, beside the harmonized grid output
    (:func:`~bids_harmony.preprocessing.grid_image`, :func:`~bids_harmony.preprocessing.mask_to_slices`)."""

    input_spec = _GridImagesInputSpec
    output_spec = _GridImagesOutputSpec

    def _run_interface(self, runtime):
        from ..preprocessing import grid_image, load_geometry, mask_to_slices

        geometry = load_geometry(self.inputs.geometry_file, self.inputs.in_file)
        source = grid_image(np.load(self.inputs.slices_file), geometry)
        wm_image = nib.load(self.inputs.wm_file)
        wm = mask_to_slices(np.asarray(wm_image.dataobj) > 0, wm_image.affine, geometry)
        self._results["source_grid"] = os.path.join(runtime.cwd, "source_grid.nii.gz")
        source.to_filename(self._results["source_grid"])
        self._results["wm_grid"] = _save_like(np.moveaxis(wm, 0, 2), source,
                                              os.path.join(runtime.cwd, "wm_grid.nii.gz"), np.uint8)
        return runtime


class _QCMetricsInputSpec(BaseInterfaceInputSpec):
    source_file = File(exists=True, mandatory=True, desc="the source T1w")
    harmonized_file = File(exists=True, mandatory=True, desc="the harmonized T1w (native grid)")
    mask_file = File(exists=True, mandatory=True, desc="the brain mask")
    source_dseg = File(exists=True, mandatory=True, desc="the source's tissue labels")
    harmonized_dseg = File(exists=True, mandatory=True, desc="the harmonized image's tissue labels")
    label_values = traits.Dict(traits.Str, traits.Int, mandatory=True, desc="the dseg table")
    slices_file = File(exists=True, mandatory=True, desc="the source's slices (PrepareT1w)")
    harmonized_grid = File(exists=True, mandatory=True, desc="the harmonized image on the slice grid")
    geometry_file = File(exists=True, mandatory=True, desc="the slices' geometry")
    model_file = File(exists=True, mandatory=True, desc="the target model (and its QC calibration)")
    contrast_agreement = traits.Either(None, traits.Float, mandatory=True, desc="the contrast check")
    bids_dir = traits.Directory(mandatory=True, desc="the dataset (for the source's BIDS URI)")
    num_threads = num_threads_trait()


class _QCMetricsOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the run's QC record (JSON)")


class QCMetrics(SimpleInterface):
    """The QC record of one run (:func:`~bids_harmony.qc.summary.run_qc`): both images measured
    on their own segmentation, the target flow's bits/dim of their slices, slice banding, flags."""

    input_spec = _QCMetricsInputSpec
    output_spec = _QCMetricsOutputSpec

    def _run_interface(self, runtime):
        from ..atomic import file_sha256
        from ..bids.derivatives import bids_uri, source_scanner
        from ..harmonize import T1W_LIKE_MIN_AGREEMENT
        from ..model import load_model
        from ..preprocessing import grid_volume, load_geometry, mask_to_slices
        from ..qc.likelihood import slice_bits_per_dim
        from ..qc.summary import grid_banding, measure_image, run_qc
        from ..threads import limit_threads

        limit_threads(self.inputs.num_threads)
        values = dict(self.inputs.label_values)
        source_image = nib.load(self.inputs.source_file)
        brain = np.asarray(nib.load(self.inputs.mask_file).dataobj) > 0
        images, labels = {}, {}
        for which, path, dseg in (("source", self.inputs.source_file, self.inputs.source_dseg),
                                  ("harmonized", self.inputs.harmonized_file, self.inputs.harmonized_dseg)):
            images[which] = np.asarray(nib.load(path).dataobj, dtype=np.float32).reshape(source_image.shape[:3])
            labels[which] = np.asarray(nib.load(dseg).dataobj).astype(np.int16)
        measured = {which: measure_image(images[which], labels[which], brain, affine=source_image.affine,
                                         label_values=values) for which in images}

        model = load_model(self.inputs.model_file)
        geometry = load_geometry(self.inputs.geometry_file)
        source_slices = np.load(self.inputs.slices_file)
        harmonized_grid = np.moveaxis(np.asarray(nib.load(self.inputs.harmonized_grid).dataobj, dtype=np.float64), 2, 0)
        spans = np.where(geometry.slice_max > geometry.slice_min, geometry.slice_max - geometry.slice_min, 1.0)
        harmonized_slices = (harmonized_grid - geometry.slice_min[:, None, None]) / spans[:, None, None]
        valid = geometry.valid
        white_matter = mask_to_slices(labels["source"] == values["WM"], source_image.affine, geometry)
        record = run_qc(
            source=measured["source"], harmonized=measured["harmonized"],
            source_wm=labels["source"] == values["WM"], harmonized_wm=labels["harmonized"] == values["WM"],
            source_bits=slice_bits_per_dim(source_slices[valid], model),
            harmonized_bits=slice_bits_per_dim(harmonized_slices[valid], model),
            source_banding=grid_banding(np.moveaxis(grid_volume(source_slices, geometry), 2, 0), white_matter),
            harmonized_banding=grid_banding(harmonized_grid, white_matter),
            contrast_agreement=self.inputs.contrast_agreement, min_contrast_agreement=T1W_LIKE_MIN_AGREEMENT,
            calibration=model.calibration, label_values=values,
        )
        record = {"format_version": record.pop("format_version"),
                  "source": bids_uri(self.inputs.source_file, self.inputs.bids_dir),
                  "scanner": source_scanner(self.inputs.source_file),
                  "model": {"file": os.path.basename(self.inputs.model_file),
                            "sha256": file_sha256(self.inputs.model_file)},
                  **record}
        self._results["out_file"] = os.path.join(runtime.cwd, "qc_metrics.json")
        with open(self._results["out_file"], "w") as stream:
            stream.write(json.dumps(record, indent=2) + "\n")
        return runtime


class _BrainHistogramInputSpec(BaseInterfaceInputSpec):
    metrics_file = File(exists=True, mandatory=True, desc="the run's QC record (QCMetrics)")


class _BrainHistogramOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="the histograms (SVG)")


class BrainHistogram(SimpleInterface):
    """Brain intensity distributions of the source, the harmonized image and the target's
    reference (:func:`~bids_harmony.reports.figures.brain_histogram`)."""

    input_spec = _BrainHistogramInputSpec
    output_spec = _BrainHistogramOutputSpec

    def _run_interface(self, runtime):
        from ..reports.figures import brain_histogram

        record = json.loads(open(self.inputs.metrics_file).read())
        self._results["out_report"] = brain_histogram(record["brain_quantiles"],
                                                      os.path.join(runtime.cwd, "brain_histogram.svg"))
        return runtime
