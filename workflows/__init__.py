"""Nipype workflows of bids_harmony (installed as ``bids_harmony.workflows``).

- :func:`init_bids_harmony_wf`: the participant level, all selected subjects;
- :func:`init_single_subject_wf`: one subject, one harmonization per T1w run;
- :func:`init_harmonize_t1w_wf`: one T1w (the workflow to embed in other pipelines);
- :func:`init_t1w_derivatives_wf`: its BIDS derivatives;
- :func:`init_qc_wf`: its white-matter segmentation QC and reportlets;
- :func:`init_qc_derivatives_wf`: the QC's derivatives and figures.
"""
from .base import init_bids_harmony_wf, init_single_subject_wf
from .harmonize import init_harmonize_t1w_wf
from .outputs import init_qc_derivatives_wf, init_t1w_derivatives_wf
from .qc import init_qc_wf

__all__ = ["init_bids_harmony_wf", "init_harmonize_t1w_wf", "init_qc_derivatives_wf", "init_qc_wf",
           "init_single_subject_wf", "init_t1w_derivatives_wf"]
