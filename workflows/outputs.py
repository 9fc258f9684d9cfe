"""BIDS derivatives of one harmonized T1w run (sMRIPrep's ``outputs.py`` pattern)."""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmony.interfaces.derivatives import DerivativesDataSink, HarmonizedSidecar, PublishDerivatives
from bids_harmony.settings import HarmonizationParams

GRID_RESOLUTION = ("1.2 mm isotropic: the model's grid of axial slices, rigidly aligned to "
                   "MNI152NLin2009cSym (not normalised); from-T1w_to-slicegrid_mode-image_xfm.txt "
                   "resamples the T1w onto it")


def init_t1w_derivatives_wf(
    *,
    bids_dir: str,
    output_dir: str,
    staging_dir: str,
    model_file: str,
    params: HarmonizationParams,
    name: str = "t1w_derivatives_wf",
) -> Workflow:
    """
    Write the derivatives of one harmonized T1w run.

    Sinks write into ``staging_dir``; a last node copies the run's files into ``output_dir``,
    the native-grid harmonized T1w last, so a run's outputs appear only once complete.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bids_harmony.model import bundled_model_path
            from bids_harmony.settings import HarmonizationParams
            from bids_harmony.workflows import init_t1w_derivatives_wf
            wf = init_t1w_derivatives_wf(bids_dir=".", output_dir="out", staging_dir="work",
                                         model_file=str(bundled_model_path()), params=HarmonizationParams())

    Parameters
    ----------
    bids_dir : :obj:`str`
        The input dataset (for the sidecars' ``Sources`` URIs).
    output_dir : :obj:`str`
        The output folder (a BIDS Derivatives dataset).
    staging_dir : :obj:`str`
        Where the sinks write before publication (in the work dir).
    model_file : :obj:`str`
        The model used (its SHA-256 goes into the sidecars).
    params : :class:`~bids_harmony.settings.HarmonizationParams`
        The settings used (recorded in the sidecars).
    name : :obj:`str`
        Name of the workflow.

    Inputs
    ------
    source_file
        The input T1w (names the outputs).
    t1w_harmonized, t1w_harmonized_grid, t1w2grid_xfm, geometry_file, contrast_agreement, warnings, device
        The outputs of :func:`~bids_harmony.workflows.init_harmonize_t1w_wf`.

    Outputs
    -------
    out_files
        The published files.

    """
    workflow = Workflow(name=name)
    fields = ["source_file", "t1w_harmonized", "t1w_harmonized_grid", "t1w2grid_xfm", "geometry_file",
              "contrast_agreement", "warnings", "device"]
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    sidecar = pe.Node(HarmonizedSidecar(bids_dir=bids_dir, model_file=model_file, parameters=params.to_dict()),
                      name="sidecar", run_without_submitting=True)

    def sink(node_name: str, **entities) -> pe.Node:
        return pe.Node(DerivativesDataSink(base_directory=staging_dir, **entities), name=node_name,
                       run_without_submitting=True)

    ds_xfm = sink("ds_t1w2grid_xfm", to="slicegrid", mode="image", suffix="xfm", **{"from": "T1w"})
    ds_grid = sink("ds_t1w_harmonized_grid", desc="harmonized", resolution="1p2", compress=True,
                   Resolution=GRID_RESOLUTION,
                   Description="T1w harmonized with BlindHarmony, on the model's 1.2 mm slice grid")
    ds_t1w = sink("ds_t1w_harmonized", desc="harmonized", compress=True)
    ordered = pe.Node(niu.Merge(5), name="ordered", run_without_submitting=True)
    publish = pe.Node(PublishDerivatives(staging_dir=staging_dir, output_dir=output_dir), name="publish",
                      run_without_submitting=True)

    workflow.connect([
        (inputnode, sidecar, [("source_file", "source_file"), ("geometry_file", "geometry_file"),
                              ("device", "device"), ("contrast_agreement", "contrast_agreement"),
                              ("warnings", "warnings")]),
        (inputnode, ds_xfm, [("source_file", "source_file"), ("t1w2grid_xfm", "in_file")]),
        (inputnode, ds_grid, [("source_file", "source_file"), ("t1w_harmonized_grid", "in_file")]),
        (inputnode, ds_t1w, [("source_file", "source_file"), ("t1w_harmonized", "in_file")]),
        (sidecar, ds_grid, [("metadata", "meta_dict")]),
        (sidecar, ds_t1w, [("metadata", "meta_dict")]),
        (ds_xfm, ordered, [("out_file", "in1")]),
        (ds_grid, ordered, [("out_meta", "in2"), ("out_file", "in3")]),
        (ds_t1w, ordered, [("out_meta", "in4"), ("out_file", "in5")]),
        (ordered, publish, [("out", "in_files")]),
        (publish, outputnode, [("out_files", "out_files")]),
    ])  # fmt: skip
    return workflow
