"""The participant level's run time and memory on this machine; print the figures.

Usage: python benchmarks/bench_app.py BIDS_DIR OUT_DIR [--subjects 01 02 03 04 05] [--nprocs 2]
                                      [--model demo] [--qc]

Runs the real command (``bids_harmony BIDS_DIR ... participant``, a subprocess) with Nipype's
resource monitor three times, each in a fresh work dir unless said:

1. one subject, ``--nprocs`` processes: wall time, and per stage (node) its wall time and peak
   memory from the monitor;
2. the same command again with the same work dir (nothing is recomputed): wall time;
3. all ``--subjects`` at once: wall time, and its ratio to run 1.

Targets (docs/app.md): at most 90 s per T1w on 2 cores; 5 subjects in at most 3.5 times one
subject's time.

With ``--qc``, instead: what the WM-segmentation QC adds to one subject's run, as the wall time
of a fresh run with QC minus that of a fresh run with ``--skip-qc``, and each QC stage's wall
time and peak memory (target, docs/app.md: at most 120 s per T1w on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import peak_rss_mb  # noqa: E402


def participant(bids_dir: Path, output_dir: Path, work_dir: Path, labels: list[str], args, *extra: str) -> float:
    command = [sys.executable, "-m", "bids_harmony.cli.run", str(bids_dir), str(output_dir), "participant",
               "--model", args.model, "-w", str(work_dir), "--nprocs", str(args.nprocs),
               "--resource-monitor", "--skip-bids-validation", "--participant-label", *labels, *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NIPYPE_NO_ET": "1"})
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"the participant run failed:\n{result.stderr[-3000:]}")
    return elapsed


def stages(output_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per node name: (seconds, peak GB) of each execution the resource monitor recorded."""
    found = defaultdict(list)
    for log in output_dir.glob("logs/resources-*.jsonl"):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if isinstance(record.get("runtime_memory_gb"), float):
                found[record["name"]].append((record["duration"], record["runtime_memory_gb"]))
    return found


def print_stages(output_dir: Path, names: list[str] | None = None) -> None:
    for name, runs in sorted(stages(output_dir).items()):
        if names is None or name in names:
            seconds, peak = runs[0]
            print(f"  stage {name:<24} {seconds:6.1f} s   peak {peak:5.2f} GB")


def qc_cost(args) -> None:
    """What the QC adds to one subject's run, and its stages."""
    from bids_harmony.model import bundled_model_path
    from bids_harmony.workflows.qc import init_qc_wf

    qc_wf = init_qc_wf(model_file=str(bundled_model_path()), bids_dir=str(args.bids_dir))
    qc_nodes = [node.name for node in qc_wf._get_all_nodes()]
    label = args.subjects[:1]
    with_qc = participant(args.bids_dir, args.out_dir / "qc" / "out", args.out_dir / "qc" / "work", label, args)
    without = participant(args.bids_dir, args.out_dir / "skip" / "out", args.out_dir / "skip" / "work", label, args,
                          "--skip-qc")
    print(f"machine: {os.cpu_count()} cores; --nprocs {args.nprocs}; model {args.model}; sub-{label[0]}")
    print(f"fresh run with QC {with_qc:.1f} s wall, with --skip-qc {without:.1f} s: QC adds {with_qc - without:.1f} s")
    print_stages(args.out_dir / "qc" / "out", qc_nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("out_dir", type=Path, help="scratch folder for outputs and work dirs")
    parser.add_argument("--subjects", nargs="+", default=["01", "02", "03", "04", "05"])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--qc", action="store_true", help="measure what the QC adds to one subject's run")
    args = parser.parse_args()
    shutil.rmtree(args.out_dir, ignore_errors=True)
    if args.qc:
        return qc_cost(args)
    one = args.out_dir / "one"
    first = participant(args.bids_dir, one / "out", one / "work", args.subjects[:1], args)
    print(f"machine: {os.cpu_count()} cores; --nprocs {args.nprocs}; model {args.model}")
    print(f"1 subject (sub-{args.subjects[0]}), fresh work dir: {first:.1f} s wall")
    print_stages(one / "out")
    again = participant(args.bids_dir, one / "out", one / "work", args.subjects[:1], args)
    print(f"the same run again, same work dir (nothing recomputed): {again:.1f} s wall")
    many = args.out_dir / "many"
    all_runs = participant(args.bids_dir, many / "out", many / "work", args.subjects, args)
    print(f"{len(args.subjects)} subjects, fresh work dir: {all_runs:.1f} s wall "
          f"({all_runs / first:.2f} x one subject's time)")
    print(f"peak memory of one process (the largest child): "
          f"{peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB")


if __name__ == "__main__":
    main()
