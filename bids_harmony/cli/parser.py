"""The ``bids_harmony`` command line: fMRIPrep's option names, meanings and aliases."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..devices import DEVICE_CHOICES
from ..settings import add_settings_arguments
from .common import add_version

ANALYSIS_LEVELS = ("participant", "group")
DEMO_MODEL = "demo"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_harmony",
        description="Harmonize the T1-weighted images of a BIDS dataset to a target scanner with "
        "BlindHarmony (Jeong et al., ICCV 2023): a normalizing flow trained only on the target "
        "scanner's T1w pulls images of any scanner onto its appearance. Writes BIDS Derivatives.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the root folder of a BIDS dataset")
    parser.add_argument("output_dir", type=Path,
                        help="the output folder (a BIDS Derivatives dataset); it may be "
                        "BIDS_DIR/derivatives/<name>, not BIDS_DIR itself or elsewhere inside it")
    parser.add_argument("analysis_level", choices=ANALYSIS_LEVELS,
                        help="participant: harmonize each selected T1w, with QC and a report per "
                        "subject; group: gather the participant level's QC across subjects and scanners "
                        "(group_T1w.tsv, group_report.html)")
    parser.add_argument("--model", metavar="MODEL",
                        help="the target scanner's model file (made with bids_harmony-train), or "
                        f"'{DEMO_MODEL}' for the bundled demo model, which was trained on simulated "
                        "heads only (to try the pipeline, not for real data)")

    selection = parser.add_argument_group("selecting the data")
    selection.add_argument("--participant-label", "--participant_label", dest="participant_label",
                           nargs="+", metavar="LABEL",
                           help="subjects to process (with or without sub-); default: all")
    selection.add_argument("--session-label", "--session_label", dest="session_label", nargs="+",
                           metavar="LABEL", help="sessions to process (with or without ses-); default: all")
    selection.add_argument("--bids-filter-file", "--bids_filter_file", dest="bids_filter_file",
                           type=Path, metavar="FILE",
                           help='fMRIPrep-style JSON filters; its "t1w" entry selects the images, '
                           'e.g. {"t1w": {"acquisition": "mprage"}}')
    selection.add_argument("--bids-database-dir", "--bids_database_dir", dest="bids_database_dir",
                           type=Path, metavar="DIR",
                           help="where pybids keeps (and reuses) its index of BIDS_DIR")
    selection.add_argument("--skip-bids-validation", "--skip_bids_validation", dest="skip_bids_validation",
                           action="store_true", help="do not run the BIDS validator on BIDS_DIR first")

    resources = parser.add_argument_group("resources and execution")
    resources.add_argument("-w", "--work-dir", "--work_dir", dest="work_dir", type=Path,
                           default=Path(os.getcwd()) / "work",
                           help="where intermediate results are kept; reuse it to resume a run")
    resources.add_argument("--nprocs", "--nthreads", "--n_cpus", "--n-cpus", dest="nprocs",
                           type=_positive_int, default=os.cpu_count() or 1,
                           help="CPU cores for the whole run")
    resources.add_argument("--omp-nthreads", "--omp_nthreads", dest="omp_nthreads", type=_positive_int,
                           help="threads per process (torch, BLAS); default: one less than --nprocs, "
                           "at most 8, at least 1")
    resources.add_argument("--mem-gb", "--mem_gb", dest="mem_gb", type=_positive_float,
                           help="memory the run may use (GB); nodes declare what they need")
    resources.add_argument("--use-plugin", "--use_plugin", dest="use_plugin", type=Path, metavar="FILE",
                           help="Nipype plugin settings (YAML, fMRIPrep's format: plugin: ..., "
                           "plugin_args: {...}), e.g. for SLURM; harmonize_plugin_args: {...} are "
                           "the harmonization node's own (e.g. sbatch_args asking for a GPU)")
    resources.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                           help="where the flow optimisation runs (auto: a GPU when there is one; with a "
                           "plugin that sends nodes to other machines, e.g. SLURMGraph, decided on the "
                           "machine that runs the harmonization)")
    resources.add_argument("--stop-on-first-crash", "--stop_on_first_crash", dest="stop_on_first_crash",
                           action="store_true", help="stop at the first failure (default: the other "
                           "subjects finish)")
    resources.add_argument("--resource-monitor", "--resource_monitor", dest="resource_monitor",
                           action="store_true",
                           help="record each node's run time and memory (logs/resources-<run>.jsonl)")
    resources.add_argument("--clean-workdir", "--clean_workdir", dest="clean_workdir", action="store_true",
                           help="empty the work dir first (nothing is reused)")
    resources.add_argument("--write-graph", "--write_graph", dest="write_graph", action="store_true",
                           help="write the workflow graph (logs/graph.dot) and stop")
    resources.add_argument("--boilerplate-only", "--boilerplate_only", dest="boilerplate_only",
                           action="store_true", help="write the methods boilerplate (logs/CITATION.*) and stop")

    qc = parser.add_argument_group("quality control and reports")
    qc.add_argument("--skip-qc", "--skip_qc", dest="skip_qc", action="store_true",
                    help="harmonize only: no tissue segmentation, QC metrics, figures or report")
    qc.add_argument("--reports-only", "--reports_only", dest="reports_only", action="store_true",
                    help="rebuild the subjects' HTML reports from OUTPUT_DIR and stop")

    parser.add_argument("--bids-copy", "--bids_copy", dest="bids_copy", type=Path, metavar="DIR",
                        help="also write a BIDS-valid raw-like copy of the dataset with each harmonized "
                        "T1w in place of its source (other files hard-linked, or relatively "
                        "symlinked across file systems), for downstream BIDS-Apps")
    method = parser.add_argument_group("the method")
    method.add_argument("--strict", action="store_true",
                        help="an input that does not look like a T1w (e.g. a T2w) is an error, not a warning")
    add_settings_arguments(parser)
    parser.add_argument("-v", "--verbose", dest="verbose", action="count", default=0,
                        help="more messages (-v: every Nipype message, -vv: debug)")
    add_version(parser)
    return parser
