"""Model files: a trained flow with everything needed to use it safely elsewhere.

A model file (``torch.save`` of plain tensors and JSON-able values, loaded with
``weights_only=True``) holds the flow's architecture and weights, the preprocessing that made
its training slices, the target domain's identity (the selection and a summary of the
scanners), training metadata, and the target-domain statistics the harmonizer needs: the mean
target slice and intensity quantiles at every slice position; from format 2, optionally, the
QC calibration measured on held-out target subjects (:mod:`bids_harmony.qc.calibration`).
A SHA-256 of every tensor's bytes is stored too, so a damaged file is refused instead of
silently producing wrong images.
Files are written atomically (temporary file, then rename).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nflows.flows import Flow

from ..atomic import atomic_write, file_sha256
from ..errors import ModelError
from ..preprocessing import PreprocessingConfig
from .architecture import FlowConfig, build_flow

FORMAT = "bids_harmony-model"
FORMAT_VERSION = 2  # 2 adds the optional QC calibration
_REQUIRED = ("format", "format_version", "flow_config", "shape", "preprocessing", "target",
             "training", "statistics", "state_dict", "checksum")


@dataclass
class HarmonyModel:
    """A trained target-domain flow, its preprocessing and target statistics."""

    flow: Flow
    flow_config: FlowConfig
    shape: tuple[int, int, int]
    preprocessing: PreprocessingConfig
    mean_slices: np.ndarray  # (n_positions, H, W) float32 in [0, 1]
    quantiles: np.ndarray  # (n_positions, n_quantiles) of the head's normalised intensities
    target: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # QC reference of held-out target subjects
    path: Path | None = None
    sha256: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.flow.parameters()).device

    def to(self, device: str | torch.device) -> "HarmonyModel":
        self.flow.to(device)
        return self


def _tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else
                      tensor.float().numpy().tobytes())
    return digest.hexdigest()


def _payload_tensors(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    tensors = {f"state_dict/{key}": value for key, value in payload["state_dict"].items()}
    tensors.update({f"statistics/{key}": value for key, value in payload["statistics"].items()})
    return tensors


def _plain(value: Any) -> Any:
    """JSON-able copy: what ``torch.load(weights_only=True)`` accepts, whatever the caller put in."""

    def builtin(item: Any) -> Any:
        if isinstance(item, np.generic):
            return item.item()
        if isinstance(item, np.ndarray):
            return item.tolist()
        return str(item)

    return json.loads(json.dumps(value, default=builtin))


def save_model(model: HarmonyModel, path: str | Path) -> str:
    """Write ``model`` atomically; returns the file's SHA-256."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flow_config": model.flow_config.to_dict(),
        "shape": list(model.shape),
        "preprocessing": model.preprocessing.to_dict(),
        "target": _plain(model.target),
        "training": _plain(model.training),
        "calibration": _plain(model.calibration),
        "statistics": {
            "mean_slices": torch.from_numpy(np.asarray(model.mean_slices, dtype=np.float16)),
            "quantiles": torch.from_numpy(np.asarray(model.quantiles, dtype=np.float16)),
        },
        "state_dict": {key: value.detach().cpu() for key, value in model.flow.state_dict().items()},
    }
    payload["checksum"] = _tensor_checksum(_payload_tensors(payload))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as stream:
        torch.save(payload, stream)
    return file_sha256(path)


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> HarmonyModel:
    """Load and check a model file (default: the bundled demo model)."""
    path = Path(path) if path is not None else bundled_model_path()
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        detail = type(error).__name__
        if "not an allowed global" in str(error) or "Unsupported global" in str(error):
            detail = ("it holds Python objects, which a model file may not; they were not loaded, "
                      "as loading them could run code")
        raise ModelError(f"{path}: not a readable bids_harmony model file ({detail})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a bids_harmony model file")
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise ModelError(f"{path}: model file lacks {', '.join(missing)}")
    if payload["format_version"] > FORMAT_VERSION:
        raise ModelError(f"{path}: model file format {payload['format_version']} is newer than this "
                         f"bids_harmony understands ({FORMAT_VERSION}); upgrade bids_harmony")
    if _tensor_checksum(_payload_tensors(payload)) != payload["checksum"]:
        raise ModelError(f"{path}: model file is corrupt (checksum mismatch)")
    try:
        flow_config = FlowConfig.from_dict(payload["flow_config"])
        preprocessing = PreprocessingConfig.from_dict(payload["preprocessing"])
        shape = tuple(int(n) for n in payload["shape"])
        flow = build_flow(flow_config, shape)
        flow.load_state_dict(payload["state_dict"], strict=True)
    except (ValueError, TypeError, RuntimeError) as error:
        message = str(error).splitlines()[0]
        raise ModelError(f"{path}: model file does not match its architecture ({message})") from None
    mean_slices = payload["statistics"]["mean_slices"].float().numpy()
    quantiles = payload["statistics"]["quantiles"].float().numpy()
    expected = (preprocessing.n_positions,) + tuple(preprocessing.slice_shape)
    if shape[1:] != tuple(preprocessing.slice_shape) or mean_slices.shape != expected:
        raise ModelError(f"{path}: target statistics {mean_slices.shape} do not match the slice grid "
                         f"{expected} of the model")
    if quantiles.shape[0] != preprocessing.n_positions:
        raise ModelError(f"{path}: intensity quantiles do not match the slice grid of the model")
    flow.eval()
    model = HarmonyModel(flow, flow_config, shape, preprocessing, mean_slices, quantiles,
                         payload["target"], payload["training"], payload.get("calibration"), path,
                         file_sha256(path))
    return model.to(device)


def bundled_model_path() -> Path:
    """The demo model shipped inside the package (trained on simulated target-scanner data)."""
    return Path(str(resources.files("bids_harmony") / "data" / "demo_model.pt"))
