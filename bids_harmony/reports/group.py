"""The group level: gather what the participant level wrote, across subjects and scanners.

It reads, never recomputes: the participant level's configurations (``logs/config-*.json``,
which runs were selected and how), each run's ``desc-qc_metrics.json``, the harmonized
images' sidecars and the crash files. It writes ``group_T1w.tsv`` (with its data dictionary
``group_T1w.json``), ``group_report.html`` and the report's figures under ``figures/``, each
file whole or not at all, and all only once everything has been read and measured.
"""
from __future__ import annotations

import io
import json
import os
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..__about__ import __version__
from ..atomic import atomic_write
from ..bids.derivatives import SCANNER_FIELDS
from ..errors import InputError
from ..qc.site_effect import SiteEffectChange, site_effect_change
from ..qc.summary import IMAGE_METRICS, METRICS_FORMAT_VERSION
from .figures import COLOURS, LABELS

TABLE = "group_T1w.tsv"
REPORT = "group_report.html"
FIGURES = "figures"
UNKNOWN_SCANNER = "unknown scanner"
METRICS_SUFFIX = "_desc-qc_metrics.json"
#: What the report shows per scanner, before and after: contrast, intensity scale, the flow's likelihood.
FIGURE_METRICS = ("wm_gm_contrast", "wm_intensity_normalised", "bits_per_dim")
#: The per-image measures with numbers (``out_of_distribution`` is a yes/no).
NUMERIC_METRICS = tuple(name for name in IMAGE_METRICS if name != "out_of_distribution")
#: A row of ``group_T1w.tsv``'s ``qc_status``.
OK, NO_QC, FAILED, MISSING = "ok", "no QC", "failed", "missing"

#: Each measure's name in the report and data dictionary, and its unit.
METRICS = {
    "gm_volume_ml": ("grey matter volume", "ml"),
    "wm_volume_ml": ("white matter volume", "ml"),
    "csf_volume_ml": ("CSF volume", "ml"),
    "wm_gm_contrast": ("WM/GM contrast (median WM over median GM, core voxels)", None),
    "wm_gm_cnr": ("WM/GM contrast-to-noise ratio", None),
    "csf_wm_contrast": ("CSF/WM contrast (median CSF over median WM)", None),
    "wm_intensity_normalised": ("WM intensity normalised (median WM over median brain)", None),
    "bits_per_dim": ("bits per dimension of the slices under the target scanner's flow (lower: more target-like)",
                     "bits"),
    "ood_fraction": ("fraction of slices beyond the target's bits/dim threshold", None),
    "out_of_distribution": ("the image is out of the target scanner's distribution", None),
    "slice_banding": ("slice-to-slice banding of the WM intensity", None),
    "wasserstein_to_target": ("Wasserstein-1 distance of the WM-normalised brain intensities to the target "
                              "scanner's reference", None),
}
FLAGS = {
    "not_t1w_like": "the source does not order its tissues as the target's T1w does",
    "contrast_reversed": "the harmonized WM/GM contrast is 1 or below",
    "anatomy_changed": "source and harmonized WM overlap below the Dice threshold",
    "banding_increased": "harmonization at least doubled the slice banding",
    "harmonized_out_of_distribution": "the harmonized image is out of the target scanner's distribution",
}
SHORT_NAMES = {"gm_volume_ml": "GM volume (ml)", "wm_volume_ml": "WM volume (ml)", "csf_volume_ml": "CSF volume (ml)",
               "wm_gm_contrast": "WM/GM contrast", "wm_gm_cnr": "WM/GM CNR", "csf_wm_contrast": "CSF/WM contrast",
               "wm_intensity_normalised": "WM intensity normalised", "bits_per_dim": "bits/dim",
               "ood_fraction": "out-of-distribution slices", "slice_banding": "slice banding",
               "wasserstein_to_target": "Wasserstein distance to target"}


def scanner_name(fields: dict[str, Any]) -> str:
    """A scanner as the runs are grouped: model and station (else serial number), from the sidecar."""
    parts = (fields.get("ManufacturersModelName"), fields.get("StationName") or fields.get("DeviceSerialNumber"))
    return " ".join(str(part) for part in parts if part not in (None, "")) or UNKNOWN_SCANNER


@dataclass
class Run:
    """One selected T1w run and what the participant level left of it."""

    source: str  #: relative to the raw dataset, e.g. ``sub-01/anat/sub-01_T1w.nii.gz``
    subject: str
    session: str | None
    status: str
    scanner_fields: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] | None = None  #: its ``desc-qc_metrics.json``
    problem: str | None = None

    @property
    def scanner(self) -> str:
        return scanner_name(self.scanner_fields)

    @property
    def name(self) -> str:
        return Path(self.source).name

    @property
    def flags(self) -> list[str]:
        return [name for name, raised in (self.record or {}).get("flags", {}).items() if raised]

    def value(self, metric: str, which: str) -> Any:
        """A measure of the source or harmonized image; ``None`` where it was not measured."""
        return ((self.record or {}).get("metrics", {}).get(which) or {}).get(metric)


@dataclass
class GroupData:
    """Every selected run, and the participant-level runs (configurations) they came from."""

    runs: list[Run]
    configurations: list[dict[str, Any]]

    def with_status(self, status: str) -> list[Run]:
        return [run for run in self.runs if run.status == status]

    @property
    def scanners(self) -> list[str]:
        return sorted({run.scanner for run in self.with_status(OK)})

    def counts(self) -> dict[str, int]:
        """Subjects, runs selected, measured (with QC), flagged, failed or missing, without QC; scanners."""
        measured = self.with_status(OK)
        return {"subjects": len({run.subject for run in self.runs}), "selected": len(self.runs),
                "measured": len(measured), "flagged": sum(1 for run in measured if run.flags),
                "failed": len(self.with_status(FAILED)) + len(self.with_status(MISSING)),
                "no_qc": len(self.with_status(NO_QC)), "scanners": len(self.scanners)}


def _entities(source: str) -> tuple[str, str | None]:
    parts = dict(part.split("-", 1) for part in Path(source).name.split("_") if "-" in part)
    return parts.get("sub", ""), parts.get("ses")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable {what} ({error})") from None
    if not isinstance(content, dict):
        raise InputError(f"{path}: not a {what} (a JSON object is expected)")
    return content


def _started(configuration: dict[str, Any], path: Path) -> datetime:
    """When a participant-level run started (its file's time if the configuration does not say)."""
    try:
        started = datetime.fromisoformat(str(configuration["started"]))
    except (KeyError, ValueError):
        return datetime.fromtimestamp(path.stat().st_mtime)
    return started.astimezone().replace(tzinfo=None) if started.tzinfo else started


def read_configurations(output_dir: Path) -> list[dict[str, Any]]:
    """The participant level's configurations, oldest first."""
    found = []
    for path in output_dir.glob("logs/config-*.json"):
        configuration = _read_json(path, "participant-level configuration")
        found.append((_started(configuration, path), path.name, configuration))
    return [configuration for _, _, configuration in sorted(found, key=lambda item: item[:2])]


def read_metrics(path: Path) -> dict[str, Any]:
    """A run's QC record, refused when its format is not the one this version reads."""
    record = _read_json(path, "QC metrics file")
    if record.get("format_version") != METRICS_FORMAT_VERSION:
        raise InputError(f"{path}: QC metrics format {record.get('format_version')!r}, this version reads "
                         f"{METRICS_FORMAT_VERSION}; rerun the participant level")
    if not isinstance(record.get("source"), str) or not isinstance(record.get("metrics"), dict):
        raise InputError(f"{path}: not a QC metrics file (no \"source\" or \"metrics\")")
    return record


def _output_path(output_dir: Path, source: str, suffix: str) -> Path:
    """A run's output in ``output_dir``: its source's folder and name, ``_T1w`` replaced by ``suffix``."""
    relative = Path(source)
    return output_dir / relative.parent / (relative.name.split(".nii")[0].removesuffix("_T1w") + suffix)


def _relative_source(run: str) -> str:
    """A configuration's absolute T1w path, from its subject folder on (as BIDS URIs name it)."""
    parts = Path(run).parts
    folders = [index for index, part in enumerate(parts[:-1]) if part.startswith("sub-")]
    return Path(*parts[folders[-1]:]).as_posix() if folders else parts[-1]


def _crash_problem(output_dir: Path, subject: str, run: str, configuration: dict[str, Any]) -> str | None:
    """The one-line problem of the crash file of ``run`` (or of its subject) in that participant-level run."""
    from ..cli.participant import crash_problem, crash_run

    runs = configuration.get("runs", {}).get(subject, [])
    crashed: dict[str | None, Path] = {}
    folder = output_dir / f"sub-{subject}" / "log" / str(configuration.get("run_uuid"))
    for crash in sorted(folder.glob("crash-*.txt")):
        crashed.setdefault(crash_run(crash, runs), crash)
    crash = crashed.get(run) or crashed.get(None)
    if crash is None:
        return None
    return f"{crash_problem(crash).removeprefix(f'{run}: ')} (crash file: {crash.relative_to(output_dir)})"


def _unmeasured(run: Run, path: str, configuration: dict[str, Any], output_dir: Path) -> None:
    """Why a selected run has no QC metrics: it crashed, ran with --skip-qc, or never finished."""
    run.problem = _crash_problem(output_dir, run.subject, path, configuration)
    if run.problem:
        run.status = FAILED
    elif configuration.get("skip_qc") and _output_path(output_dir, run.source, "_desc-harmonized_T1w.nii.gz").is_file():
        run.status = NO_QC
        run.scanner_fields = _harmonized_scanner(output_dir, run.source)
    else:
        run.status = MISSING
        run.problem = (f"no QC metrics ({_output_path(output_dir, run.source, METRICS_SUFFIX).name}): "
                       "the participant level did not finish this run")


def collect(output_dir: str | Path, participant_labels: Sequence[str] | None = None,
            session_labels: Sequence[str] | None = None) -> GroupData:
    """Every run the participant level selected or measured, with the user's label filters; a
    run's latest configuration says how it was processed. Raises :class:`InputError` when
    ``output_dir`` holds no QC metrics for the selection."""
    from ..bids.selection import clean_labels

    output_dir = Path(output_dir)
    subjects = clean_labels(list(participant_labels or []), "sub")
    sessions = clean_labels(list(session_labels or []), "ses")
    configurations = read_configurations(output_dir)
    selected: dict[str, tuple[str, dict[str, Any]]] = {}  # source -> (absolute path, its latest configuration)
    without_t1w: set[str] = set()
    for configuration in configurations:
        for subject, runs in (configuration.get("runs") or {}).items():
            without_t1w.discard(subject)
            selected.update({_relative_source(run): (run, configuration) for run in runs})
        without_t1w.update(configuration.get("subjects_without_t1w") or [])
    measured = {}
    for path in sorted(output_dir.glob(f"sub-*/**/anat/*{METRICS_SUFFIX}")):
        record = read_metrics(path)
        measured[record["source"].split(":", 2)[-1]] = record  # bids:raw:<path in the dataset>

    def wanted(subject: str, session: str | None) -> bool:
        return (not subjects or subject in subjects) and (not sessions or session in sessions)

    runs = []
    for source in sorted(set(selected) | set(measured)):
        subject, session = _entities(source)
        if not wanted(subject, session):
            continue
        run = Run(source=source, subject=subject, session=session, status=OK)
        if source in measured:
            run.record = measured[source]
            run.scanner_fields = run.record.get("scanner") or _harmonized_scanner(output_dir, source)
        else:
            _unmeasured(run, *selected[source], output_dir)
        runs.append(run)
    runs += [Run(source=f"sub-{subject}", subject=subject, session=None, status=MISSING,
                 problem="no T1w image (anat/*_T1w.nii[.gz]) matched the participant level's selection")
             for subject in sorted(without_t1w) if wanted(subject, None) and not sessions]
    data = GroupData(runs=runs, configurations=configurations)
    if not data.with_status(OK):
        raise InputError(_nothing_to_report(output_dir, data, subjects, sessions, bool(selected or measured)))
    return data


def _harmonized_scanner(output_dir: Path, source: str) -> dict[str, Any]:
    """The scanner the harmonized T1w's sidecar names (``SourceScanner``), if it has one."""
    sidecar = _output_path(output_dir, source, "_desc-harmonized_T1w.json")
    if not sidecar.is_file():
        return {}
    return dict(_read_json(sidecar, "harmonized T1w sidecar").get("SourceScanner") or {})


def _nothing_to_report(output_dir: Path, data: GroupData, subjects, sessions, anything: bool) -> str:
    pattern = f"sub-*/[ses-*/]anat/*{METRICS_SUFFIX}"
    if not anything:
        return f"{output_dir}: no participant-level outputs ({pattern}); run the participant level first"
    if not data.runs:
        chosen = ", ".join([f"sub-{label}" for label in subjects or []] + [f"ses-{label}" for label in sessions or []])
        return f"{output_dir}: no participant-level outputs of {chosen} ({pattern}); check the labels"
    skipped = len(data.with_status(NO_QC))
    why = [f"{skipped} ran with --skip-qc"] if skipped else []
    if len(data.runs) > skipped:
        why.append(f"{len(data.runs) - skipped} failed or did not finish")
    return (f"{output_dir}: none of the {len(data.runs)} selected T1w run(s) has QC metrics ({pattern}): "
            f"{', '.join(why)}; rerun the participant level{' without --skip-qc' if skipped else ''}")


# --- tables ---------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("\t", " ").replace("\n", " ")


def table_columns() -> list[str]:
    """``group_T1w.tsv``'s columns: the run, its scanner and status, each measure before and after, the flags."""
    return (["participant_id", "session_id", "source", "scanner", "qc_status"]
            + [f"{name}_{which}" for name in IMAGE_METRICS for which in ("source", "harmonized")]
            + ["wm_dice_source_harmonized", "contrast_agreement"] + list(FLAGS))


def group_table(runs: Iterable[Run]) -> str:
    """``group_T1w.tsv``: one row per run, ``n/a`` where nothing was measured."""
    lines = ["\t".join(table_columns())]
    for run in runs:
        metrics = (run.record or {}).get("metrics", {})
        flags = (run.record or {}).get("flags", {})
        row = [f"sub-{run.subject}", f"ses-{run.session}" if run.session else None, run.source,
               run.scanner if run.status in (OK, NO_QC) else None, run.status]
        row += [run.value(name, which) for name in IMAGE_METRICS for which in ("source", "harmonized")]
        row += [metrics.get("wm_dice_source_harmonized"), metrics.get("contrast_agreement")]
        row += [flags.get(name) for name in FLAGS]
        lines.append("\t".join(_cell(value) for value in row))
    return "\n".join(lines) + "\n"


def table_dictionary() -> dict[str, Any]:
    """``group_T1w.json``: what each column of ``group_T1w.tsv`` holds (BIDS data dictionary)."""
    columns: dict[str, Any] = {
        "participant_id": {"Description": "the subject"},
        "session_id": {"Description": "the session (n/a: the dataset has none)"},
        "source": {"Description": "the T1w image, relative to the raw dataset"},
        "scanner": {"Description": "the source's scanner (ManufacturersModelName and StationName, else "
                                   "DeviceSerialNumber, of its sidecar)"},
        "qc_status": {"Description": "what the participant level left of the run",
                      "Levels": {OK: "harmonized and measured", NO_QC: "harmonized with --skip-qc",
                                 FAILED: "failed (see the crash file)", MISSING: "selected, but not finished"}},
    }
    for name, (description, unit) in METRICS.items():
        for which in ("source", "harmonized"):
            columns[f"{name}_{which}"] = {"Description": f"{description}, of the {which} image",
                                          **({"Units": unit} if unit else {})}
    columns["wm_dice_source_harmonized"] = {"Description": "Dice overlap of the source's and the harmonized "
                                                           "image's white matter segmentations"}
    columns["contrast_agreement"] = {"Description": "agreement of the source's tissue order with the target's T1w"}
    for name, description in FLAGS.items():
        columns[name] = {"Description": f"flag: {description}", "Levels": {"true": "flagged", "false": "not flagged"}}
    return columns


# --- site effect ----------------------------------------------------------------------------------

def site_effects(runs: Sequence[Run]) -> dict[str, SiteEffectChange]:
    """Each numeric measure's scanner share and within-scanner spread, before and after."""
    scanners = [run.scanner for run in runs]
    return {name: site_effect_change([run.value(name, "source") for run in runs],
                                     [run.value(name, "harmonized") for run in runs], scanners)
            for name in NUMERIC_METRICS}


# --- figures --------------------------------------------------------------------------------------

def before_after_figure(runs: Sequence[Run], scanners: Sequence[str], metric: str,
                        reference: tuple[float, str, str] | None = None) -> str:
    """Per scanner, box and strip plots of ``metric`` before and after, each run's two values
    joined by a line; ``reference`` (value, label, colour) is drawn as a dashed line. SVG text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt.rcParams["svg.hashsalt"] = "bids_harmony"  # the same data give the same file
    rng = np.random.default_rng(0)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.9 * len(scanners) + 2.0), 3.6))
    offsets = {"source": -0.2, "harmonized": 0.2}
    counts = []
    for position, scanner in enumerate(scanners):
        pairs = [(run.value(metric, "source"), run.value(metric, "harmonized")) for run in runs
                 if run.scanner == scanner]
        pairs = [pair for pair in pairs if pair != (None, None)]
        counts.append(len(pairs))
        jitter = rng.uniform(-0.07, 0.07, len(pairs))
        for (before, after), shift in zip(pairs, jitter):
            if before is not None and after is not None:
                axis.plot((position + offsets["source"] + shift, position + offsets["harmonized"] + shift),
                          (before, after), color="0.78", lw=0.7, zorder=1)
        for column, (which, offset) in enumerate(offsets.items()):
            shown = [(pair[column], shift) for pair, shift in zip(pairs, jitter) if pair[column] is not None]
            if not shown:
                continue
            values = [value for value, _ in shown]
            axis.boxplot(values, positions=[position + offset], widths=0.32, showfliers=False, patch_artist=True,
                         boxprops={"facecolor": COLOURS[which] + "33", "edgecolor": COLOURS[which]},
                         medianprops={"color": COLOURS[which], "lw": 2}, whiskerprops={"color": COLOURS[which]},
                         capprops={"color": COLOURS[which]}, zorder=2)
            axis.scatter([position + offset + shift for _, shift in shown], values, s=16, color=COLOURS[which],
                         edgecolors="white", linewidths=0.5, zorder=3)
    handles = [Patch(facecolor=COLOURS[which] + "33", edgecolor=COLOURS[which], label=LABELS[which])
               for which in offsets]
    if reference is not None:
        value, label, colour = reference
        axis.axhline(value, color=colour, lw=1, ls="--", zorder=0)
        handles.append(Line2D([], [], color=colour, lw=1, ls="--", label=label))
    axis.set_xticks(range(len(scanners)), [f"{textwrap.fill(scanner, 14)}\n(n={count})"
                                           for scanner, count in zip(scanners, counts)], fontsize=9)
    axis.set_xlim(-0.6, len(scanners) - 0.4)
    axis.set_ylabel(SHORT_NAMES[metric])
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(handles=handles, frameon=False, fontsize=9, loc="lower left", bbox_to_anchor=(0.0, 1.0),
                ncol=len(handles))
    figure.tight_layout()
    stream = io.StringIO()
    figure.savefig(stream, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(figure)
    return stream.getvalue()


def _threshold(runs: Sequence[Run]) -> float | None:
    """The target's bits/dim threshold, when every calibrated run was measured against the same one."""
    found = {(run.record or {}).get("thresholds", {}).get("bits_per_dim") for run in runs} - {None}
    return found.pop() if len(found) == 1 else None


def figures(runs: Sequence[Run], scanners: Sequence[str]) -> dict[str, str]:
    """The report's figures (file name -> SVG text); the distance to the target only for
    runs measured against a calibrated model."""
    threshold = _threshold(runs)
    reference = (threshold, "the target's out-of-distribution threshold", COLOURS["target"]) if threshold else None
    drawn = {f"group_{metric}.svg": before_after_figure(runs, scanners, metric,
                                                        reference if metric == "bits_per_dim" else None)
             for metric in FIGURE_METRICS}
    calibrated = [run for run in runs if run.value("wasserstein_to_target", "source") is not None]
    if calibrated:
        drawn["group_wasserstein_to_target.svg"] = before_after_figure(
            calibrated, sorted({run.scanner for run in calibrated}), "wasserstein_to_target")
    return drawn


# --- the report -----------------------------------------------------------------------------------

def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _share(value: float | None, signed: bool = False) -> str:
    """A share (or its change) to two decimals, with no "-0.00" from round-off."""
    return "n/a" if value is None else f"{round(value, 2) + 0.0:{'+' if signed else ''}.2f}"


def _interval(bounds: Sequence[float] | None, signed: bool = False) -> str:
    return f"[{_share(bounds[0], signed)}, {_share(bounds[1], signed)}]" if bounds else ""


def _scanner_rows(runs: Sequence[Run], scanners: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for scanner in scanners:
        members = [run for run in runs if run.scanner == scanner]
        fields = members[0].scanner_fields
        rows.append({"name": scanner, "runs": len(members), "subjects": len({run.subject for run in members}),
                     **{key: fields.get(key, "") for key in SCANNER_FIELDS}})
    return rows


def _models(runs: Sequence[Run], configurations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models the runs were harmonized with, and the target each was trained for (as the
    latest participant-level run with that model described it)."""
    targets = {str((configuration.get("model") or {}).get("sha256")): configuration.get("model_target")
               for configuration in configurations}
    found: dict[tuple[str, str], int] = {}
    for run in runs:
        model = (run.record or {}).get("model") or {}
        key = (str(model.get("file", "unknown")), str(model.get("sha256", "")))
        found[key] = found.get(key, 0) + 1
    return [{"file": file, "sha256": sha256[:12], "runs": count, "target": targets.get(sha256) or ""}
            for (file, sha256), count in sorted(found.items())]


def _subject_report(output_dir: Path, subject: str) -> str | None:
    """The subject's report, relative to the group report, when the participant level wrote one."""
    name = f"sub-{subject}.html"
    return name if (output_dir / name).is_file() else None


def _site_effect_row(name: str, change: SiteEffectChange) -> dict[str, Any]:
    before, after = change.before, change.after
    return {
        "metric": SHORT_NAMES[name], "runs": before.runs, "scanners": before.scanners,
        "share_before": _share(before.share), "interval_before": _interval(before.share_interval),
        "share_after": _share(after.share), "interval_after": _interval(after.share_interval),
        "change": _share(change.share_change, signed=True),
        "interval_change": _interval(change.share_change_interval, signed=True),
        "lowered": change.share_change_interval is not None and change.share_change_interval[1] < 0,
        "sd_before": _number(before.within_sd), "sd_after": _number(after.within_sd),
        "cv_before": _number(before.within_cv), "cv_after": _number(after.within_cv),
        "notes": sorted(set(before.notes) | set(after.notes)),
    }


def _site_effect_rows(effects: dict[str, SiteEffectChange]) -> dict[str, Any]:
    """The table's rows, with what applies to every measure (e.g. a scanner with one run) said once."""
    rows = [_site_effect_row(name, change) for name, change in effects.items()]
    shared = set.intersection(*(set(row["notes"]) for row in rows)) if rows else set()
    for row in rows:
        row["notes"] = [note for note in row["notes"] if note not in shared]
    return {"site_effect": rows, "site_effect_notes": sorted(shared)}


def _warnings(models: Sequence[dict[str, Any]], scanners: Sequence[str]) -> list[str]:
    """What makes the comparison weaker than it looks."""
    warnings = []
    if len(models) > 1:
        warnings.append(f"the runs were harmonized with {len(models)} different models: their QC is not comparable")
    if len(scanners) < 2:
        warnings.append("the runs come from one scanner only: there is no scanner effect to measure")
    if UNKNOWN_SCANNER in scanners:
        warnings.append("some sidecars name no scanner (ManufacturersModelName, StationName or DeviceSerialNumber): "
                        f"their runs are grouped as \"{UNKNOWN_SCANNER}\"")
    return warnings


def report_context(data: GroupData, effects: dict[str, SiteEffectChange], figure_names: Iterable[str],
                   output_dir: Path) -> dict[str, Any]:
    """What the template shows, as plain values."""
    measured = data.with_status(OK)
    scanners = data.scanners
    models = _models(measured, data.configurations)
    figure_names = set(figure_names)
    return {
        "version": __version__,
        "output_dir": str(output_dir),
        "counts": data.counts(),
        "scanners": _scanner_rows(measured, scanners),
        "models": models,
        "configurations": [{"run_uuid": configuration.get("run_uuid", ""), "started": configuration.get("started", ""),
                            "runs": sum(len(runs) for runs in (configuration.get("runs") or {}).values()),
                            "skip_qc": bool(configuration.get("skip_qc"))} for configuration in data.configurations],
        "warnings": _warnings(models, scanners),
        **_site_effect_rows(effects),
        "figures": [{"file": f"{FIGURES}/group_{metric}.svg", "metric": SHORT_NAMES[metric],
                     "description": METRICS[metric][0]} for metric in FIGURE_METRICS],
        "target_figure": (f"{FIGURES}/group_wasserstein_to_target.svg"
                          if "group_wasserstein_to_target.svg" in figure_names else None),
        "calibrated": sum(1 for run in measured if run.record.get("target_calibrated")),
        "flagged": [{"run": run.name, "subject": run.subject, "scanner": run.scanner,
                     "flags": [(flag, FLAGS.get(flag, "")) for flag in run.flags],
                     "report": _subject_report(output_dir, run.subject)} for run in measured if run.flags],
        "failed": [{"run": run.name, "subject": run.subject, "status": run.status, "problem": run.problem}
                   for run in data.with_status(FAILED) + data.with_status(MISSING)],
        "no_qc": [{"run": run.name, "subject": run.subject, "scanner": run.scanner} for run in data.with_status(NO_QC)],
        "metrics": [(SHORT_NAMES[name], METRICS[name][0]) for name in NUMERIC_METRICS],
    }


def render_report(context: dict[str, Any]) -> str:
    """``group_report.html`` from its template (``data/reports/group_report.html``): one file
    with its style inline, figures linked relatively, nothing fetched from the network."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parents[1] / "data" / "reports"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("group_report.html").render(**context)


@dataclass
class GroupOutcome:
    """What the group level read, and where it wrote the report and the table."""

    data: GroupData
    report: Path
    table: Path


def write_group_outputs(output_dir: str | Path, participant_labels: Sequence[str] | None = None,
                        session_labels: Sequence[str] | None = None) -> GroupOutcome:
    """Read the participant level's outputs, then write the table, figures and report (the
    report last, so a complete report means complete figures); figures of an earlier group
    run that this one does not draw are removed."""
    output_dir = Path(os.path.abspath(output_dir))
    data = collect(output_dir, participant_labels, session_labels)
    measured = data.with_status(OK)
    effects = site_effects(measured)
    drawn = figures(measured, data.scanners)
    table = group_table(data.runs)
    dictionary = json.dumps(table_dictionary(), indent=2) + "\n"
    html = render_report(report_context(data, effects, drawn, output_dir))

    (output_dir / FIGURES).mkdir(exist_ok=True)
    for name, svg in drawn.items():
        with atomic_write(output_dir / FIGURES / name, "w") as stream:
            stream.write(svg)
    for stale in (output_dir / FIGURES).glob("group_*.svg"):
        if stale.name not in drawn:
            stale.unlink()
    for name, text in ((TABLE, table), (TABLE.replace(".tsv", ".json"), dictionary), (REPORT, html)):
        with atomic_write(output_dir / name, "w") as stream:
            stream.write(text)
    return GroupOutcome(data=data, report=output_dir / REPORT, table=output_dir / TABLE)
