"""``bids_harmony-bench``: the paper's evaluation protocol on a ``bids_harmony-simulate`` dataset.

Target-scanner subjects the model was not trained on give the simulated domains (exp, log,
gamma); source-scanner subjects give the paired scanner domains, scored against the same head
imaged by the target scanner (``derivatives/groundtruth``, ``desc-pairedtarget``). The cases
come from :func:`bids_harmony.bench.build_cases`, the methods from
:func:`bids_harmony.bench.benchmark_methods`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..__about__ import __version__
from ..atomic import atomic_write
from ..bench import (
    ABLATIONS,
    CENTRAL_SLICES,
    DEFAULT_ABLATED,
    DEFAULT_COMPARED,
    DEFAULT_MAX_SLICES,
    PROTOCOLS,
    SIMULATED_DOMAINS,
    benchmark_methods,
    build_cases,
    method_functions,
    run_benchmark,
    summarise,
)
from ..bench.cases import split_images
from ..bench.protocol import markdown_tables, save_panel, summarise_tissue, tissue_markdown
from ..bench.volumes import score_volumes
from ..devices import DEVICE_CHOICES
from ..errors import BidsError, InputError
from ..model import load_model
from ..settings import METHODS
from .common import add_harmonization_arguments, add_version, harmonization_params, resolve_device, run_cli

OUTPUTS = ("bench_scores.csv", "bench_summary.csv", "bench_tissue.csv", "bench_volumes.csv", "bench_panel.png",
           "bench_settings.json", "bench_summary.md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_harmony-bench",
        description="BlindHarmony's evaluation protocol (seed section 3) on a bids_harmony-simulate "
        "dataset: simulated domains (exp, log, gamma) of held-out target-scanner subjects and paired "
        "scanner domains against their target-scanner ground truth; methods: no harmonization, "
        "histogram matching at the same slice position, BlindHarmony by --method and its settings, "
        "the --compare methods as the authors set them, and the seed's ablation of --ablate; PSNR "
        "and SSIM over the whole slice and the brain. The camera-ready loop (10 flow round trips a "
        "slice, 4 columns with its ablation) takes most of the time: see docs/benchmark.md for "
        "measured run times.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", help="a dataset written by bids_harmony-simulate (another seed "
                        "than the model's training data)")
    parser.add_argument("output_dir", help="where the tables, CSVs and figure go")
    parser.add_argument("--model", help="model file (default: the bundled demo model)")
    parser.add_argument("--max-slices", type=int, default=DEFAULT_MAX_SLICES,
                        help="slices per domain, spread evenly over the brain slices of the "
                        "domain's subjects (the run time grows linearly with it)")
    parser.add_argument("--domains", nargs="+", choices=list(SIMULATED_DOMAINS), default=list(SIMULATED_DOMAINS),
                        help="simulated domains to run")
    parser.add_argument("--no-paired", action="store_true", help="skip the paired scanner domains")
    parser.add_argument("--compare", nargs="*", choices=list(METHODS), default=list(DEFAULT_COMPARED),
                        metavar="METHOD", help=f"named methods (their own settings) beside --method's; "
                        f"none with no value ({', '.join(METHODS)})")
    parser.add_argument("--ablate", choices=list(METHODS), default=DEFAULT_ABLATED,
                        help=f"the method whose preset the seed's ablation ({', '.join(ABLATIONS)}) changes")
    parser.add_argument("--no-ablations", action="store_true", help="skip the ablation")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=PROTOCOLS[0],
                        help=f"which slices of each volume are scored: ours (every slice through the brain) "
                        f"or authors (the {CENTRAL_SLICES} central axial slices, as the authors' scripts); "
                        "--max-slices applies to either")
    parser.add_argument("--volumes", action="store_true",
                        help="also harmonize every paired source volume as the app does (the volume steps "
                        "on) with each method but the ablations, and score its tissue contrast on the "
                        "native grid against the paired target image (about a minute per volume and "
                        "method on 2 CPU cores)")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL",
                        help="subjects to use (with or without sub-); default: all the model did not train on")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results in output_dir")
    add_harmonization_arguments(parser)
    add_version(parser)
    return parser


def additions_note(columns: dict) -> str:
    """Which columns have our additions to the paper's method on (the volume steps do not apply
    to slices: the benchmark scores the optimisation's slices)."""
    lines = [f"- {name}: {', '.join(params.additions())}" for name, params in columns.items()
             if params is not None and params.additions()]
    return ("\nOur additions to the paper's method, on in these columns (of them, only target_background acts "
            "on the scored slices; anchor_level and smooth_across_slices are volume steps):\n\n"
            + "\n".join(lines) + "\n") if lines else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bids_dir, output_dir = Path(args.bids_dir), Path(args.output_dir)
    if args.max_slices < 1:
        raise InputError(f"--max-slices must be at least 1 (got {args.max_slices})")
    if args.volumes and args.no_paired:
        raise InputError("--volumes scores the paired source volumes: it cannot go with --no-paired")
    if not bids_dir.is_dir():
        raise InputError(f"{bids_dir}: no such directory")
    existing = [name for name in OUTPUTS if (output_dir / name).exists()]
    if existing and not args.overwrite:
        raise InputError(f"{output_dir}: holds earlier results ({existing[0]}; use --overwrite)")
    params = harmonization_params(args)
    model = load_model(args.model, device=resolve_device(args.device))
    started = time.perf_counter()
    cases = build_cases(model, bids_dir, participant_labels=args.participant_label, domains=args.domains,
                        paired=not args.no_paired, max_slices=args.max_slices, protocol=args.protocol)
    if not cases:
        raise BidsError(f"{bids_dir}: nothing to benchmark (no target-scanner or paired source images)")
    columns = benchmark_methods(model, params, compared=args.compare,
                                ablated=None if args.no_ablations else args.ablate)
    # BlindHarmony's columns other than the ablations
    methods_compared = {name: method_params for name, method_params in columns.items()
                        if method_params is not None and not name.endswith(tuple(ABLATIONS))}
    methods = method_functions(model, columns)
    total = sum(len(case.source) for case in cases)
    with tqdm(total=total, desc="benchmark", unit="slice") as bar:
        result = run_benchmark(cases, methods, progress=bar.update)
    summary = summarise(result.scores)
    volumes = None
    if args.volumes:
        _, sources = split_images(model, bids_dir, args.participant_label)
        with tqdm(total=len(sources), desc="volumes", unit="volume") as bar:
            volumes = score_volumes(model, sources, bids_dir / "derivatives" / "groundtruth",
                                    {"none": None, "histogram matching": None, **methods_compared},
                                    progress=bar.update)
        volumes.insert(0, "kind", "paired")
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in existing:  # a rerun never leaves a mix of old and new files
        (output_dir / name).unlink()
    result.scores.to_csv(output_dir / "bench_scores.csv", index=False, float_format="%.5f")
    summary.to_csv(output_dir / "bench_summary.csv", index=False, float_format="%.5f")
    result.tissue.to_csv(output_dir / "bench_tissue.csv", index=False, float_format="%.5f")
    if volumes is not None:
        volumes.to_csv(output_dir / "bench_volumes.csv", index=False, float_format="%.5f")
    chosen, *compared = methods_compared
    # the chosen method last: the panel's last column is its difference to the truth
    save_panel(result.examples, ["histogram matching", *compared, chosen], output_dir / "bench_panel.png")
    settings = {
        "command": "bids_harmony-bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "bids_dir": str(bids_dir.resolve()),
        "model": str(model.path), "model_sha256": model.sha256,
        "parameters": asdict(params), "max_slices": args.max_slices, "protocol": args.protocol,
        "volumes": bool(volumes is not None),
        "methods": {name: {"method": dict(zip(("name", "changed"), method_params.method())),
                           "additions_to_the_paper": method_params.additions(), "parameters": asdict(method_params)}
                    for name, method_params in columns.items() if method_params is not None},
        "subjects": sorted({case.subject for case in cases}),
        "device": str(model.device), "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1), "version": __version__,
    }
    (output_dir / "bench_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    table = "\n".join([markdown_tables(summary),
                       tissue_markdown(summarise_tissue(result.tissue), "Tissue contrast on the scored slices"),
                       *([tissue_markdown(summarise_tissue(volumes), "Tissue contrast of whole volumes on the "
                                                                      "native grid (volume steps on)")]
                         if volumes is not None else [])]) + additions_note(columns)
    with atomic_write(output_dir / "bench_summary.md", "w") as stream:  # last: its presence means complete
        stream.write(f"# bids_harmony-bench\n\n`{settings['command']}` ({settings['seconds']:.0f} s, "
                     f"{settings['device']}, {settings['threads']} threads)\n\n{table}")
    print(table)
    print(f"Results in {output_dir} ({settings['seconds']:.0f} s)")
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
