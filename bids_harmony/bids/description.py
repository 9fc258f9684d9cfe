"""``dataset_description.json`` contents for the datasets bids_harmony writes."""
from __future__ import annotations

from ..__about__ import __version__

BIDS_VERSION = "1.10.0"


def dataset_description(
    name: str,
    generated_by: str,
    description: str,
    dataset_type: str = "derivative",
    source_datasets: list[dict] | None = None,
    dataset_links: dict[str, str] | None = None,
    license_text: str | None = None,
) -> dict:
    """A description with ``GeneratedBy`` naming this package's command and version."""
    content: dict = {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": dataset_type,
        "GeneratedBy": [
            {
                "Name": generated_by,
                "Version": __version__,
                "Description": description,
            }
        ],
    }
    if license_text:
        content["License"] = license_text
    if source_datasets:
        content["SourceDatasets"] = source_datasets
    if dataset_links:
        content["DatasetLinks"] = dataset_links
    return content
