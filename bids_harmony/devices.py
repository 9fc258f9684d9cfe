"""Where the flow runs: ``--device auto|cuda|cpu``, decided on the machine that runs the flow.

CUDA is counted without being initialised, because Nipype's MultiProc forks its workers and
CUDA initialised before a fork is unusable in the children.
"""
from __future__ import annotations

import os

#: ``--device``: ``auto`` takes a GPU when there is one (:func:`device_name`)
DEVICE_CHOICES = ("auto", "cuda", "cpu")


def gpu_count() -> int:
    """CUDA devices on this machine, counted without initialising CUDA in this process."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return torch.cuda.device_count()


def device_name(choice: str) -> str:
    """``auto``: ``cuda`` when this machine has a GPU, else ``cpu``; ``cuda`` without a GPU is an
    error."""
    from .errors import InputError

    if choice not in DEVICE_CHOICES:
        raise InputError(f"--device {choice}: not one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cpu":
        return "cpu"
    available = gpu_count() > 0
    if choice == "cuda" and not available:
        raise InputError("--device cuda: no CUDA device is available "
                         f"on {os.uname().nodename} (use --device cpu or auto)")
    return "cuda" if available else "cpu"
