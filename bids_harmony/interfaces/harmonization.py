"""The three steps of :func:`bids_harmony.harmonize.harmonize_image`, one interface each.

1. :class:`PrepareT1w` (CPU): checks the T1w, places it on the model's 1.2 mm slice grid and
   normalises each slice; writes the slice stack, the geometry and the placement transform.
2. :class:`HarmonizeSlices` (GPU when there is one): the flow optimisation.
3. :class:`ReassembleT1w` (CPU): the volume steps, back to the native grid, and the 1.2 mm grid.
"""
from __future__ import annotations

import os

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..settings import REASSEMBLE_SETTINGS, HarmonizationParams, setting_fields, setting_type

SLICES_FILE = "slices.npy"
GEOMETRY_FILE = "geometry.json"
TRANSFORM_FILE = "from-T1w_to-slicegrid_mode-image_xfm.txt"


def _setting_trait(item) -> traits.TraitType:
    """A Nipype input trait for one harmonization setting, with its default and help."""
    kind, help_text = setting_type(item), item.metadata["help"]
    if "choices" in item.metadata:
        others = [choice for choice in item.metadata["choices"] if choice != item.default]
        return traits.Enum(item.default, *others, usedefault=True, desc=help_text)
    trait = {bool: traits.Bool, int: traits.Int, float: traits.Float, str: traits.Str}[kind]
    return trait(item.default, usedefault=True, desc=help_text)


def num_threads_trait() -> traits.TraitType:
    return traits.Int(1, usedefault=True, desc="threads for torch and BLAS in this node")


class _PrepareT1wInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the T1w image")
    model_file = File(exists=True, mandatory=True, desc="the model (its preprocessing and target statistics)")
    strict = traits.Bool(False, usedefault=True, desc="a T1w that does not look like one is an error")
    num_threads = num_threads_trait()


class _PrepareT1wOutputSpec(TraitedSpec):
    slices_file = File(exists=True, desc="(n_positions, H, W) float32 slices in [0, 1] (.npy)")
    geometry_file = File(exists=True, desc="per-slice range, positions, validity, grid (JSON)")
    transform_file = File(exists=True, desc="the rigid placement, T1w to grid (ITK text)")
    contrast_agreement = traits.Either(None, traits.Float, desc="tissue-order agreement with the target")
    warnings = traits.List(traits.Str, desc="what a user should know about this input")


class PrepareT1w(SimpleInterface):
    """Check a T1w and put it on the model's slice grid (:func:`~bids_harmony.harmonize.prepare_t1w`)."""

    input_spec = _PrepareT1wInputSpec
    output_spec = _PrepareT1wOutputSpec

    def _run_interface(self, runtime):
        from ..harmonize import prepare_t1w
        from ..model import load_model
        from ..preprocessing import save_geometry
        from ..threads import ants_single_threaded, limit_threads

        ants_single_threaded()  # the one exception to num_threads: see bids_harmony.threads
        limit_threads(self.inputs.num_threads)
        model = load_model(self.inputs.model_file)
        prepared = prepare_t1w(self.inputs.in_file, model, strict=self.inputs.strict)
        self._results["slices_file"] = os.path.join(runtime.cwd, SLICES_FILE)
        self._results["geometry_file"] = os.path.join(runtime.cwd, GEOMETRY_FILE)
        self._results["transform_file"] = os.path.join(runtime.cwd, TRANSFORM_FILE)
        np.save(self._results["slices_file"], prepared.slices)
        save_geometry(prepared.geometry, self._results["geometry_file"], self._results["transform_file"])
        agreement = prepared.agreement
        self._results["contrast_agreement"] = round(agreement, 4) if np.isfinite(agreement) else None
        self._results["warnings"] = prepared.warnings
        return runtime


# the settings the harmonization node takes; the reassembly node takes the others
_OPTIMISATION_FIELDS = [item for item in setting_fields() if item.name not in REASSEMBLE_SETTINGS]
_HarmonizeSlicesInputSpec = type("_HarmonizeSlicesInputSpec", (BaseInterfaceInputSpec,), {
    "__module__": __name__,  # so that MultiProc can pickle it
    "slices_file": File(exists=True, mandatory=True, desc="slices written by PrepareT1w"),
    "geometry_file": File(exists=True, mandatory=True, desc="geometry written by PrepareT1w"),
    "model_file": File(exists=True, mandatory=True, desc="the target-scanner model"),
    "device": traits.Enum("cpu", "cuda", "auto", usedefault=True,
                          desc="where the optimisation runs (auto: decided on the machine that runs this node)"),
    "use_gpu": traits.Bool(False, usedefault=True, desc="Nipype's GPU slot (True when device is cuda)"),
    "num_threads": num_threads_trait(),
    **{item.name: _setting_trait(item) for item in _OPTIMISATION_FIELDS},
})


class _HarmonizeSlicesOutputSpec(TraitedSpec):
    harmonized_file = File(exists=True, desc="harmonized slices on the source slices' scale (.npy)")
    device = traits.Str(desc="the device the optimisation ran on")


class HarmonizeSlices(SimpleInterface):
    """The BlindHarmony optimisation of a volume's slices
    (:func:`~bids_harmony.harmonize.harmonize_volume_slices`); loads the model once."""

    input_spec = _HarmonizeSlicesInputSpec
    output_spec = _HarmonizeSlicesOutputSpec

    def params(self) -> HarmonizationParams:
        return HarmonizationParams.from_dict({item.name: getattr(self.inputs, item.name)
                                              for item in _OPTIMISATION_FIELDS})

    def _run_interface(self, runtime):
        from ..devices import device_name
        from ..harmonize import harmonize_volume_slices
        from ..model import load_model
        from ..preprocessing import load_geometry
        from ..threads import limit_threads

        limit_threads(self.inputs.num_threads)
        params = self.params()
        model = load_model(self.inputs.model_file, device=device_name(self.inputs.device))
        geometry = load_geometry(self.inputs.geometry_file)
        harmonized = harmonize_volume_slices(np.load(self.inputs.slices_file), geometry, model, params)
        self._results["harmonized_file"] = os.path.join(runtime.cwd, "harmonized_slices.npy")
        np.save(self._results["harmonized_file"], harmonized)
        self._results["device"] = str(model.device)
        return runtime


_ReassembleT1wInputSpec = type("_ReassembleT1wInputSpec", (BaseInterfaceInputSpec,), {
    "__module__": __name__,  # so that MultiProc can pickle it
    "in_file": File(exists=True, mandatory=True, desc="the T1w (its grid and header)"),
    "slices_file": File(exists=True, mandatory=True, desc="source slices (PrepareT1w)"),
    "harmonized_file": File(exists=True, mandatory=True, desc="harmonized slices (HarmonizeSlices)"),
    "geometry_file": File(exists=True, mandatory=True, desc="geometry (PrepareT1w)"),
    "num_threads": num_threads_trait(),
    **{item.name: _setting_trait(item) for item in setting_fields() if item.name in REASSEMBLE_SETTINGS},
})


class _ReassembleT1wOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the harmonized T1w on its native grid")
    out_grid = File(exists=True, desc="the harmonized T1w on the model's 1.2 mm grid")


class ReassembleT1w(SimpleInterface):
    """Smooth the change across slices (unless told not to) and put the volume back
    (:func:`~bids_harmony.harmonize.reassemble`)."""

    input_spec = _ReassembleT1wInputSpec
    output_spec = _ReassembleT1wOutputSpec

    def _run_interface(self, runtime):
        from ..harmonize import reassemble
        from ..preprocessing import grid_image, load_geometry
        from ..threads import limit_threads

        limit_threads(self.inputs.num_threads)
        geometry = load_geometry(self.inputs.geometry_file, self.inputs.in_file)
        final, native = reassemble(np.load(self.inputs.harmonized_file), np.load(self.inputs.slices_file), geometry,
                                   self.inputs.smooth_across_slices)
        self._results["out_file"] = os.path.join(runtime.cwd, "harmonized_T1w.nii.gz")
        self._results["out_grid"] = os.path.join(runtime.cwd, "harmonized_res-1p2_T1w.nii.gz")
        native.to_filename(self._results["out_file"])
        grid_image(final, geometry).to_filename(self._results["out_grid"])
        return runtime
