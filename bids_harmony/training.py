"""Maximum-likelihood training of the target-domain flow (seed 2.1, METHOD.md).

Adam, learning rate 5e-4 with cosine annealing to 0, 12-bit uniform dequantisation, batches
drawn at random from the slices of the training subjects; validation bits/dim on held-out
subjects. Checkpoints hold the weights, the optimiser and scheduler, and both random
generators, so ``resume`` continues the very same trajectory.

Several processes (``torchrun``, one per GPU, or gloo on CPU) train one model with
DistributedDataParallel: every process draws the same global batch (and dequantisation noise)
and takes its share, batch norm uses whole-batch statistics (``distributed.GlobalBatchNorm2d``),
and the data-dependent ActNorm initialisation sees the same batch everywhere: N processes train
the model one process would.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from nflows.flows import Flow
from torch import nn
from tqdm import tqdm

from .atomic import atomic_write
from .distributed import global_batch_norm
from .model import bits_per_dim, from_flow_output, to_flow_input
from .slice_cache import SliceStore

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the weights of the lowest validation bits/dim so far (``keep_best``)
LOG = "training_log.csv"


@dataclass(frozen=True)
class TrainingSettings:
    steps: int = 20_000
    batch_size: int = 256
    learning_rate: float = 5e-4
    validation_every: int = 500
    checkpoint_every: int = 500
    validation_slices: int = 256
    seed: int = 0
    num_bits: int = 12
    clip_grad_norm: float | None = None
    keep_best: bool = False  # end with the weights of the best validation, as the authors do


def best_validation(history: list[dict]) -> dict:
    """The validation row with the lowest bits/dim (the first of equals)."""
    return min(history, key=lambda row: row["val_bpd"])


class _NegativeLogLikelihood(nn.Module):
    """The loss as a module's forward, which is what DistributedDataParallel wraps."""

    def __init__(self, flow: Flow):
        super().__init__()
        self.flow = flow

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return -self.flow.log_prob(images).mean()


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batch(store: SliceStore, rows: np.ndarray, device: torch.device, num_bits: int,
           generator: torch.Generator, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This process's share of a batch, dequantised with noise drawn for the whole batch.

    Every process draws the same noise, so the union of the shares is exactly the batch a
    single process would train on.
    """
    noise = torch.rand((len(rows), 1) + store.slice_shape, generator=generator)[rank::world]
    slices = torch.from_numpy(store.read(rows[rank::world]))[:, None]
    return to_flow_input(slices, num_bits, dequantize=True, noise=noise).to(device)


def validation_rows(store: SliceStore, count: int) -> np.ndarray:
    """A fixed, evenly spread subset of the validation slices."""
    if len(store) <= count:
        return np.arange(len(store))
    return np.unique(np.linspace(0, len(store) - 1, count).round().astype(np.int64))


@torch.no_grad()
def evaluate_bits_per_dim(flow: Flow, store: SliceStore, rows: np.ndarray, device: torch.device,
                          num_bits: int = 12, batch_size: int = 64, seed: int = 1234) -> float:
    """Mean bits/dim over ``rows`` in eval mode, with the same dequantisation noise every time."""
    was_training = flow.training
    flow.eval()
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    shape = (1,) + store.slice_shape
    for start in range(0, len(rows), batch_size):
        images = _batch(store, rows[start:start + batch_size], device, num_bits, generator)
        total += float(bits_per_dim(flow.log_prob(images), shape, num_bits).sum())
        count += len(images)
    flow.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def sample_slices(flow: Flow, count: int, temperature: float, seed: int = 0) -> np.ndarray:
    """Slices in [0, 1] drawn with the base distribution's sd scaled by ``temperature``."""
    was_training = flow.training
    flow.eval()
    device = next(flow.parameters()).device
    dimensions = flow._distribution._shape[0]
    noise = torch.randn(count, dimensions, generator=torch.Generator().manual_seed(seed)) * temperature
    images, _ = flow._transform.inverse(noise.to(device))
    flow.train(was_training)
    return from_flow_output(images).cpu().numpy()[:, 0]


def save_samples_figure(flow: Flow, path: str | Path, temperatures=(0.7, 1.0), per_row: int = 8,
                        seed: int = 0) -> None:
    """One row of samples per temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(temperatures), per_row, figsize=(1.3 * per_row, 1.6 * len(temperatures)))
    axes = np.asarray(axes).reshape(len(temperatures), per_row)
    for row, temperature in enumerate(temperatures):
        samples = sample_slices(flow, per_row, temperature, seed=seed + row)
        for column in range(per_row):
            axes[row, column].imshow(samples[column].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            axes[row, column].axis("off")
        axes[row, 0].set_title(f"T = {temperature}", fontsize=8, loc="left")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_write(path) as stream:
        torch.save(state, stream)


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_write(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["step", "train_bpd", "val_bpd", "learning_rate", "seconds"])
        writer.writeheader()
        writer.writerows(history)


def train_flow(
    flow: Flow,
    train_store: SliceStore,
    validation_store: SliceStore,
    settings: TrainingSettings,
    work_dir: str | Path,
    device: torch.device,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> list[dict]:
    """Train ``flow`` in place; returns the history (one row per validation).

    ``stop_after`` ends this run at that step, checkpointed, for jobs under a wall-time limit
    (continue with ``resume``). With ``settings.keep_best`` the flow ends with the weights of its
    best validation (:func:`best_validation`), kept in the work dir as they come.
    """
    rank, world = _distributed()
    if settings.batch_size % world:
        raise ValueError(f"batch size {settings.batch_size} is not divisible by {world} processes")
    if len(train_store) == 0 or len(validation_store) == 0:
        raise ValueError("no training or no validation slices")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, log_path = work_dir / CHECKPOINT, work_dir / LOG
    shape = (1,) + train_store.slice_shape

    flow.to(device).train()
    batch_rng = np.random.Generator(np.random.PCG64(settings.seed))
    dequantisation = torch.Generator().manual_seed(settings.seed)
    module: nn.Module = _NegativeLogLikelihood(flow)
    if world > 1:
        # batch statistics over the whole batch, as a single process would compute them
        module = global_batch_norm(module)
    optimizer = torch.optim.Adam(flow.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps, eta_min=0.0)
    history: list[dict] = []
    step, elapsed = 0, 0.0
    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        flow.load_state_dict(state["flow"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batch_rng.bit_generator.state = state["batch_rng"]
        dequantisation.set_state(state["dequantisation"])
        history, step, elapsed = state["history"], state["step"], state["seconds"]
        log(f"resuming at step {step} of {settings.steps}")
    else:
        if resume:
            log(f"no checkpoint in {work_dir}: starting from scratch")
        # data-dependent ActNorm initialisation on one batch every process shares
        init_rows = np.random.Generator(np.random.PCG64(settings.seed + 1)).integers(
            0, len(train_store), size=min(settings.batch_size, 512))
        with torch.no_grad():
            flow.log_prob(_batch(train_store, init_rows, device, settings.num_bits, torch.Generator().manual_seed(0)))

    if world > 1:
        module = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    validation = validation_rows(validation_store, settings.validation_slices)
    bar = tqdm(total=settings.steps, initial=step, desc="training", unit="step",
               disable=not progress or rank != 0, file=sys.stderr)
    running = []
    started = time.perf_counter() - elapsed
    final = settings.steps if stop_after is None else min(stop_after, settings.steps)
    while step < final:
        rows = batch_rng.integers(0, len(train_store), size=settings.batch_size)
        images = _batch(train_store, rows, device, settings.num_bits, dequantisation, rank, world)
        loss = module(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad_norm:
            nn.utils.clip_grad_norm_(flow.parameters(), settings.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        reported = loss.detach()
        if world > 1:  # the whole batch's loss, not this process's share
            dist.all_reduce(reported)
            reported /= world
        train_bpd = float(bits_per_dim(-reported, shape, settings.num_bits))
        if not math.isfinite(train_bpd):
            raise FloatingPointError(f"training diverged at step {step} (loss {float(loss)})")
        running.append(train_bpd)
        bar.update()
        bar.set_postfix(bpd=f"{train_bpd:.3f}")
        last = step == settings.steps
        if step % settings.validation_every == 0 or last:
            if rank == 0:
                val_bpd = evaluate_bits_per_dim(flow, validation_store, validation, device, settings.num_bits)
                history.append({"step": step, "train_bpd": round(float(np.mean(running)), 5),
                                "val_bpd": round(val_bpd, 5), "learning_rate": scheduler.get_last_lr()[0],
                                "seconds": round(time.perf_counter() - started, 1)})
                _write_log(log_path, history)
                if settings.keep_best and best_validation(history) is history[-1]:
                    _save_checkpoint(work_dir / BEST, {"step": step, "val_bpd": val_bpd, "flow": flow.state_dict()})
                bar.write(f"step {step}: train {history[-1]['train_bpd']:.4f} bits/dim, "
                          f"validation {val_bpd:.4f} bits/dim", file=sys.stderr)
            running = []
        if (step % settings.checkpoint_every == 0 or step == final) and rank == 0:
            _save_checkpoint(checkpoint_path, {
                "step": step,
                "flow": flow.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "batch_rng": batch_rng.bit_generator.state,
                "dequantisation": dequantisation.get_state(),
                "history": history,
                "seconds": time.perf_counter() - started,
                "settings": dataclasses.asdict(settings),
            })
    bar.close()
    if settings.keep_best and step == settings.steps and rank == 0:
        flow.load_state_dict(torch.load(work_dir / BEST, map_location=device, weights_only=True)["flow"])
    return history


@torch.no_grad()
def gaussian_baseline_bits_per_dim(train_store: SliceStore, validation_store: SliceStore, rows: np.ndarray,
                                   num_bits: int = 12, chunk: int = 256, seed: int = 1234) -> float:
    """Bits/dim of an independent per-pixel Gaussian fitted to the training slices.

    The trivial density a flow must beat clearly; same data, same dequantisation as
    :func:`evaluate_bits_per_dim`.
    """
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros((1,) + train_store.slice_shape, dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(train_store), chunk):
        images = _batch(train_store, np.arange(start, min(start + chunk, len(train_store))), torch.device("cpu"),
                        num_bits, generator).double()
        total += images.sum(0)
        squares += (images**2).sum(0)
    mean = total / len(train_store)
    variance = (squares / len(train_store) - mean**2).clamp_min(1e-8)
    generator = torch.Generator().manual_seed(seed)
    bits, count = 0.0, 0
    shape = (1,) + train_store.slice_shape
    for start in range(0, len(rows), chunk):
        images = _batch(validation_store, rows[start:start + chunk], torch.device("cpu"), num_bits, generator).double()
        log_density = -0.5 * (((images - mean) ** 2) / variance + torch.log(2 * math.pi * variance))
        bits += float(bits_per_dim(log_density.flatten(1).sum(1), shape, num_bits).sum())
        count += len(images)
    return bits / max(count, 1)
