"""What makes the output folder a BIDS Derivatives dataset: its description, ``.bidsignore``,
BIDS URIs and the sidecars of the harmonized images."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..__about__ import software_versions
from ..atomic import atomic_write, file_sha256
from ..settings import HarmonizationParams
from .description import dataset_description
from .paths import sidecar_path

#: Files the validator has no rule for (ECOSYSTEM.md, bids-validator-deno 3.0): reports, logs,
#: figures, crash files, group tables, transforms and metrics without a data file.
BIDSIGNORE = ("*.html", "logs", "figures", "sub-*/log", "group_*", "*_xfm.*", "*_metrics.json")
RAW_DATASET = "raw"


def bids_uri(path: str | Path, bids_dir: str | Path, dataset: str = RAW_DATASET) -> str:
    """``bids:<dataset>:<path relative to the dataset>`` (the dataset is named in DatasetLinks)."""
    relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(bids_dir))
    return f"bids:{dataset}:{relative.as_posix()}"


def derivative_path(source_file: str | Path, bids_dir: str | Path, output_dir: str | Path, ending: str) -> Path:
    """``<output_dir>/<the source's folder>/<its entities>_<ending>``, e.g. ``ending`` =
    ``desc-qc_metrics.json`` (for names niworkflows' sink has no pattern for)."""
    relative = Path(os.path.abspath(source_file)).relative_to(os.path.abspath(bids_dir))
    stem = relative.name.split(".nii")[0].removesuffix("_T1w")
    return Path(output_dir) / relative.parent / f"{stem}_{ending}"


def harmonized_t1w_path(source_file: str | Path, bids_dir: str | Path, output_dir: str | Path) -> Path:
    """Where the native-grid harmonized T1w of ``source_file`` is published."""
    return derivative_path(source_file, bids_dir, output_dir, "desc-harmonized_T1w.nii.gz")


def container() -> dict[str, str] | None:
    """The container this runs in, as BIDS ``GeneratedBy.Container`` (Apptainer or our image)."""
    for variable, kind in (("APPTAINER_CONTAINER", "apptainer"), ("SINGULARITY_CONTAINER", "singularity")):
        if os.environ.get(variable):
            return {"Type": kind, "URI": os.environ[variable]}
    if os.environ.get("BIDS_HARMONY_CONTAINER_TAG"):  # set in the image (Dockerfile)
        return {"Type": "docker", "Tag": os.environ["BIDS_HARMONY_CONTAINER_TAG"]}
    return None


#: The QC segmentations' descriptions: each ``desc-<name>_dseg`` gets a root ``desc-<name>_dseg.tsv``.
DSEG_DESCRIPTIONS = ("source", "harmonized")


def write_output_description(output_dir: str | Path, bids_dir: str | Path, source_name: str | None,
                             label_values: dict[str, int] | None = None) -> None:
    """``dataset_description.json`` and ``.bidsignore`` of the output folder (atomically), and,
    with ``label_values`` (tissue -> label), the ``desc-*_dseg.tsv`` tables of the QC segmentations."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    content = dataset_description(
        name=f"bids_harmony: BlindHarmony-harmonized T1w of {source_name or Path(bids_dir).name}",
        generated_by="bids_harmony",
        description="T1-weighted images harmonized to a target scanner with BlindHarmony",
        source_datasets=[{"URL": Path(os.path.abspath(bids_dir)).as_uri()}],
        dataset_links={RAW_DATASET: Path(os.path.abspath(bids_dir)).as_uri()},
    )
    found = container()
    if found:
        content["GeneratedBy"][0]["Container"] = found
    with atomic_write(output_dir / "dataset_description.json", "w") as stream:
        stream.write(json.dumps(content, indent=2) + "\n")
    with atomic_write(output_dir / ".bidsignore", "w") as stream:
        stream.write("\n".join(BIDSIGNORE) + "\n")
    if label_values:
        rows = "".join(f"{value}\t{name}\n" for name, value in sorted(label_values.items(), key=lambda item: item[1]))
        for description in DSEG_DESCRIPTIONS:
            with atomic_write(output_dir / f"desc-{description}_dseg.tsv", "w") as stream:
                stream.write("index\tname\n" + rows)


#: The source sidecar's keys that identify its scanner (the group level groups runs by them).
SCANNER_FIELDS = ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "DeviceSerialNumber",
                  "StationName")


def _source_metadata(source_file: str | Path) -> dict[str, Any]:
    source_sidecar = sidecar_path(source_file)
    return json.loads(source_sidecar.read_text()) if source_sidecar.is_file() else {}


def source_scanner(source_file: str | Path) -> dict[str, Any]:
    """The scanner of ``source_file`` as its JSON sidecar names it (:data:`SCANNER_FIELDS`)."""
    metadata = _source_metadata(source_file)
    return {key: metadata[key] for key in SCANNER_FIELDS if key in metadata}


def _method_summary(parameters: dict[str, Any]) -> dict[str, Any]:
    """The named method the settings come from, what was changed, and our additions switched on."""
    params = HarmonizationParams.from_dict(parameters)
    name, changed = params.method()
    return {"Name": name, "Changed": changed, "AdditionsToThePaper": params.additions()}


def harmonized_sidecar(*, source_file: str, bids_dir: str, model_file: str, parameters: dict[str, Any],
                       device: str, contrast_agreement: float | None, warnings: list[str],
                       skull_stripped: bool) -> dict[str, Any]:
    """The JSON sidecar of a harmonized T1w: where it came from and how it was made."""
    source_metadata = _source_metadata(source_file)
    return {
        "Sources": [bids_uri(source_file, bids_dir)],
        "SourceSHA256": file_sha256(source_file),
        "SkullStripped": bool(source_metadata.get("SkullStripped", skull_stripped)),
        "Description": "T1w harmonized to the model's target scanner with BlindHarmony (bids_harmony)",
        "HarmonizationModel": {"File": os.path.basename(model_file), "SHA256": file_sha256(model_file)},
        "HarmonizationMethod": _method_summary(parameters),
        "HarmonizationParameters": parameters,
        "ContrastAgreement": contrast_agreement,
        "Warnings": list(warnings),
        "Device": device,
        "HarmonizationSoftware": software_versions(),  # not "SoftwareVersions": BIDS means the scanner's
        "SourceScanner": source_scanner(source_file),
    }
