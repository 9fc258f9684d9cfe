"""Timing and peak memory, measured the same way by every benchmark script."""
from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MB of this process (or, with ``RUSAGE_CHILDREN``, of its
    largest waited-for child)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def timed(run: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """Median wall and CPU seconds of ``run`` over ``repeats`` runs after one warm-up."""

    def sync() -> None:
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)

    run()
    sync()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        sync()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)
