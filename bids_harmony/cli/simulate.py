"""``bids_harmony-simulate``: the multi-scanner demo dataset with paired ground truth."""
from __future__ import annotations

import argparse
import sys
import time

from ..simulate import SCANNERS, available_anatomies, simulate_dataset
from ..simulate.anatomy import SOURCES
from ..errors import InputError, OutputExistsError
from .common import add_version, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_harmony-simulate",
        description="Write a BIDS dataset of simulated T1w MPRAGE scans from the five scanners "
        "of the BlindHarmony paper (Table 1), made from real anatomies, with paired "
        "target-scanner ground truth and tissue labels under derivatives/groundtruth.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out_bids_dir", help="output BIDS folder (created; must be empty or absent)")
    parser.add_argument("--subjects-per-scanner", type=int, default=4, metavar="N",
                        help="subjects simulated on each scanner")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--scanners", nargs="+", default=list(SCANNERS), metavar="SCANNER",
                        help=f"scanners to simulate, from: {', '.join(SCANNERS)}")
    parser.add_argument("--anatomies", nargs="+", default=None, metavar="ANATOMY",
                        help=f"anatomy sources, from: {', '.join(SOURCES)} (default: all installed)")
    parser.add_argument("--nprocs", type=int, default=1, help="worker processes")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="also draw one simulated head as every chosen scanner sees it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset written by this command")
    add_version(parser)
    return parser


def _choose_anatomies(requested: list[str] | None) -> list[str]:
    status = available_anatomies()
    for name, reason in status.items():
        print(f"anatomy {name}: {'found' if reason is None else 'not available (' + reason + ')'}",
              file=sys.stderr)
    if requested is None:
        return [name for name, reason in status.items() if reason is None]
    return requested


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--subjects-per-scanner", args.subjects_per_scanner), ("--nprocs", args.nprocs)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1 (got {value})")
    anatomies = _choose_anatomies(args.anatomies)
    started = time.perf_counter()
    try:
        participants = simulate_dataset(
            args.out_bids_dir,
            subjects_per_scanner=args.subjects_per_scanner,
            seed=args.seed,
            scanners=args.scanners,
            anatomies=anatomies,
            nprocs=args.nprocs,
            overwrite=args.overwrite,
        )
    except OutputExistsError as error:
        raise OutputExistsError(f"{error} (use --overwrite)") from None
    elapsed = time.perf_counter() - started
    paired = int((participants["scanner"] != "target").sum())
    print(f"wrote {len(participants)} subjects and {paired} paired target scans to "
          f"{args.out_bids_dir} in {elapsed:.1f} s")
    if args.figure:
        from ..simulate.figure import draw_scanner_panel

        draw_scanner_panel(args.figure, anatomies[0], args.scanners, args.seed)
        print(f"wrote {args.figure}")
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
