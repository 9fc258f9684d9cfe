"""``bids_harmony-train``: train the target-scanner flow on a BIDS dataset.

Run it directly, or under ``torchrun --nproc_per_node N`` for several GPUs (or CPU processes
with gloo): the selection and preprocessing happen once, on the first process. After training,
the first process measures the QC calibration on the validation subjects
(:mod:`bids_harmony.qc.calibration`) and stores it in the model file; ``--calibrate-only``
measures it again for an existing model file.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..bids.selection import (
    SelectedImage,
    open_layout,
    parse_metadata_filters,
    read_bids_filters,
    scanner_summary,
    select_t1w,
)
from ..bids.validation import validate_bids
from ..devices import DEVICE_CHOICES
from ..errors import BidsError, BidsHarmonyError, InputError, ModelError
from ..model import PRESETS, build_flow
from ..model.file import HarmonyModel, load_model, save_model
from ..preprocessing import PreprocessingConfig
from ..slice_cache import build_cache
from ..training import LOG, save_samples_figure, train_flow
from ..training_run import (
    PRESET_SCHEDULES,
    assemble_model,
    describe_target,
    preset_settings,
    read_flow_config,
    split_subjects,
    subject_stores,
)
from .common import add_version, resolve_device, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_harmony-train",
        description="Train the BlindHarmony flow on the T1w images of one target scanner, chosen "
        "from a BIDS dataset by metadata and BIDS filters.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", help="the BIDS dataset")
    parser.add_argument("model_out", help="model file to write (e.g. trio.pt); samples and the "
                        "training log are written beside it")
    selection = parser.add_argument_group("selecting the target scanner's images")
    selection.add_argument("--target", action="append", metavar="KEY=VALUE", default=[],
                           help="keep images whose sidecar has this value (repeatable), e.g. "
                           "ManufacturersModelName=TrioTim, MagneticFieldStrength=3, StationName=TRIO-A")
    selection.add_argument("--participant-label", nargs="+", metavar="LABEL",
                           help="subjects to use (with or without sub-)")
    selection.add_argument("--session-label", nargs="+", metavar="LABEL", help="sessions to use")
    selection.add_argument("--bids-filter-file", metavar="FILE",
                           help="fMRIPrep-style JSON filters; its \"t1w\" entry is applied")
    selection.add_argument("--allow-mixed-scanners", action="store_true",
                           help="train even if the selection spans several scanners")
    selection.add_argument("--skip-bids-validation", action="store_true",
                           help="do not run the BIDS validator first")
    selection.add_argument("--brain-extraction", action="store_true",
                           help="extract the brain (deepbet) before slicing; harmonization with the "
                           "model then does the same")
    training = parser.add_argument_group("training")
    training.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="flow architecture")
    training.add_argument("--flow-config", type=Path, metavar="JSON",
                          help='a JSON object of FlowConfig fields replacing the preset\'s, e.g. '
                          '{"steps_per_level": [2, 3, 4, 4]} (one value or one per level)')
    training.add_argument("--steps", type=int, default=None,
                          help="optimisation steps (default by preset, as (steps, batch size): "
                          f"{PRESET_SCHEDULES})")
    training.add_argument("--batch-size", type=int, default=None,
                          help="slices per step, all processes together (default by preset)")
    training.add_argument("--learning-rate", type=float, default=5e-4, help="Adam, cosine-annealed to 0")
    training.add_argument("--validation-fraction", type=float, default=0.1,
                          help="share of subjects held out for validation bits/dim (at least one)")
    training.add_argument("--validation-every", type=int, default=500, help="steps between validations")
    training.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    training.add_argument("--keep-best", action="store_true",
                          help="end with the weights of the best validation (as the authors do), not the "
                          "last step's (docs/training.md compares the two)")
    training.add_argument("--seed", type=int, default=0, help="random seed")
    training.add_argument("--resume", action="store_true", help="continue from the work dir's checkpoint")
    training.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                          help="stop at this step with a checkpoint (wall-time-limited jobs); continue "
                          "later with --resume")
    resources = parser.add_argument_group("resources")
    resources.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    resources.add_argument("--nprocs", type=int, default=1, help="workers for preprocessing")
    resources.add_argument("-w", "--work-dir", default="work", help="slice cache and checkpoints")
    resources.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    qc = parser.add_argument_group("QC calibration")
    qc.add_argument("--calibrate-only", action="store_true",
                    help="do not train: measure the QC calibration of the existing MODEL_OUT on the "
                    "validation subjects it records, found in BIDS_DIR with the same selection options, "
                    "and store it in the file in place (training does this itself)")
    qc.add_argument("--skip-calibration", action="store_true",
                    help="train only: the model file gets no QC calibration (add it later with "
                    "--calibrate-only; without it, QC has no target threshold or reference)")
    add_version(parser)
    return parser


def _print_selection(images: list[SelectedImage], train: list[str], validation: list[str]) -> None:
    print(f"selected {len(images)} T1w image(s) of {len(train) + len(validation)} subject(s): "
          f"{len(train)} for training, {len(validation)} for validation ({', '.join('sub-' + s for s in validation)})")
    for scanner in scanner_summary(images):
        described = ", ".join(f"{key}={value}" for key, value in scanner.items() if key != "images")
        print(f"  scanner: {described}: {scanner['images']} image(s)")


def _init_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_choice)
    if world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


def _configure_logging() -> None:
    """The package's INFO messages (the QC calibration's) on stderr, one line each."""
    logger = logging.getLogger("bids_harmony")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = " ".join(["bids_harmony-train"] + (sys.argv[1:] if argv is None else list(argv)))
    _configure_logging()
    model_out = Path(args.model_out)
    if args.calibrate_only:
        if args.resume or args.stop_after is not None:
            raise InputError("--calibrate-only does not train: it takes neither --resume nor --stop-after")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise InputError("--calibrate-only runs in one process, not under torchrun")
        return _calibrate_only(args, model_out, resolve_device(args.device), command)
    if model_out.exists() and not (args.overwrite or args.resume):
        raise InputError(f"{model_out}: model file exists (use --overwrite)")
    for name in ("steps", "batch_size", "validation_every", "checkpoint_every", "nprocs", "stop_after"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
    if not 0.0 < args.validation_fraction < 1.0:
        raise InputError("--validation-fraction must be between 0 and 1")
    rank, world, device = _init_distributed(args.device)
    try:
        return _train(args, model_out, rank, world, device, command)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _select(args, validate: bool = True):
    """The layout, the selected T1w images, their scanners and the filters, as the options say."""
    bids_dir = Path(args.bids_dir)
    layout = open_layout(bids_dir)
    if validate and not args.skip_bids_validation:
        validate_bids(bids_dir)
    bids_filters = read_bids_filters(args.bids_filter_file)
    metadata_filters = parse_metadata_filters(args.target)
    images = select_t1w(layout, args.participant_label, args.session_label, bids_filters, metadata_filters)
    if not images:
        raise BidsError(f"{bids_dir}: no T1w image matches the selection "
                        f"(filters: {metadata_filters or 'none'}, {bids_filters or 'no filter file'})")
    scanners = scanner_summary(images)
    if len(scanners) > 1 and not args.allow_mixed_scanners:
        listing = "; ".join(f"{s['ManufacturersModelName']} {s['StationName'] or s['DeviceSerialNumber']}"
                            f" ({s['images']})" for s in scanners)
        raise BidsError(f"{bids_dir}: the selection mixes {len(scanners)} scanners ({listing}); "
                        "narrow it with --target KEY=VALUE or pass --allow-mixed-scanners")
    return layout, images, scanners, metadata_filters, bids_filters


def _calibrate(model: HarmonyModel, images: list[SelectedImage], subjects: list[str], device: torch.device,
               command: str) -> dict:
    """The QC calibration on every selected image of ``subjects`` (the model's held-out ones)."""
    from ..qc.calibration import calibrate

    held_out = [image.path for image in images if image.subject in set(subjects)]
    print(f"QC calibration on {len(held_out)} T1w image(s) of the validation subject(s) "
          f"{', '.join('sub-' + s for s in subjects)}")
    model.to(device)
    try:
        return calibrate(model, held_out, subjects=subjects, command=command)
    finally:
        model.to("cpu")


def _print_calibration(model_out: Path, sha256: str, calibration: dict) -> None:
    print(json.dumps({"model": str(model_out), "sha256": sha256, "calibration": {
        "bits_per_dim": calibration["bits_per_dim"], "reference": calibration["reference"]}}, indent=1))


def _calibrate_only(args, model_out: Path, device: torch.device, command: str) -> int:
    model = load_model(model_out)
    subjects = list(model.target.get("validation_subjects") or [])
    if not subjects:
        raise ModelError(f"{model_out}: the model file records no validation subjects to calibrate on")
    _, images, _, metadata_filters, _ = _select(args)
    recorded = model.target.get("metadata_filters")
    if recorded is not None and recorded != metadata_filters:
        print(f"warning: the model was trained on the selection {recorded}, this run selects "
              f"{metadata_filters or 'all scanners'}", file=sys.stderr)
    missing = sorted(set(subjects) - {image.subject for image in images})
    if missing:
        raise BidsError(f"{args.bids_dir}: the validation subject(s) {', '.join('sub-' + s for s in missing)} "
                        f"that {model_out.name} records have no selected T1w image here")
    model.calibration = _calibrate(model, images, subjects, device, command)
    _print_calibration(model_out, save_model(model, model_out), model.calibration)
    return 0


def _train(args, model_out: Path, rank: int, world: int, device: torch.device, command: str) -> int:
    started = time.perf_counter()
    flow_config = read_flow_config(args.preset, args.flow_config)
    bids_dir = Path(args.bids_dir)
    layout, images, scanners, metadata_filters, bids_filters = _select(args, validate=rank == 0)
    train_subjects, validation_subjects = split_subjects((image.subject for image in images),
                                                         args.validation_fraction, args.seed)
    preprocessing = PreprocessingConfig(brain_extraction=args.brain_extraction)
    work_dir = Path(args.work_dir)
    sources = [image.path for image in images]
    if rank == 0:  # builds the cache; the other processes wait, then open what it wrote
        _print_selection(images, train_subjects, validation_subjects)
        entries = build_cache(sources, preprocessing, work_dir / "slices", args.nprocs)
    if world > 1:
        dist.barrier()
    if rank != 0:
        entries = build_cache(sources, preprocessing, work_dir / "slices", progress=False)
    stores = subject_stores(images, entries, {"train": train_subjects, "validation": validation_subjects},
                            preprocessing.slice_shape)
    if rank == 0:
        print(f"slices: {len(stores['train'])} for training, {len(stores['validation'])} for validation; "
              f"preset {args.preset}, device {device}, {world} process(es)")
    settings = preset_settings(
        args.preset, steps=args.steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, validation_every=args.validation_every,
        checkpoint_every=args.checkpoint_every, seed=args.seed, num_bits=flow_config.num_bits,
        keep_best=args.keep_best,
    )
    torch.manual_seed(args.seed)
    shape = (1,) + preprocessing.slice_shape
    flow = build_flow(flow_config, shape)
    run_dir = work_dir / f"train-{model_out.stem}"
    history = train_flow(flow, stores["train"], stores["validation"], settings, run_dir, device,
                         resume=args.resume, stop_after=args.stop_after)
    if rank != 0:
        return 0
    if args.stop_after is not None and args.stop_after < settings.steps:
        print(f"stopped at step {min(args.stop_after, settings.steps)} of {settings.steps}; checkpoint in "
              f"{run_dir}; continue with the same command and --resume")
        return 0

    target = describe_target(
        bids_dir, layout.get_dataset_description().get("Name"), metadata_filters=metadata_filters,
        bids_filters=bids_filters, participant_labels=args.participant_label,
        session_labels=args.session_label, scanners=scanners, training_subjects=train_subjects,
        validation_subjects=validation_subjects,
    )
    model = assemble_model(flow, flow_config, preprocessing, stores, history, settings, target=target,
                           preset=args.preset, sources=sources, device=device, processes=world,
                           started=started, command=command)
    try:
        if not args.skip_calibration:
            model.calibration = _calibrate(model, images, validation_subjects, device, command)
    except BidsHarmonyError as error:  # the training is kept; the calibration can follow later
        save_model(model, model_out)
        raise type(error)(f"{error}; {model_out} was saved without its QC calibration (measure it "
                          "with --calibrate-only)") from None
    sha256 = save_model(model, model_out)
    stem = model_out.with_suffix("")
    save_samples_figure(model.flow, f"{stem}_samples.png")
    shutil.copyfile(run_dir / LOG, f"{stem}_training.csv")
    print(json.dumps({"model": str(model_out), "sha256": sha256, "validation_bpd": model.training["validation_bpd"],
                      "weights": model.training["weights"],
                      "gaussian_baseline_bpd": model.training["gaussian_baseline_validation_bpd"],
                      "steps": settings.steps,
                      "calibration_threshold_bpd": (model.calibration or {}).get("bits_per_dim", {}).get("threshold"),
                      "training_slices_per_second": model.training["training_slices_per_second"]}, indent=1))
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
