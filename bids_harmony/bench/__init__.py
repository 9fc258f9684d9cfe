"""The paper's evaluation protocol: simulated source domains, metrics, baselines, tables.

Plain numpy/torch; the BIDS side (which subjects, which files) lives in ``cli/bench.py``.
"""
from .baselines import histogram_match
from .domains import SIMULATED_DOMAINS, simulate_domain
from .metrics import psnr, ssim
from .protocol import BenchCase, MethodResult, run_benchmark, summarise

__all__ = [
    "SIMULATED_DOMAINS",
    "BenchCase",
    "MethodResult",
    "histogram_match",
    "psnr",
    "run_benchmark",
    "simulate_domain",
    "ssim",
    "summarise",
]
