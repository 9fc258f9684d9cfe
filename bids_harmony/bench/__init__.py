"""The paper's evaluation protocol: simulated source domains, metrics, baselines, tables.

``domains``, ``metrics``, ``baselines`` and ``protocol`` are plain numpy/torch; ``cases`` is the
BIDS side (which subjects, which files, which slices of a simulated dataset) and ``methods`` the
methods compared, both shared by ``bids_harmony-bench`` and any other caller.
"""
from .baselines import histogram_match
from .cases import (
    BRAIN_LABELS,
    DEFAULT_MAX_SLICES,
    MIN_BRAIN_SHARE,
    SubjectSlices,
    brain_slices,
    build_cases,
    domain_label,
    groundtruth_file,
    read_participants,
    take_slices,
    trained_subjects,
)
from .domains import SIMULATED_DOMAINS, simulate_domain
from .methods import ABLATIONS, benchmark_methods
from .metrics import psnr, ssim
from .protocol import BenchCase, MethodResult, run_benchmark, summarise

__all__ = [
    "ABLATIONS",
    "BRAIN_LABELS",
    "DEFAULT_MAX_SLICES",
    "MIN_BRAIN_SHARE",
    "SIMULATED_DOMAINS",
    "BenchCase",
    "MethodResult",
    "SubjectSlices",
    "benchmark_methods",
    "brain_slices",
    "build_cases",
    "domain_label",
    "groundtruth_file",
    "histogram_match",
    "psnr",
    "read_participants",
    "run_benchmark",
    "simulate_domain",
    "ssim",
    "summarise",
    "take_slices",
    "trained_subjects",
]
