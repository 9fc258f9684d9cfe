"""``bids_harmony-demo OUT_DIR``: the whole app on a small simulated multi-scanner dataset.

Simulates one head per scanner of the paper's Table 1 (seed 11, which the bundled model never
saw: it was trained on seed 2026), runs the participant level with the bundled model and the
group level, validates the outputs as BIDS Derivatives, and prints each scanner's distance to
the target before and after. Needs no data, no GPU and no network.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from ..errors import BidsHarmonyError, OutputExistsError
from ..devices import DEVICE_CHOICES
from ..settings import DEFAULT_METHOD, METHODS
from .common import add_version, run_cli
from .parser import _positive_int

#: not the bundled model's training seed (2026, scripts/make_demo_model.sh) nor its tuning seed (7)
DEMO_SEED = 11
#: what the demo writes inside OUT_DIR
BIDS, OUTPUT, WORK = "bids", "bids_harmony", "work"
#: the measures of the printed table, from each run's desc-qc_metrics.json
TABLE_METRICS = ("wasserstein_to_target", "wm_gm_contrast", "bits_per_dim")


class DemoError(BidsHarmonyError):
    """A step of the demo did not succeed; its own message said why."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_harmony-demo",
        description="Try bids_harmony end to end without data: simulate one T1w head per scanner of "
        "the BlindHarmony paper (five scanners), harmonize them with the bundled demo model, run the "
        "QC and the group level, validate the outputs, and print each scanner's distance to the "
        "target before and after.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path,
                        help=f"folder for the demo: OUT_DIR/{BIDS} (the simulated dataset), OUT_DIR/{OUTPUT} "
                        f"(derivatives and reports); must be empty or absent")
    parser.add_argument("--nprocs", type=_positive_int, default=2, help="worker processes")
    parser.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                        help="the harmonization method (docs/methods.md): ours or one of the authors' loops")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where the flow runs")
    parser.add_argument("-w", "--work-dir", type=Path, default=None,
                        help=f"Nipype's working folder (default: OUT_DIR/{WORK})")
    parser.add_argument("--seed", type=int, default=DEMO_SEED,
                        help="the simulator's seed (the bundled model was trained on seed 2026)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo in OUT_DIR")
    add_version(parser)
    return parser


def _prepare(out_dir: Path, work_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        ours = {BIDS, OUTPUT, WORK}
        if not overwrite or not {path.name for path in out_dir.iterdir()} <= ours:
            raise OutputExistsError(f"{out_dir}: not empty (use an empty folder"
                                    + (", or --overwrite to replace an earlier demo)" if not overwrite else
                                       "; --overwrite replaces only an earlier demo's folders)"))
        for name in ours:
            shutil.rmtree(out_dir / name, ignore_errors=True)
    if overwrite and work_dir.exists():
        shutil.rmtree(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def distance_table(runs: list, target_scanner: str) -> list[str]:
    """Markdown rows: per scanner, each measure before -> after, then the spread across scanners
    (standard deviation of the scanners' values: with one head per scanner, the site effect)."""
    from ..reports.group import SHORT_NAMES

    header = ["scanner", *(SHORT_NAMES[name] + ", source -> harmonized" for name in TABLE_METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    spread: dict[str, dict[str, list[float]]] = {name: {"source": [], "harmonized": []} for name in TABLE_METRICS}
    for run in sorted(runs, key=lambda run: (run.scanner != target_scanner, run.scanner)):
        cells = []
        for name in TABLE_METRICS:
            values = [run.value(name, which) for which in ("source", "harmonized")]
            for which, value in zip(("source", "harmonized"), values):
                if value is not None:
                    spread[name][which].append(value)
            cells.append(" -> ".join("n/a" if value is None else f"{value:.3f}" for value in values))
        label = f"{run.scanner} (target)" if run.scanner == target_scanner else run.scanner
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for name in TABLE_METRICS:
        pair = [statistics.stdev(spread[name][which]) if len(spread[name][which]) > 1 else None
                for which in ("source", "harmonized")]
        cells.append(" -> ".join("n/a" if value is None else f"{value:.3f}" for value in pair))
    lines.append("| spread across scanners (SD) | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = args.out_dir.absolute()
    work_dir = (args.work_dir or out_dir / WORK).absolute()
    bids_dir, output_dir = out_dir / BIDS, out_dir / OUTPUT
    _prepare(out_dir, work_dir, args.overwrite)
    started = time.perf_counter()

    from ..simulate import SCANNERS, TARGET, available_anatomies, simulate_dataset

    began = _step(f"1/4 simulating one head per scanner ({len(SCANNERS)} scanners, seed {args.seed})")
    anatomies = [name for name, reason in available_anatomies().items() if reason is None]
    simulate_dataset(bids_dir, subjects_per_scanner=1, seed=args.seed, scanners=list(SCANNERS),
                     anatomies=anatomies, nprocs=args.nprocs)
    print(f"{bids_dir} in {time.perf_counter() - began:.0f} s")

    from .run import main as bids_harmony

    common = [str(bids_dir), str(output_dir)]
    began = _step("2/4 participant level: harmonization with the bundled demo model, QC, reports")
    if bids_harmony([*common, "participant", "--model", "demo", "--nprocs", str(args.nprocs),
                     "--device", args.device, "--method", args.method, "-w", str(work_dir)]) != 0:
        raise DemoError(f"the participant level failed (crash files under {output_dir}/sub-*/log)")
    print(f"participant level in {time.perf_counter() - began:.0f} s")
    _step("3/4 group level")
    bids_harmony([*common, "group"])

    from ..bids.validation import validate_bids

    _step("4/4 validating the outputs as BIDS Derivatives (bids-validator-deno)")
    warnings = validate_bids(output_dir)
    print(f"{output_dir}: valid BIDS Derivatives ({len(warnings)} warning(s))")

    from ..reports.group import OK, collect, scanner_name

    runs = collect(output_dir).with_status(OK)
    target_name = scanner_name(SCANNERS[TARGET].sidecar())
    print("\nDistance to the target scanner, before -> after (each run's desc-qc_metrics.json):\n")
    print("\n".join(distance_table(runs, target_name)))
    print(f"\nreports: {output_dir}/sub-*.html and {output_dir}/group_report.html")
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
