"""What every entry point shares: version flag and one-line error reporting."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from ..__about__ import __version__
from ..errors import BidsHarmonyError


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main``; a ``BidsHarmonyError`` becomes one line on stderr and its exit code."""
    try:
        return main(argv)
    except BidsHarmonyError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


#: ``--device``: ``auto`` takes a GPU when there is one (:func:`device_name`)
DEVICE_CHOICES = ("auto", "cuda", "cpu")


def gpu_count() -> int:
    """CUDA devices, counted without initialising CUDA in this process (Nipype's MultiProc
    forks its workers, and CUDA initialised before a fork is unusable in the children)."""
    import os

    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return torch.cuda.device_count()


def device_name(choice: str) -> str:
    """``auto``: ``cuda`` when a GPU is present, else ``cpu``; ``cuda`` without a GPU is an error."""
    from ..errors import InputError

    if choice == "cpu":
        return "cpu"
    available = gpu_count() > 0
    if choice == "cuda" and not available:
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return "cuda" if available else "cpu"


def resolve_device(choice: str) -> "torch.device":
    import torch

    return torch.device(device_name(choice))


def add_harmonization_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimisation's settings, generated from ``HarmonizationParams``."""
    from ..settings import add_settings_arguments

    add_settings_arguments(parser)


def harmonization_params(args: argparse.Namespace) -> "HarmonizationParams":
    """The defaults, with the settings the command line set."""
    from ..settings import settings_from_arguments

    return settings_from_arguments(args)
