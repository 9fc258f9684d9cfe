"""``bids_harmony-bench``: the paper's evaluation protocol on a ``bids_harmony-simulate`` dataset.

Target-scanner subjects the model was not trained on give the simulated domains (exp, log,
gamma); source-scanner subjects give the paired scanner domains, scored against the same head
imaged by the target scanner (``derivatives/groundtruth``, ``desc-pairedtarget``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from ..__about__ import __version__
from ..atomic import atomic_write
from ..bench import SIMULATED_DOMAINS, BenchCase, histogram_match, run_benchmark, simulate_domain, summarise
from ..bench.protocol import markdown_tables, save_panel, spread_indices
from ..bids.selection import SelectedImage, open_layout, select_t1w
from ..errors import BidsError, InputError
from ..harmonize import HarmonizationParams, harmonize_slices
from ..model import load_model
from ..model.file import HarmonyModel
from ..preprocessing import mask_to_slices, to_slices
from .common import add_harmonization_arguments, add_version, harmonization_params, resolve_device, run_cli

BRAIN_LABELS = (1, 2, 3)  # CSF, GM, WM in the simulator's dseg.tsv
MIN_BRAIN_SHARE = 0.1  # slices whose brain is at least this share of the subject's largest
DEFAULT_MAX_SLICES = 64
ABLATIONS = {"alpha=0": {"alpha": 0.0}, "beta1=0": {"beta1": 0.0}, "beta2=0": {"beta2": 0.0}}
OUTPUTS = ("bench_scores.csv", "bench_summary.csv", "bench_panel.png", "bench_settings.json",
           "bench_summary.md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_harmony-bench",
        description="BlindHarmony's evaluation protocol (seed section 3) on a bids_harmony-simulate "
        "dataset: simulated domains (exp, log, gamma) of held-out target-scanner subjects and paired "
        "scanner domains against their target-scanner ground truth; methods: no harmonization, "
        "histogram matching at the same slice position, BlindHarmony and its ablations; PSNR and "
        "SSIM over the whole slice and the brain. With the defaults (--max-slices 64) on 2 CPU cores "
        "and the bundled model a run on 15 subjects takes 5 to 15 minutes (4.6 min measured on one "
        "2-core machine, 13 on an older one; the default is sized to stay under 30).",
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
    parser.add_argument("--no-ablations", action="store_true",
                        help="skip the ablations alpha=0, beta1=0, beta2=0")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL",
                        help="subjects to use (with or without sub-); default: all the model did not train on")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results in output_dir")
    add_harmonization_arguments(parser)
    add_version(parser)
    return parser


def _trained_subjects(model: HarmonyModel, bids_dir: Path) -> set[str]:
    """Subjects of ``bids_dir`` the model was trained on (none unless it is the training dataset)."""
    dataset = model.target.get("dataset")
    if dataset and Path(dataset).resolve() == bids_dir.resolve():
        return set(model.target.get("training_subjects") or [])
    return set()


def _groundtruth_file(image: SelectedImage, groundtruth: Path, suffix: str) -> Path:
    """``sub-X[_ses-Y]_<suffix>.nii[.gz]`` beside where the T1w would be, under groundtruth."""
    relative = image.path.resolve().relative_to(groundtruth.resolve().parents[1])
    return groundtruth / relative.parent / relative.name.replace("_T1w.nii", f"_{suffix}.nii")


def _brain_slices(image: SelectedImage, geometry, groundtruth: Path) -> np.ndarray:
    """The brain mask on the model's slices, from the simulator's tissue labels."""
    labels_path = _groundtruth_file(image, groundtruth, "dseg")
    if not labels_path.is_file():
        raise BidsError(f"{labels_path}: no tissue labels; bids_harmony-bench needs a dataset written by "
                        "bids_harmony-simulate (derivatives/groundtruth)")
    labels = nib.load(labels_path)
    return mask_to_slices(np.isin(np.asarray(labels.dataobj), BRAIN_LABELS), labels.affine, geometry)


def _domain_label(image: SelectedImage, participants: dict[str, dict]) -> str:
    metadata = image.metadata
    scanner = " ".join(str(part) for part in (metadata.get("ManufacturersModelName"),
                                               f"{metadata.get('MagneticFieldStrength', '?')}T") if part)
    domain = participants.get(image.subject, {}).get("domain")
    return f"{domain}: {scanner}" if domain else f"{scanner} ({metadata.get('StationName', 'unknown station')})"


class _SubjectSlices:
    """One image's brain slices on the model's grid (and, for a source image, its paired truth)."""

    def __init__(self, image: SelectedImage, model: HarmonyModel, groundtruth: Path, paired: bool):
        self.image = image
        slices, geometry = to_slices(image.path, model.preprocessing)
        brain = _brain_slices(image, geometry, groundtruth)
        area = brain.reshape(len(brain), -1).sum(1)
        keep = np.flatnonzero(geometry.valid & (area >= MIN_BRAIN_SHARE * area.max()))
        self.slices, self.brain, self.positions = slices[keep], brain[keep], geometry.positions[keep]
        self.truth = self.slices
        if paired:
            path = _groundtruth_file(image, groundtruth, "desc-pairedtarget_T1w")
            if not path.is_file():
                raise BidsError(f"{path}: missing paired target-scanner image of {image.path.name}")
            self.truth = to_slices(path, model.preprocessing, geometry=geometry)[0][keep]


def _take(subjects: list[_SubjectSlices], budget: int) -> list[tuple[_SubjectSlices, np.ndarray]]:
    """Split a slice budget evenly over the pooled slices of several subjects."""
    owners = np.concatenate([np.full(len(subject.slices), index) for index, subject in enumerate(subjects)])
    rows = np.concatenate([np.arange(len(subject.slices)) for subject in subjects])
    chosen = spread_indices(len(owners), budget)
    return [(subject, rows[chosen][owners[chosen] == index]) for index, subject in enumerate(subjects)
            if np.any(owners[chosen] == index)]


def _cases(args, model: HarmonyModel, bids_dir: Path) -> list[BenchCase]:
    layout = open_layout(bids_dir)
    groundtruth = bids_dir / "derivatives" / "groundtruth"
    if not groundtruth.is_dir():
        raise BidsError(f"{groundtruth}: missing; bids_harmony-bench needs a dataset written by "
                        "bids_harmony-simulate")
    images = select_t1w(layout, participant_labels=args.participant_label)
    trained = _trained_subjects(model, bids_dir)
    images = [image for image in images if image.subject not in trained]
    filters = model.target.get("metadata_filters") or {}
    if not filters:
        raise InputError("the model records no metadata filter for its target scanner; "
                         "bids_harmony-bench cannot tell target from source images")
    targets = {image.path for image in select_t1w(layout, participant_labels=args.participant_label,
                                                  bids_filters=model.target.get("bids_filters") or {},
                                                  metadata_filters=filters)}
    participants = {}
    if (bids_dir / "participants.tsv").is_file():
        import pandas as pd

        table = pd.read_csv(bids_dir / "participants.tsv", sep="\t", dtype=str)
        participants = {row["participant_id"].removeprefix("sub-"): row for row in table.to_dict("records")}
    target_images = [image for image in images if image.path in targets]
    source_images = [] if args.no_paired else [image for image in images if image.path not in targets]
    if args.domains and not target_images:
        raise BidsError(f"{bids_dir}: no target-scanner T1w ({filters}) the model was not trained on")
    print(f"Target-scanner subjects (simulated domains): {', '.join('sub-' + i.subject for i in target_images)}")
    print(f"Source-scanner subjects (paired domains): {', '.join('sub-' + i.subject for i in source_images) or 'none'}")
    progress = tqdm(total=len(target_images) + len(source_images), desc="preprocessing", unit="image")
    cases = []
    if args.domains and target_images:
        subjects = []
        for image in target_images:
            subjects.append(_SubjectSlices(image, model, groundtruth, paired=False))
            progress.update()
        picked = _take(subjects, args.max_slices)
        for domain in args.domains:
            for subject, rows in picked:
                cases.append(BenchCase(domain, "simulated", subject.image.subject,
                                       simulate_domain(subject.slices[rows], domain), subject.slices[rows],
                                       subject.positions[rows], subject.brain[rows]))
    by_domain: dict[str, list[_SubjectSlices]] = {}
    for image in source_images:
        by_domain.setdefault(_domain_label(image, participants), []).append(
            _SubjectSlices(image, model, groundtruth, paired=True))
        progress.update()
    progress.close()
    for domain, subjects in sorted(by_domain.items()):
        for subject, rows in _take(subjects, args.max_slices):
            cases.append(BenchCase(domain, "paired", subject.image.subject, subject.slices[rows],
                                   subject.truth[rows], subject.positions[rows], subject.brain[rows]))
    return cases


def _methods(model: HarmonyModel, params: HarmonizationParams, ablations: bool) -> dict:
    methods = {
        "none": lambda slices, positions: slices,
        "histogram matching": lambda slices, positions: histogram_match(slices, positions, model.quantiles),
        "BlindHarmony": lambda slices, positions: harmonize_slices(slices, model, positions, params),
    }
    if ablations:
        for name, change in ABLATIONS.items():
            methods[f"BlindHarmony {name}"] = (
                lambda slices, positions, ablated=params.replace(**change):
                harmonize_slices(slices, model, positions, ablated))
    return methods


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bids_dir, output_dir = Path(args.bids_dir), Path(args.output_dir)
    if args.max_slices < 1:
        raise InputError(f"--max-slices must be at least 1 (got {args.max_slices})")
    if not bids_dir.is_dir():
        raise InputError(f"{bids_dir}: no such directory")
    existing = [name for name in OUTPUTS if (output_dir / name).exists()]
    if existing and not args.overwrite:
        raise InputError(f"{output_dir}: holds earlier results ({existing[0]}; use --overwrite)")
    params = harmonization_params(args)
    model = load_model(args.model, device=resolve_device(args.device))
    started = time.perf_counter()
    cases = _cases(args, model, bids_dir)
    if not cases:
        raise BidsError(f"{bids_dir}: nothing to benchmark (no target-scanner or paired source images)")
    methods = _methods(model, params, not args.no_ablations)
    total = sum(len(case.source) for case in cases)
    with tqdm(total=total, desc="benchmark", unit="slice") as bar:
        result = run_benchmark(cases, methods, progress=bar.update)
    summary = summarise(result.scores)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in existing:  # a rerun never leaves a mix of old and new files
        (output_dir / name).unlink()
    result.scores.to_csv(output_dir / "bench_scores.csv", index=False, float_format="%.5f")
    summary.to_csv(output_dir / "bench_summary.csv", index=False, float_format="%.5f")
    save_panel(result.examples, [name for name in methods if name in ("histogram matching", "BlindHarmony")],
               output_dir / "bench_panel.png")
    settings = {
        "command": "bids_harmony-bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "bids_dir": str(bids_dir.resolve()),
        "model": str(model.path), "model_sha256": model.sha256,
        "parameters": asdict(params), "max_slices": args.max_slices,
        "subjects": sorted({case.subject for case in cases}),
        "device": str(model.device), "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1), "version": __version__,
    }
    (output_dir / "bench_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    table = markdown_tables(summary)
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
