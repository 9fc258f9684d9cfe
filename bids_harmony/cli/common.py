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
    """The torch device of ``--device``, decided on this machine."""
    import torch

    from ..devices import device_name

    return torch.device(device_name(choice))


def add_harmonization_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimisation's settings, generated from ``HarmonizationParams``."""
    from ..settings import add_settings_arguments

    add_settings_arguments(parser)


def harmonization_params(args: argparse.Namespace) -> "HarmonizationParams":
    """The defaults, with the settings the command line set."""
    from ..settings import settings_from_arguments

    return settings_from_arguments(args)
