"""Writing derivatives: niworkflows' sink, the harmonized image's sidecar, and publication.

Sinks write into a staging folder (in the work dir); :class:`PublishDerivatives` then copies a
run's files into the output folder, each atomically and the harmonized T1w last, so that a run's
outputs appear only once the run is complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)
from niworkflows.interfaces.bids import DerivativesDataSink as _NiworkflowsSink


class DerivativesDataSink(_NiworkflowsSink):
    """niworkflows' sink, writing at the top of ``base_directory`` (as fMRIPrep's does), and
    keeping the ``Resolution`` it is given (niworkflows writes "Unknown" for grids that are not
    TemplateFlow templates)."""

    out_path_base = ""

    def _run_interface(self, runtime):
        wanted = self._metadata.get("Resolution")
        if isdefined(self.inputs.meta_dict):
            wanted = self.inputs.meta_dict.get("Resolution", wanted)
        runtime = super()._run_interface(runtime)
        sidecar = self._results.get("out_meta")
        if wanted and sidecar:
            content = json.loads(Path(sidecar).read_text())
            content["Resolution"] = wanted
            Path(sidecar).write_text(json.dumps(content, sort_keys=True, indent=2))
        return runtime


class _HarmonizedSidecarInputSpec(BaseInterfaceInputSpec):
    source_file = File(exists=True, mandatory=True, desc="the T1w that was harmonized")
    bids_dir = traits.Directory(mandatory=True, desc="the dataset it belongs to")
    model_file = File(exists=True, mandatory=True, desc="the model used")
    geometry_file = File(exists=True, mandatory=True, desc="the slice geometry (its preprocessing)")
    parameters = traits.Dict(mandatory=True, desc="the harmonization settings used")
    device = traits.Str(mandatory=True, desc="where the optimisation ran")
    contrast_agreement = traits.Either(None, traits.Float, mandatory=True, desc="contrast check")
    warnings = traits.List(traits.Str, mandatory=True, desc="warnings about the input")


class _HarmonizedSidecarOutputSpec(TraitedSpec):
    metadata = traits.Dict(desc="the sidecar's content")


class HarmonizedSidecar(SimpleInterface):
    """The harmonized T1w's sidecar (:func:`~bids_harmony.bids.derivatives.harmonized_sidecar`)."""

    input_spec = _HarmonizedSidecarInputSpec
    output_spec = _HarmonizedSidecarOutputSpec

    def _run_interface(self, runtime):
        from ..bids.derivatives import harmonized_sidecar

        preprocessing = json.loads(Path(self.inputs.geometry_file).read_text())["config"]
        self._results["metadata"] = harmonized_sidecar(
            source_file=self.inputs.source_file, bids_dir=self.inputs.bids_dir,
            model_file=self.inputs.model_file, parameters=self.inputs.parameters,
            device=self.inputs.device, contrast_agreement=self.inputs.contrast_agreement,
            warnings=self.inputs.warnings, skull_stripped=bool(preprocessing["brain_extraction"]),
        )
        return runtime


class _StageDerivativeInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the file to stage")
    source_file = File(exists=True, mandatory=True, desc="the input T1w it derives from (names it)")
    bids_dir = traits.Directory(mandatory=True, desc="the dataset of source_file")
    staging_dir = traits.Directory(mandatory=True, desc="where the sinks write")
    ending = traits.Str(mandatory=True, desc="what follows the source's entities, e.g. desc-qc_metrics.json")


class _StageDerivativeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the staged copy")


class StageDerivative(SimpleInterface):
    """Stage a file under the source's BIDS name with another ending
    (:func:`~bids_harmony.bids.derivatives.derivative_path`): for derivatives the BIDS schema
    has no suffix for, such as the QC record, which niworkflows' sink cannot name."""

    input_spec = _StageDerivativeInputSpec
    output_spec = _StageDerivativeOutputSpec

    def _run_interface(self, runtime):
        from ..atomic import atomic_copy
        from ..bids.derivatives import derivative_path

        destination = derivative_path(self.inputs.source_file, self.inputs.bids_dir, self.inputs.staging_dir,
                                      self.inputs.ending)
        atomic_copy(self.inputs.in_file, destination)
        self._results["out_file"] = str(destination)
        return runtime


class _PublishDerivativesInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="staged files, in the order they are to appear")
    staging_dir = traits.Directory(mandatory=True, desc="where the sinks wrote")
    output_dir = traits.Directory(mandatory=True, desc="the output folder")


class _PublishDerivativesOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="the published files")


class PublishDerivatives(SimpleInterface):
    """Copy staged derivatives to the same relative paths under ``output_dir``, one by one,
    each complete before it appears; put the run's main output last in ``in_files``."""

    input_spec = _PublishDerivativesInputSpec
    output_spec = _PublishDerivativesOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        from ..atomic import atomic_copy

        staging = Path(os.path.abspath(self.inputs.staging_dir))
        published = []
        for staged in self.inputs.in_files:
            destination = Path(self.inputs.output_dir) / Path(os.path.abspath(staged)).relative_to(staging)
            atomic_copy(staged, destination)
            published.append(str(destination))
        self._results["out_files"] = published
        return runtime
