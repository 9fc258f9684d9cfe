"""``bids_harmony BIDS_DIR OUTPUT_DIR participant|group``: the BIDS-App entry point."""
from __future__ import annotations

import os
import sys

from .common import run_cli
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # before nipype is imported: nothing phones home
    from ..settings import settings_from_arguments
    from .participant import configure_logging, run_participant, run_reports_only

    params = settings_from_arguments(args)
    configure_logging(args.verbose)
    if args.analysis_level == "group":
        from .group import run_group

        return run_group(args)
    if args.reports_only:
        return run_reports_only(args)
    return run_participant(args, params)


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
