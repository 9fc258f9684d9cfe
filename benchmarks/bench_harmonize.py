"""Seconds per volume of BlindHarmony (``harmonize_image``) on this machine; print the figures.

Usage: python benchmarks/bench_harmonize.py T1W_NIFTI [--model PATH] [--preset paper|small]
                                            [--device auto|cpu|cuda] [--threads N] [--repeats 3]

Times one whole volume: the shared preprocessing (rigid placement, resampling), the
optimisation over every valid slice (default parameters, ``batch_size`` slices at a time) and the
way back to the native grid, and the optimisation alone. ``--preset`` replaces the model's flow
by an untrained one of that preset (same grid and statistics): the speed of the ``paper``
preset does not depend on its weights. Peak memory: process peak RSS and, on CUDA,
``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import peak_rss_mb, timed  # noqa: E402

from bids_harmony.cli.common import resolve_device  # noqa: E402
from bids_harmony.harmonize import harmonize_image, harmonize_slices  # noqa: E402
from bids_harmony.model import build_flow, load_model  # noqa: E402
from bids_harmony.preprocessing import to_slices  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="a T1w NIfTI")
    parser.add_argument("--model", help="model file (default: the bundled demo model)")
    parser.add_argument("--preset", choices=("paper", "small"), help="time an untrained flow of this preset")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model(args.model)
    if args.preset:
        model.flow = build_flow(args.preset, model.shape)
    model.to(device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset "
          f"{args.preset or model.training.get('preset', '?')}")
    slices, geometry = to_slices(args.image, model.preprocessing)
    valid = geometry.valid
    print(f"{args.image}: {int(valid.sum())} valid slices of {len(valid)}")

    optimisation, _ = timed(lambda: harmonize_slices(slices[valid], model, geometry.positions[valid]),
                            args.repeats, device)
    whole, _ = timed(lambda: harmonize_image(args.image, model), args.repeats, device)
    print(f"optimisation only: {optimisation:.1f} s per volume, {valid.sum() / optimisation:.1f} slices/s")
    print(f"whole volume (preprocessing + optimisation + back to the native grid): {whole:.1f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MB" + (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
                                      if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
