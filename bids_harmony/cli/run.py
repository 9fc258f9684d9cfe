"""``bids_harmony``: the BIDS-App entry point (``bids_dir output_dir analysis_level``).

Only ``--version`` and ``--help`` exist so far; the analysis levels arrive with the
harmonization workflow.
"""
from __future__ import annotations

import argparse
import sys

from .common import add_version, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_harmony",
        description="Harmonize T1-weighted MRI across scanners with BlindHarmony (ICCV 2023).",
    )
    add_version(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)  # nothing to run yet
    return 2


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
