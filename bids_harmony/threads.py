"""Thread counts, passed explicitly: torch and BLAS per call site, ANTs (ITK) once per process."""
from __future__ import annotations

import os

ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


def limit_threads(count: int) -> None:
    """Use at most ``count`` threads for torch and for the BLAS/OpenMP pools in this process.

    Workers (Nipype nodes, pools) call it when they start, so that ``count`` times the number of
    workers never oversubscribes the cores.
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(max(1, int(count)))
    threadpool_limits(max(1, int(count)))


def ants_single_threaded() -> None:
    """Run ANTs (ITK) single-threaded in this process, unless the user set a count.

    ITK reads its thread count once, at its first use in a process, and sums in a fixed order
    only when single-threaded: that is what makes the rigid slice placement and the simulator's
    Atropos segmentation reproducible. bids_harmony parallelises across images instead. Call it
    before the process's first ANTs call (it is a no-op afterwards).
    """
    os.environ.setdefault(ITK_THREADS, "1")
