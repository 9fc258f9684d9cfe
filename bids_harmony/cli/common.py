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


def resolve_device(choice: str) -> "torch.device":
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    from ..errors import InputError

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(choice)
