"""One training run, from a selection of target-scanner images to the model file's contents.

What ``bids_harmony-train`` does around :func:`training.train_flow`, as plain functions the CLI,
the app and tests share: the architecture and schedule by preset, the subject split, the slice
stores of each side of it, and the model with the statistics and metadata it records (the
benchmark and harmonization read them back).
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from nflows.flows import Flow

from .__about__ import software_versions
from .bids.selection import SelectedImage
from .errors import InputError
from .model import PRESETS, FlowConfig
from .model.file import HarmonyModel
from .preprocessing import PreprocessingConfig
from .slice_cache import CachedImage, SliceStore
from .training import TrainingSettings, best_validation, gaussian_baseline_bits_per_dim, validation_rows

# (steps, batch size) by preset: the authors' schedule for ``paper``; for ``small``, what trains
# in under 45 minutes on 2 CPU cores.
PRESET_SCHEDULES = {"paper": (20_000, 256), "small": (4_500, 4)}
# levels of the per-position intensity quantiles a model stores (histogram matching, checks)
QUANTILES = np.linspace(0.0, 1.0, 101)


def read_flow_config(preset: str, path: str | Path | None) -> FlowConfig:
    """The preset's architecture, with the fields a JSON file names replaced.

    Lets a run change one setting (say the steps per level) without defining a new preset.
    """
    config = PRESETS[preset]
    if path is None:
        return config
    try:
        fields = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(fields, dict):
        raise InputError(f"{path}: expected a JSON object of FlowConfig fields")
    try:
        return FlowConfig.from_dict({**config.to_dict(), **fields})
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: {error}") from None


def preset_settings(preset: str, *, steps: int | None = None, batch_size: int | None = None,
                    **fields: Any) -> TrainingSettings:
    """Training settings with the preset's schedule wherever ``steps`` or ``batch_size`` is None.

    The schedule belongs to the architecture: a run that names only the preset trains as long,
    and on batches as large, as that preset was sized for (``PRESET_SCHEDULES``).
    """
    default_steps, default_batch_size = PRESET_SCHEDULES[preset]
    return TrainingSettings(steps=default_steps if steps is None else steps,
                            batch_size=default_batch_size if batch_size is None else batch_size, **fields)


def split_subjects(subjects: Iterable[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, validation) subject labels, each sorted; at least one subject is held out.

    The split is by subject, not by slice, so validation bits/dim measure how the flow does on
    heads it has never seen; the same seed gives the same split.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"the validation fraction must be between 0 and 1 (got {fraction})")
    subjects = sorted(set(subjects))
    if len(subjects) < 2:
        raise InputError(f"only {len(subjects)} subject selected: training needs at least 2 "
                         "(one is held out for validation)")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(subjects))
    held_out = max(1, int(round(fraction * len(subjects))))
    validation = sorted(subjects[index] for index in order[:held_out])
    return sorted(set(subjects) - set(validation)), validation


def subject_stores(images: Sequence[SelectedImage], entries: Iterable[CachedImage],
                   subjects: Mapping[str, Iterable[str]], slice_shape: tuple[int, int]) -> dict[str, SliceStore]:
    """One slice store per named group of subjects (``{"train": [...], "validation": [...]}``).

    ``entries`` are the slice cache's entries of the images, in any order; every image of a
    subject goes to that subject's group, so no head is on both sides of the split.
    """
    by_path = {entry.source: entry for entry in entries}
    stores = {}
    for name, members in subjects.items():
        members = set(members)
        stores[name] = SliceStore([by_path[image.path] for image in images if image.subject in members],
                                  slice_shape)
    return stores


def image_fingerprint(paths: Iterable[Path]) -> str:
    """A digest of the images' names, sizes and modification times.

    Cheap (no image is read), and enough to tell whether a model was trained on the files as
    they are now.
    """
    digest = hashlib.sha256()
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def describe_target(bids_dir: Path, dataset_name: str | None, *, metadata_filters: dict, bids_filters: dict,
                    participant_labels: list[str] | None, session_labels: list[str] | None,
                    scanners: list[dict], training_subjects: list[str],
                    validation_subjects: list[str]) -> dict[str, Any]:
    """What a model records of its target scanner's selection.

    The benchmark reads it back: ``dataset`` and ``training_subjects`` to leave out the heads the
    model was trained on, the filters to tell target-scanner images from source images.
    """
    return {
        "dataset": str(Path(bids_dir).resolve()),
        "dataset_name": dataset_name,
        "metadata_filters": metadata_filters, "bids_filters": bids_filters,
        "participant_labels": participant_labels, "session_labels": session_labels,
        "scanners": scanners, "training_subjects": training_subjects,
        "validation_subjects": validation_subjects,
    }


def assemble_model(flow: Flow, flow_config: FlowConfig, preprocessing: PreprocessingConfig,
                   stores: Mapping[str, SliceStore], history: list[dict], settings: TrainingSettings, *,
                   target: dict[str, Any], preset: str, sources: Iterable[Path], device: torch.device | str,
                   processes: int, started: float, command: str) -> HarmonyModel:
    """The trained flow (moved to the CPU, in eval mode) with what harmonization and the benchmark need.

    Adds the target statistics of the training slices (mean slice and intensity quantiles per
    position) and the training record: schedule, final bits/dim against a per-pixel Gaussian
    baseline (the density a flow must beat clearly), throughput, data fingerprint and versions.
    ``stores`` holds the ``"train"`` and ``"validation"`` slices, ``history`` the rows of
    :func:`training.train_flow`; ``started`` is the run's ``time.perf_counter()`` at its start.
    """
    train, validation = stores["train"], stores["validation"]
    kept = best_validation(history) if settings.keep_best else history[-1]
    # slices per second of the optimisation loop, periodic validations included
    throughput = settings.steps * settings.batch_size / max(history[-1]["seconds"], 1e-9)
    rows = validation_rows(validation, settings.validation_slices)
    baseline = gaussian_baseline_bits_per_dim(train, validation, rows, settings.num_bits)
    mean_slices, quantiles = train.position_statistics(preprocessing.n_positions, QUANTILES)
    return HarmonyModel(
        flow=flow.cpu().eval(), flow_config=flow_config, shape=(1,) + preprocessing.slice_shape,
        preprocessing=preprocessing, mean_slices=mean_slices, quantiles=quantiles, target=target,
        training={
            "preset": preset, "steps": settings.steps, "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate, "seed": settings.seed,
            "training_slices": len(train), "validation_slices": len(validation),
            "validation_bpd": kept["val_bpd"], "train_bpd": kept["train_bpd"],
            "weights": f"{'best validation' if settings.keep_best else 'final'}, step {kept['step']}",
            "gaussian_baseline_validation_bpd": round(baseline, 5),
            "data_fingerprint": image_fingerprint(sources), "device": str(device), "processes": processes,
            "seconds": round(time.perf_counter() - started, 1),
            "training_slices_per_second": round(throughput, 2),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "versions": software_versions(),
        },
    )
