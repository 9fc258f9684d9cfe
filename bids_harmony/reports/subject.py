"""The per-subject HTML report ``OUTPUT_DIR/sub-<label>.html``, NiPreps style.

What the participant level wrote (figures, QC records, sidecars, its configuration, crash files)
becomes HTML fragments under ``sub-<label>/figures/``; nireports' :class:`Report` then assembles
them with our own spec and an offline template (nireports' default loads its layout from CDNs).
Nothing is recomputed, so ``--reports-only`` rebuilds the same report from the output folder.
"""
from __future__ import annotations

import html
import json
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import SettingsError
from ..settings import HarmonizationParams

#: What each flag of ``desc-qc_metrics.json`` means, for the metrics table.
FLAG_MEANINGS = {
    "not_t1w_like": "the source does not order its tissues as a T1w does",
    "contrast_reversed": "the harmonized white matter is not brighter than the grey matter",
    "anatomy_changed": "source and harmonized white matter overlap too little (Dice)",
    "banding_increased": "harmonization added banding between slices",
    "harmonized_out_of_distribution": "the harmonized image is not target-like by the flow's likelihood",
}
#: Rows of the metrics table: key -> (label, decimals).
METRIC_ROWS = {
    "gm_volume_ml": ("GM volume (ml)", 1), "wm_volume_ml": ("WM volume (ml)", 1),
    "csf_volume_ml": ("CSF volume (ml)", 1), "wm_gm_contrast": ("WM/GM contrast (median ratio)", 3),
    "wm_gm_cnr": ("WM/GM CNR", 3), "csf_wm_contrast": ("CSF/WM contrast (median ratio)", 3),
    "wm_intensity_normalised": ("WM median / brain median", 3),
    "bits_per_dim": ("target flow's bits/dim (median slice)", 3),
    "ood_fraction": ("slices above the target's threshold", 3),
    "slice_banding": ("slice banding", 4),
    "wasserstein_to_target": ("distance to the target's brain intensities (W1)", 4),
}


def latest_configuration(output_dir: Path, subject: str) -> dict[str, Any] | None:
    """The configuration of the latest run that selected ``subject``."""
    from .group import read_configurations

    chosen = None
    for config in read_configurations(output_dir):
        if subject in config.get("runs", {}):
            chosen = config
    return chosen


def report_subjects(output_dir: Path) -> list[str]:
    """Subjects with participant-level outputs in ``output_dir``."""
    return sorted(path.name.removeprefix("sub-") for path in output_dir.glob("sub-*") if path.is_dir())


def _format(value: Any, decimals: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{decimals}f}"


def _table(rows: list[list[str]], header: list[str] | None = None) -> str:
    head = "<thead><tr>" + "".join(f"<th>{cell}</th>" for cell in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def metrics_fragment(record: dict[str, Any]) -> str:
    """The metrics table of one run (source vs harmonized) and its flags, as HTML."""
    metrics = record["metrics"]
    rows = [[label, _format(metrics["source"].get(key), decimals), _format(metrics["harmonized"].get(key), decimals)]
            for key, (label, decimals) in METRIC_ROWS.items()]
    rows.append(["WM Dice, source vs harmonized", "", _format(metrics["wm_dice_source_harmonized"], 3)])
    rows.append(["tissue-order agreement with the target's T1w", _format(metrics["contrast_agreement"], 3), ""])
    flags = record["flags"]
    raised = [name for name, value in flags.items() if value]
    flag_rows = [[f'<span class="{"flag" if flags[name] else "ok"}">{"FLAG" if flags[name] else "ok"}</span>',
                  html.escape(name), html.escape(FLAG_MEANINGS.get(name, ""))] for name in flags]
    calibration = ("" if record.get("target_calibrated") else
                   '<p class="alert alert-warning">The model file carries no QC calibration: no target '
                   "threshold for bits/dim and no target reference for the intensity distance.</p>")
    summary = (f'<p class="alert alert-danger">{len(raised)} flag(s): {", ".join(map(html.escape, raised))}</p>'
               if raised else '<p class="alert alert-success">No flags.</p>')
    return (summary + calibration + _table(rows, ["", "source", "harmonized"])
            + _table(flag_rows, ["", "flag", "meaning"]))


def _sidecar(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _scanner(scanner: dict[str, Any]) -> str:
    parts = [str(scanner[key]) for key in ("Manufacturer", "ManufacturersModelName", "StationName") if key in scanner]
    if "MagneticFieldStrength" in scanner:
        parts.append(f"{scanner['MagneticFieldStrength']} T")
    return html.escape(" ".join(parts)) or "unknown (no scanner fields in the sidecar)"


def _method(parameters: dict[str, Any]) -> str:
    """The named method the run's settings come from, what they change, and our additions on."""
    try:
        params = HarmonizationParams.from_dict(parameters)
    except SettingsError:
        return "n/a (settings of another bids_harmony version)"
    name, changed = params.method()
    additions = params.additions()
    return html.escape(name + (f" with {', '.join(f'{key}={value}' for key, value in changed.items())}"
                               if changed else "")
                       + (f"; our additions on: {', '.join(additions)}" if additions else "; none of our additions"))


def summary_fragment(subject: str, config: dict[str, Any] | None, harmonized: list[Path]) -> str:
    """Inputs, scanner, model and its target, device, run time and warnings, as HTML."""
    rows = [["Subject", f"sub-{html.escape(subject)}"]]
    if config:
        runs = config["runs"].get(subject, [])
        rows.append(["T1w runs", "<br>".join(html.escape(Path(run).name) for run in runs)])
        rows.append(["Model", f"{html.escape(str(config['model']['file']))} (sha256 "
                              f"{html.escape(str(config['model']['sha256'])[:12])}...)"])
        rows.append(["Model target", html.escape(str(config.get("model_target", "n/a")))])
        rows.append(["Harmonization method", _method(config.get("harmonization") or {})])
        rows.append(["Device", html.escape(str(config.get("device", "n/a")))])
        seconds = config.get("seconds")
        rows.append(["Run", f"{html.escape(str(config.get('started', 'n/a')))}"
                            + (f", {seconds / 60:.1f} min wall (all subjects of the run)" if seconds else "")])
        rows.append(["QC", "skipped (--skip-qc)" if config.get("skip_qc") else "WM segmentation QC"])
    warnings = []
    for path in harmonized:
        sidecar = _sidecar(path)
        rows.append([f"Scanner of {html.escape(path.name.split('_desc-')[0])}",
                     _scanner(sidecar.get("SourceScanner", {}))])
        warnings += [f"{path.name.split('_desc-')[0]}: {warning}" for warning in sidecar.get("Warnings", [])]
    rows.append(["Warnings", "<br>".join(html.escape(w) for w in warnings) or "none"])
    return _table(rows)


def about_fragment(config: dict[str, Any] | None) -> str:
    """Provenance: versions, command, run identifier and settings, as HTML."""
    if not config:
        return "<p>No configuration of the run was found (logs/config-*.json).</p>"
    rows = [["bids_harmony", html.escape(str(config.get("bids_harmony")))],
            ["Command", f"<code>{html.escape(' '.join(map(str, config.get('command', []))))}</code>"],
            ["Run identifier", html.escape(str(config.get("run_uuid")))],
            ["Harmonization settings", f"<code>{html.escape(json.dumps(config.get('harmonization')))}</code>"],
            ["Report written", datetime.now().isoformat(timespec="seconds")]]
    return _table(rows)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as stream:
        stream.write(text + "\n")


def write_fragments(output_dir: Path, subject: str) -> dict[str, Any] | None:
    """The HTML fragments of ``subject``'s report under ``sub-<label>/figures/``; returns the
    configuration of its latest run."""
    subject_dir = output_dir / f"sub-{subject}"
    figures = subject_dir / "figures"
    config = latest_configuration(output_dir, subject)
    harmonized = sorted(subject_dir.glob("**/anat/*_desc-harmonized_T1w.json"))
    harmonized = [path for path in harmonized if "_res-" not in path.name]
    _write(figures / f"sub-{subject}_desc-summary_T1w.html", summary_fragment(subject, config, harmonized))
    _write(figures / f"sub-{subject}_desc-about_T1w.html", about_fragment(config))
    for metrics_file in sorted(subject_dir.glob("**/anat/*_desc-qc_metrics.json")):
        stem = metrics_file.name.removesuffix("_desc-qc_metrics.json")
        _write(figures / f"{stem}_desc-qcmetrics_T1w.html", metrics_fragment(json.loads(metrics_file.read_text())))
    return config


def generate_subject_report(output_dir: str | Path, subject: str) -> Path:
    """Write ``OUTPUT_DIR/sub-<label>.html`` from what the participant level wrote."""
    from nireports.assembler.report import Report

    output_dir = Path(output_dir)
    config = write_fragments(output_dir, subject)
    data = resources.files("bids_harmony") / "data" / "reports"
    out_file = output_dir / f"sub-{subject}.html"
    Report(str(output_dir), (config or {}).get("run_uuid"), bootstrap_file=str(data / "subject.yml"),
           out_filename=str(out_file), subject=subject,
           metadata={"template_path": str(data / "report.tpl")}).generate_report()
    return out_file
