"""Peak memory and throughput of ``bids_harmony-train`` at two dataset sizes.

Usage:
    python benchmarks/bench_train.py BIDS_DIR --subjects 20 80 [--preset small] [--steps 20]
        [--batch-size 16] [--target StationName=TRIO-A] [--work-dir bench_work]

BIDS_DIR needs at least max(--subjects) target-scanner subjects, e.g. from
``bids_harmony-simulate BIDS_DIR --scanners target --subjects-per-scanner 80 --nprocs 2``.
The slice cache is built first (not measured); each measured run then trains from the cache
in a fresh process, and its peak resident memory is reported: streaming from the cache keeps
it flat as the number of subjects grows.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def _subjects(bids_dir: Path, target: str) -> list[str]:
    key, _, value = target.partition("=")
    with open(bids_dir / "participants.tsv") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    column = {"StationName": "station_name", "ManufacturersModelName": "manufacturers_model_name"}.get(key)
    return [row["participant_id"] for row in rows if column is None or row[column] == value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("--subjects", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--target", default="StationName=TRIO-A")
    parser.add_argument("--nprocs", type=int, default=2, help="preprocessing workers for the cache")
    parser.add_argument("--work-dir", type=Path, default=Path("bench_train_work"))
    args = parser.parse_args()
    subjects = _subjects(args.bids_dir, args.target)
    if len(subjects) < max(args.subjects):
        sys.exit(f"{args.bids_dir} has {len(subjects)} matching subjects, fewer than {max(args.subjects)}")

    def command(count: int, steps: int, nprocs: int) -> list[str]:
        return ["bids_harmony-train", str(args.bids_dir), str(args.work_dir / f"model-{count}.pt"),
                "--target", args.target, "--participant-label", *subjects[:count], "--preset", args.preset,
                "--steps", str(steps), "--batch-size", str(args.batch_size), "--validation-every", str(steps),
                "--checkpoint-every", str(steps), "--device", "cpu", "--nprocs", str(nprocs),
                "-w", str(args.work_dir), "--skip-bids-validation", "--overwrite"]

    subprocess.run(command(max(args.subjects), 1, args.nprocs), check=True, stdout=subprocess.DEVNULL)
    print(f"preset {args.preset}, batch {args.batch_size}, {args.steps} steps, cache warm")
    for count in args.subjects:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", _MEASURE, *command(count, args.steps, 1)],
                                capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - started
        peak_kb = int(result.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
        slices = next(line for line in result.stdout.splitlines() if line.startswith("slices:"))
        print(f"{count:4d} subjects: peak RSS {peak_kb / 1024:.0f} MB, {elapsed:.0f} s wall; {slices}")


if __name__ == "__main__":
    main()
