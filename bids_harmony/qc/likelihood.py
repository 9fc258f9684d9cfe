"""How target-like an image is: the target flow's bits/dim of its slices.

A flow trained on one scanner gives that scanner's slices few bits per dimension and other
scanners' slices more; the threshold that separates them is measured on the target scanner's
own held-out subjects (:mod:`bids_harmony.qc.calibration`), never guessed.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..model import HarmonyModel, bits_per_dim, to_flow_input


@torch.no_grad()
def slice_bits_per_dim(slices: np.ndarray, model: HarmonyModel, batch_size: int = 16) -> np.ndarray:
    """Bits/dim of each (H, W) slice in [0, 1] (values outside are clipped) under ``model``'s flow.

    Deterministic: each value stands for the centre of its quantisation bin (no dequantisation
    noise), as in harmonization.
    """
    slices = np.clip(np.asarray(slices, dtype=np.float32), 0.0, 1.0)
    if slices.ndim != 3 or slices.shape[1:] != tuple(model.shape[1:]):
        raise ValueError(f"slices of shape {slices.shape} do not fit the model's {tuple(model.shape[1:])}")
    num_bits = model.flow_config.num_bits
    was_training = model.flow.training
    model.flow.eval()
    bits = []
    for start in range(0, len(slices), batch_size):
        batch = torch.from_numpy(slices[start:start + batch_size]).to(model.device)[:, None]
        log_prob = model.flow.log_prob(to_flow_input(batch, num_bits))
        bits.append(bits_per_dim(log_prob, model.shape, num_bits).cpu().numpy())
    model.flow.train(was_training)
    return np.concatenate(bits).astype(np.float64) if bits else np.zeros(0)


def likelihood_summary(bits: np.ndarray, threshold: float | None) -> dict[str, float | bool | None]:
    """A run's score (the median of its slices' bits/dim), the share of its slices above the
    target's threshold, and whether the run as a whole lies above it (``None`` without one)."""
    bits = np.asarray(bits, dtype=np.float64)
    if not len(bits) or not np.all(np.isfinite(bits)):
        raise ValueError("bits/dim needs at least one slice with a finite value")
    median = float(np.median(bits))
    if threshold is None or not math.isfinite(threshold):
        return {"bits_per_dim": median, "ood_fraction": None, "out_of_distribution": None}
    return {"bits_per_dim": median, "ood_fraction": float(np.mean(bits > threshold)),
            "out_of_distribution": bool(median > threshold)}
