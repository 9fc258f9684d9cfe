"""White-matter segmentation QC of one harmonized T1w run, with its reportlets."""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow
from nireports.interfaces.reporting.base import SimpleBeforeAfterRPT
from nireports.interfaces.reporting.masks import ROIsPlot

from bids_harmony.interfaces.qc import BrainHistogram, BrainMask, GridImages, QCMetrics, SegmentTissues
from bids_harmony.qc import BIDS_LABELS

# Peaks measured on a simulated 1 mm head (docs/app.md), with room: deepbet, Atropos, metrics
BRAIN_MASK_MEM_GB = 1.5
SEGMENT_MEM_GB = 1.0
METRICS_MEM_GB = 1.5

#: The reportlets of :func:`init_qc_wf` (outputnode field -> what it shows).
REPORTLETS = {
    "harmonization_report": "source and harmonized T1w, native grid, WM contour",
    "harmonization_grid_report": "the same on the model's 1.2 mm grid",
    "source_seg_report": "tissue boundaries of the source",
    "harmonized_seg_report": "tissue boundaries of the harmonized T1w",
    "histogram_report": "brain intensity distributions",
}


def init_qc_wf(*, model_file: str, bids_dir: str, omp_nthreads: int = 1, name: str = "qc_wf") -> Workflow:
    """
    Segment the source and the harmonized T1w and measure what harmonization changed.

    deepbet masks the source's brain; ANTs Atropos segments GM, WM and CSF of both images
    inside that mask on the native grid (labels 1 GM, 2 WM, 3 CSF); the QC record holds
    volumes, WM/GM contrast and CNR, the WM overlap, the target flow's bits/dim of both
    images' slices, slice banding and the flags. Reportlets show the images before and after,
    on both grids, the tissue boundaries, and the brain intensity histograms.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bids_harmony.model import bundled_model_path
            from bids_harmony.workflows import init_qc_wf
            wf = init_qc_wf(model_file=str(bundled_model_path()), bids_dir=".")

    Parameters
    ----------
    model_file : :obj:`str`
        The target model (its flow scores the slices; its calibration sets the thresholds).
    bids_dir : :obj:`str`
        The input dataset (the record names its source by BIDS URI).
    omp_nthreads : :obj:`int`
        Threads for torch and BLAS in each node (ITK runs single-threaded: see ``bids_harmony.threads``).
    name : :obj:`str`
        Name of the workflow.

    Inputs
    ------
    t1w, t1w_harmonized, t1w_harmonized_grid, slices_file, geometry_file, contrast_agreement
        The source and the outputs of :func:`~bids_harmony.workflows.init_harmonize_t1w_wf`.

    Outputs
    -------
    brain_mask, source_dseg, harmonized_dseg, source_probseg, harmonized_probseg
        The brain mask and both segmentations (posteriors as lists GM, WM, CSF).
    metrics_file
        The QC record (``desc-qc_metrics.json``).
    harmonization_report, harmonization_grid_report, source_seg_report, harmonized_seg_report, histogram_report
        The reportlets (SVG).

    """
    workflow = Workflow(name=name)
    workflow.__desc__ = """
For quality control, the brain of the original image was masked with deepbet [@deepbet], and grey
matter, white matter and cerebrospinal fluid were segmented with ANTs Atropos [@atropos]
(k-means initialisation, three classes, a Markov random field prior) in the original and in the
harmonized image; tissue volumes, white-to-grey-matter contrast and the overlap of the two
white-matter segmentations were compared, and both images were scored by the target flow's
likelihood.
"""
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "t1w_harmonized", "t1w_harmonized_grid",
                                                      "slices_file", "geometry_file", "contrast_agreement"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["brain_mask", "source_dseg", "harmonized_dseg",
                                                       "source_probseg", "harmonized_probseg", "metrics_file",
                                                       *REPORTLETS]),
                         name="outputnode")
    brain_mask = pe.Node(BrainMask(num_threads=omp_nthreads), name="brain_mask", mem_gb=BRAIN_MASK_MEM_GB,
                         n_procs=omp_nthreads)
    segment_source = pe.Node(SegmentTissues(label_values=dict(BIDS_LABELS)), name="segment_source",
                             mem_gb=SEGMENT_MEM_GB)
    segment_harmonized = pe.Node(SegmentTissues(label_values=dict(BIDS_LABELS)), name="segment_harmonized",
                                 mem_gb=SEGMENT_MEM_GB)
    metrics = pe.Node(QCMetrics(model_file=model_file, bids_dir=bids_dir, label_values=dict(BIDS_LABELS),
                                num_threads=omp_nthreads),
                      name="metrics", mem_gb=METRICS_MEM_GB, n_procs=omp_nthreads)
    grid_images = pe.Node(GridImages(), name="grid_images", mem_gb=0.5)
    # shown on the T1w's own voxel axes: nilearn would otherwise resample an oblique image (most
    # scans) afresh for every view, three quarters of this reportlet's time (26 s -> 8 s, docs/qc.md)
    native_rpt = pe.Node(SimpleBeforeAfterRPT(before_label="source", after_label="harmonized", dismiss_affine=True),
                         name="native_rpt", mem_gb=1.0)
    grid_rpt = pe.Node(SimpleBeforeAfterRPT(before_label="source (1.2 mm grid)",
                                            after_label="harmonized (1.2 mm grid)"),
                       name="grid_rpt", mem_gb=1.0)
    source_rois = pe.Node(niu.Merge(1), name="source_rois", run_without_submitting=True)
    harmonized_rois = pe.Node(niu.Merge(1), name="harmonized_rois", run_without_submitting=True)
    boundaries = [BIDS_LABELS["GM"] + 0.5, BIDS_LABELS["WM"] + 0.5]  # between 1|2 and 2|3
    source_seg_rpt = pe.Node(ROIsPlot(levels=boundaries, colors=["r", "b"]), name="source_seg_rpt", mem_gb=1.0)
    harmonized_seg_rpt = pe.Node(ROIsPlot(levels=boundaries, colors=["r", "b"]), name="harmonized_seg_rpt",
                                 mem_gb=1.0)
    histogram = pe.Node(BrainHistogram(), name="histogram", mem_gb=0.5)

    workflow.connect([
        (inputnode, brain_mask, [("t1w", "in_file")]),
        (inputnode, segment_source, [("t1w", "in_file")]),
        (brain_mask, segment_source, [("out_file", "mask_file")]),
        (inputnode, segment_harmonized, [("t1w_harmonized", "in_file")]),
        (brain_mask, segment_harmonized, [("out_file", "mask_file")]),
        (inputnode, metrics, [("t1w", "source_file"), ("t1w_harmonized", "harmonized_file"),
                              ("slices_file", "slices_file"), ("t1w_harmonized_grid", "harmonized_grid"),
                              ("geometry_file", "geometry_file"), ("contrast_agreement", "contrast_agreement")]),
        (brain_mask, metrics, [("out_file", "mask_file")]),
        (segment_source, metrics, [("dseg_file", "source_dseg")]),
        (segment_harmonized, metrics, [("dseg_file", "harmonized_dseg")]),
        (inputnode, grid_images, [("t1w", "in_file"), ("slices_file", "slices_file"),
                                  ("geometry_file", "geometry_file")]),
        (segment_source, grid_images, [("wm_file", "wm_file")]),
        (inputnode, native_rpt, [("t1w", "before"), ("t1w_harmonized", "after")]),
        (segment_source, native_rpt, [("wm_file", "wm_seg")]),
        (grid_images, grid_rpt, [("source_grid", "before"), ("wm_grid", "wm_seg")]),
        (inputnode, grid_rpt, [("t1w_harmonized_grid", "after")]),
        (segment_source, source_rois, [("dseg_file", "in1")]),
        (segment_harmonized, harmonized_rois, [("dseg_file", "in1")]),
        (inputnode, source_seg_rpt, [("t1w", "in_file")]),
        (brain_mask, source_seg_rpt, [("out_file", "in_mask")]),
        (source_rois, source_seg_rpt, [("out", "in_rois")]),
        (inputnode, harmonized_seg_rpt, [("t1w_harmonized", "in_file")]),
        (brain_mask, harmonized_seg_rpt, [("out_file", "in_mask")]),
        (harmonized_rois, harmonized_seg_rpt, [("out", "in_rois")]),
        (metrics, histogram, [("out_file", "metrics_file")]),
        (brain_mask, outputnode, [("out_file", "brain_mask")]),
        (segment_source, outputnode, [("dseg_file", "source_dseg"), ("probseg_files", "source_probseg")]),
        (segment_harmonized, outputnode, [("dseg_file", "harmonized_dseg"),
                                          ("probseg_files", "harmonized_probseg")]),
        (metrics, outputnode, [("out_file", "metrics_file")]),
        (native_rpt, outputnode, [("out_report", "harmonization_report")]),
        (grid_rpt, outputnode, [("out_report", "harmonization_grid_report")]),
        (source_seg_rpt, outputnode, [("out_report", "source_seg_report")]),
        (harmonized_seg_rpt, outputnode, [("out_report", "harmonized_seg_report")]),
        (histogram, outputnode, [("out_report", "histogram_report")]),
    ])  # fmt: skip
    return workflow
