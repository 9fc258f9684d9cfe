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
