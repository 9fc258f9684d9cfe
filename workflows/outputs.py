"""BIDS derivatives of one harmonized T1w run (sMRIPrep's ``outputs.py`` pattern)."""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmony.interfaces.derivatives import (
    DerivativesDataSink,
    HarmonizedSidecar,
    PublishDerivatives,
    StageDerivative,
)
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


#: The QC derivatives of a run: outputnode field of :func:`~bids_harmony.workflows.init_qc_wf`
#: -> the sink's entities and sidecar, in the order they are published (the metrics last).
QC_DERIVATIVES = {
    "brain_mask": dict(desc="brain", suffix="mask", compress=True, Type="Brain",
                       Description="Brain mask of the source T1w (deepbet)"),
    "source_dseg": dict(desc="source", suffix="dseg", compress=True,
                        Description="Tissue classes of the source T1w (ANTs Atropos): 1 GM, 2 WM, 3 CSF"),
    "harmonized_dseg": dict(desc="harmonized", suffix="dseg", compress=True,
                            Description="Tissue classes of the harmonized T1w (ANTs Atropos): 1 GM, 2 WM, 3 CSF"),
    "source_probseg": dict(desc="source", label=["GM", "WM", "CSF"], suffix="probseg", compress=True,
                           Description="Tissue posterior of the source T1w (ANTs Atropos)"),
    "harmonized_probseg": dict(desc="harmonized", label=["GM", "WM", "CSF"], suffix="probseg", compress=True,
                               Description="Tissue posterior of the harmonized T1w (ANTs Atropos)"),
}
#: The QC record's name after the source's entities (no BIDS suffix exists for it: .bidsignore'd).
QC_METRICS_ENDING = "desc-qc_metrics.json"
#: The reportlets: outputnode field -> the figure's entities (``sub-<label>/figures/``).
QC_FIGURES = {
    "harmonization_report": dict(desc="harmonization"),
    "harmonization_grid_report": dict(desc="harmonizationgrid"),
    "source_seg_report": dict(desc="source", suffix="dseg"),
    "harmonized_seg_report": dict(desc="harmonized", suffix="dseg"),
    "histogram_report": dict(desc="histogram"),
}
#: Every field a run's QC hands to its derivatives workflow.
QC_FIELDS = (*QC_DERIVATIVES, "metrics_file", *QC_FIGURES)


def init_qc_derivatives_wf(*, bids_dir: str, output_dir: str, staging_dir: str,
                           name: str = "qc_derivatives_wf") -> Workflow:
    """
    Write the QC derivatives and figures of one run.

    The segmentations and the metrics are staged, then published on their own (the metrics
    file last, so its presence means the run's QC is complete); the figures go straight to
    ``sub-<label>/figures/``, where the report finds them.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bids_harmony.workflows import init_qc_derivatives_wf
            wf = init_qc_derivatives_wf(bids_dir=".", output_dir="out", staging_dir="work/staging")

    Parameters
    ----------
    bids_dir, output_dir, staging_dir : :obj:`str`
        As :func:`~bids_harmony.workflows.init_t1w_derivatives_wf`.
    name : :obj:`str`
        Name of the workflow.

    Inputs
    ------
    source_file
        The input T1w (names the outputs).
    brain_mask, source_dseg, harmonized_dseg, source_probseg, harmonized_probseg, metrics_file, and the reportlets
        The outputs of :func:`~bids_harmony.workflows.init_qc_wf`.

    Outputs
    -------
    out_files
        The published files.

    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["source_file", *QC_FIELDS]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    ordered = pe.Node(niu.Merge(2 * len(QC_DERIVATIVES) + 1, ravel_inputs=True), name="ordered",
                      run_without_submitting=True)
    ds_metrics = pe.Node(StageDerivative(bids_dir=bids_dir, staging_dir=staging_dir, ending=QC_METRICS_ENDING),
                         name="ds_metrics", run_without_submitting=True)
    publish = pe.Node(PublishDerivatives(staging_dir=staging_dir, output_dir=output_dir), name="publish",
                      run_without_submitting=True)
    edges = [(inputnode, ds_metrics, [("source_file", "source_file"), ("metrics_file", "in_file")]),
             (ds_metrics, ordered, [("out_file", f"in{2 * len(QC_DERIVATIVES) + 1}")]),
             (ordered, publish, [("out", "in_files")]), (publish, outputnode, [("out_files", "out_files")])]
    for index, (field, entities) in enumerate(QC_DERIVATIVES.items()):
        sink = pe.Node(DerivativesDataSink(base_directory=staging_dir, **entities), name=f"ds_{field}",
                       run_without_submitting=True)
        edges += [(inputnode, sink, [("source_file", "source_file"), (field, "in_file")]),
                  (sink, ordered, [("out_meta", f"in{2 * index + 1}"), ("out_file", f"in{2 * index + 2}")])]
    for field, entities in QC_FIGURES.items():
        sink = pe.Node(DerivativesDataSink(base_directory=output_dir, datatype="figures", **entities),
                       name=f"ds_{field}", run_without_submitting=True)
        edges.append((inputnode, sink, [("source_file", "source_file"), (field, "in_file")]))
    workflow.connect(edges)
    return workflow
