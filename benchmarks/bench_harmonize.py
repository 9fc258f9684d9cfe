"""Seconds per volume of BlindHarmony (``harmonize_image``) on this machine; print the figures.

Usage: python benchmarks/bench_harmonize.py T1W_NIFTI [--model PATH] [--preset paper|small]
                                            [--device auto|cpu|cuda] [--threads N] [--repeats 3]
                                            [--compare-authors]

Times one whole volume: the shared preprocessing (rigid placement, resampling), the
optimisation over every valid slice (default parameters, ``batch_size`` slices at a time) and the
way back to the native grid, and the optimisation alone. ``--preset`` replaces the model's flow
by an untrained one of that preset (same grid and statistics): the speed of the ``paper``
preset does not depend on its weights. Peak memory: process peak RSS and, on CUDA,
``torch.cuda.max_memory_allocated``.

``--compare-authors``: instead, the camera-ready method as we run it (``harmonize_slices``, torch on
the model's device) against a loop written here that does what the authors' camera-ready script
does each iteration: the fidelity and Sobel gradients in numpy/scipy on the host, the slices sent
to the model's device and back, fresh dequantisation noise on every flow input, and the unused
flow pass before the loop; same model, slices and batches of 50, at our default iteration count
and at theirs (10). Prints the seconds per volume of each and the ratio.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from _measure import peak_rss_mb, timed  # noqa: E402

from bids_harmony.cli.common import resolve_device  # noqa: E402
from bids_harmony.devices import DEVICE_CHOICES  # noqa: E402
from bids_harmony.harmonize import COSINE_EPS, harmonize_image, harmonize_slices  # noqa: E402
from bids_harmony.model import build_flow, from_flow_output, load_model, to_flow_input  # noqa: E402
from bids_harmony.preprocessing import to_slices  # noqa: E402
from bids_harmony.settings import HarmonizationParams  # noqa: E402

AUTHORS_BATCH = 50
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _sobel(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per slice of (B, H, W), OpenCV's border (reflect-101 is scipy's "mirror")."""
    from scipy import ndimage

    return ndimage.correlate(images, kernel[None], mode="mirror")


@torch.no_grad()
def authors_like_loop(source: np.ndarray, start: np.ndarray, model, params: HarmonizationParams) -> np.ndarray:
    """The camera-ready iteration as the authors' script runs it, for timing (see the module help)."""
    device, transform, bits = model.device, model.flow._transform, model.flow_config.num_bits

    def flow_round_trip(images: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(images.astype(np.float32)).to(device)[:, None]
        z, _ = transform(to_flow_input(tensor, bits, dequantize=True))  # fresh noise every time
        back, _ = transform.inverse((1.0 - params.alpha) * z)
        return from_flow_output(back, bits)[:, 0].cpu().numpy().astype(np.float64)

    x = source.astype(np.float64)
    derivatives = [np.abs(_sobel(x, kernel)) for kernel in (_SOBEL_X, _SOBEL_X.T)]
    masks = [(d < np.percentile(d, params.edge_percentile, axis=(1, 2), keepdims=True)) & (x > 0.05)
             for d in derivatives]
    y = start.astype(np.float64)
    flow_round_trip(y)  # their unused first pass
    x_norm = np.sqrt((x ** 2).sum((1, 2), keepdims=True)) + COSINE_EPS
    for _ in range(params.iterations):
        edge = -sum(_sobel(np.sign(mask * _sobel(y, kernel)), kernel)
                    for mask, kernel in zip(masks, (_SOBEL_X, _SOBEL_X.T)))
        y_norm = np.sqrt((y ** 2).sum((1, 2), keepdims=True)) + COSINE_EPS
        fidelity = -x / (y_norm * x_norm) + (x * y).sum((1, 2), keepdims=True) * y / (y_norm ** 3 * x_norm)
        stepped = y - (params.beta1 * fidelity + params.beta2 * edge)
        y = flow_round_trip(stepped)
        if not np.isfinite(y).all() or y.sum() == 0 or y.max() > 100:  # their whole-batch fallback
            y = stepped
    return y


def compare_authors(slices: np.ndarray, positions: np.ndarray, model, repeats: int, device) -> None:
    """Our camera-ready run against the authors-like loop, at our and at their iteration counts."""
    from bids_harmony.bench.metrics import psnr

    model.flow.eval()
    starts = model.mean_slices[positions]
    for iterations in (HarmonizationParams().iterations, HarmonizationParams.preset("camera-ready").iterations):
        params = HarmonizationParams.preset("camera-ready").replace(iterations=iterations)
        def authors_way() -> np.ndarray:
            return np.concatenate([authors_like_loop(slices[begin:begin + AUTHORS_BATCH],
                                                     starts[begin:begin + AUTHORS_BATCH], model, params)
                                   for begin in range(0, len(slices), AUTHORS_BATCH)])

        ours, _ = timed(lambda: harmonize_slices(slices, model, positions, params), repeats, device)
        theirs, _ = timed(authors_way, repeats, device)
        agreement = np.mean([psnr(a, b) for a, b in zip(harmonize_slices(slices, model, positions, params),
                                                          authors_way())])
        print(f"camera-ready, {iterations} iterations, {len(slices)} slices: ours {ours:.1f} s, "
              f"the authors' way {theirs:.1f} s per volume: {theirs / ours:.2f} x "
              f"(the two results agree to {agreement:.1f} dB PSNR)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="a T1w NIfTI")
    parser.add_argument("--model", help="model file (default: the bundled demo model)")
    parser.add_argument("--preset", choices=("paper", "small"), help="time an untrained flow of this preset")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-authors", action="store_true",
                        help="time the camera-ready method as we run it against the authors' way")
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
    if args.compare_authors:
        compare_authors(slices[valid], geometry.positions[valid], model, args.repeats, device)
        print(f"peak RSS {peak_rss_mb():.0f} MB")
        return

    optimisation, _ = timed(lambda: harmonize_slices(slices[valid], model, geometry.positions[valid]),
                            args.repeats, device)
    whole, _ = timed(lambda: harmonize_image(args.image, model), args.repeats, device)
    print(f"optimisation only: {optimisation:.1f} s per volume, {valid.sum() / optimisation:.1f} slices/s")
    print(f"whole volume (preprocessing + optimisation + back to the native grid): {whole:.1f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MB" + (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
                                      if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
