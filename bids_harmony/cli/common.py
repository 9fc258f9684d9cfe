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


def add_harmonization_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimisation's settings (``HarmonizationParams``), defaults from the dataclass."""
    from ..harmonize import EDGE_TERMS, INITIALISATIONS, HarmonizationParams

    defaults = HarmonizationParams()
    group = parser.add_argument_group("BlindHarmony settings (README: 'Harmonization')")
    group.add_argument("--iterations", type=int, default=defaults.iterations,
                       help="alternations of fidelity step and likelihood step")
    group.add_argument("--alpha", type=float, default=defaults.alpha,
                       help="latent shrink of the centred latent per iteration")
    group.add_argument("--alpha2", type=float, default=defaults.alpha2,
                       help="latent shrink of the latent's mean per iteration")
    group.add_argument("--beta1", type=float, default=defaults.beta1, help="correlation fidelity step")
    group.add_argument("--beta2", type=float, default=defaults.beta2, help="edge fidelity step")
    group.add_argument("--edge", choices=EDGE_TERMS, default=defaults.edge, help="edge term")
    group.add_argument("--init", choices=INITIALISATIONS, default=defaults.init,
                       help="start from the mean target slice at the position, or the source")
    group.add_argument("--target-background", action=argparse.BooleanOptionalAction,
                       default=defaults.target_background,
                       help="below the source foreground, keep the source's texture at the target's "
                       "level (not in the paper; --no-target-background gives the paper's output "
                       "there; README: 'Harmonization')")
    group.add_argument("--harmonize-batch-size", type=int, default=defaults.batch_size,
                       help="slices optimised together")


def harmonization_params(args: argparse.Namespace) -> "HarmonizationParams":
    from ..errors import InputError
    from ..harmonize import HarmonizationParams

    try:
        return HarmonizationParams(iterations=args.iterations, alpha=args.alpha, alpha2=args.alpha2,
                                   beta1=args.beta1, beta2=args.beta2, edge=args.edge, init=args.init,
                                   target_background=args.target_background,
                                   batch_size=args.harmonize_batch_size)
    except ValueError as error:
        raise InputError(f"harmonization settings: {error}") from None
