"""The paper's evaluation protocol: simulated source domains, metrics, baselines, tables.

``domains``, ``metrics``, ``baselines`` and ``protocol`` are plain numpy/torch; ``cases`` is the
BIDS side (which subjects, which files, which slices of a simulated dataset) and ``methods`` the
methods compared, both shared by ``bids_harmony-bench`` and any other caller.
"""
from .baselines import histogram_match
from .cases import (
    BRAIN_LABELS,
    CENTRAL_SLICES,
    DEFAULT_MAX_SLICES,
    MIN_BRAIN_SHARE,
    PROTOCOLS,
    SubjectSlices,
    build_cases,
    candidate_slices,
    domain_label,
    groundtruth_file,
    read_participants,
    split_images,
    take_slices,
    tissue_slices,
    trained_subjects,
)
from .domains import SIMULATED_DOMAINS, simulate_domain
from .methods import ABLATIONS, DEFAULT_ABLATED, DEFAULT_COMPARED, benchmark_methods, method_functions, method_label
from .metrics import psnr, ssim
from .protocol import BenchCase, MethodResult, run_benchmark, summarise

__all__ = [
    "ABLATIONS",
    "BRAIN_LABELS",
    "CENTRAL_SLICES",
    "DEFAULT_ABLATED",
    "DEFAULT_COMPARED",
    "DEFAULT_MAX_SLICES",
    "MIN_BRAIN_SHARE",
    "PROTOCOLS",
    "SIMULATED_DOMAINS",
    "BenchCase",
    "MethodResult",
    "SubjectSlices",
    "benchmark_methods",
    "build_cases",
    "candidate_slices",
    "domain_label",
    "groundtruth_file",
    "histogram_match",
    "method_functions",
    "method_label",
    "psnr",
    "read_participants",
    "split_images",
    "run_benchmark",
    "simulate_domain",
    "ssim",
    "summarise",
    "take_slices",
    "tissue_slices",
    "trained_subjects",
]
