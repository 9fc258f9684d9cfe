"""Time ``bids_harmony-simulate`` for a dataset of the issue's size; print the figures.

Usage: python benchmarks/bench_simulate.py [--subjects-per-scanner 4] [--nprocs 2] [--cold]

``--cold`` empties the anatomy cache first (a first run derives the tissue maps, Atropos
included); by default the cache is used as a second run would.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects-per-scanner", type=int, default=4)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="start from an empty anatomy cache")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-simulate-"))
    environment = dict(os.environ)
    if args.cold:
        environment["BIDS_HARMONY_CACHE"] = str(scratch / "cache")
    command = [sys.executable, "-m", "bids_harmony.cli.simulate", str(scratch / "bids"),
               "--subjects-per-scanner", str(args.subjects_per_scanner), "--nprocs", str(args.nprocs)]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    peak_mb = peak_rss_mb(resource.RUSAGE_CHILDREN)
    volumes = sum(1 for _ in (scratch / "bids").rglob("*_T1w.nii.gz"))
    print(f"subjects per scanner: {args.subjects_per_scanner}, nprocs: {args.nprocs}, "
          f"cache: {'cold' if args.cold else 'warm'}, cores: {os.cpu_count()}")
    print(f"T1w volumes written (scans + paired ground truth): {volumes}")
    print(f"wall time: {elapsed:.1f} s ({elapsed / 60:.2f} min); peak RSS of one process: {peak_mb:.0f} MB")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
