"""Throughput and peak memory of the BlindHarmony flow on this machine; print the figures.

Usage: python benchmarks/bench_flow.py [--preset small] [--batch-size 16] [--repeats 5]
                                       [--threads N] [--device auto|cpu|cuda] [--reference]
                                       [--set FIELD=VALUE ...] [--skip PHASE ...]

Measures, for slices of 1 x 144 x 176 (``--shape``):

- training: forward (log_prob) + backward + Adam step, in train mode;
- forward: ``log_prob`` without gradients, in eval mode (what scoring a volume costs);
- inverse: the flow's inverse from given latents (standard normal draws) without gradients,
  in eval mode (sampling);
- harmonization-like step: in eval mode, latents -> inverse -> log_prob, backward to the
  latents (one gradient iteration through both directions, as BlindHarmony's optimisation
  does), reported per slice.

Each figure is the median over ``--repeats`` timed runs after one warm-up run, in slices per
second, with the wall time and the process CPU time (``time.process_time``, all threads) of one
batch; CPU time well below wall time x threads means the machine is shared. Peak memory: the
process's peak RSS (``resource.getrusage``) and, on CUDA, ``torch.cuda.max_memory_allocated``
per phase. ``--reference`` builds the same network from nflows' own transforms (the code before
the faster spline coupling / 1x1 convolution), for before/after comparisons.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import peak_rss_mb, timed  # noqa: E402

from bids_harmony.model import (  # noqa: E402
    PER_LEVEL_FIELDS,
    PRESETS,
    FlowConfig,
    build_flow,
    count_parameters,
    to_flow_input,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--shape", type=int, nargs=3, default=[1, 144, 176], metavar=("C", "H", "W"))
    parser.add_argument("--reference", action="store_true",
                        help="nflows' own spline coupling / 1x1 convolution / ActNorm code")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override FlowConfig fields of the preset, e.g. hidden_channels=16 "
                             "or, one per level (finest first), steps_per_level=2,3,4,4")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["train", "forward", "inverse", "harmonize"], help="phases to skip")
    args = parser.parse_args()
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be positive")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device available")
    cuda = device.type == "cuda"

    config = PRESETS[args.preset].to_dict()
    for item in args.set:
        field, _, value = item.partition("=")
        if field not in config:
            parser.error(f"--set {item}: unknown FlowConfig field {field!r}")
        if field in PER_LEVEL_FIELDS:  # one value, or one per level: 2,3,4,4
            values = tuple(int(v) for v in value.split(","))
            config[field] = values[0] if len(values) == 1 else values
        elif isinstance(config[field], bool):
            config[field] = value.lower() in ("1", "true", "yes")
        else:
            config[field] = type(config[field])(value)
    config = FlowConfig.from_dict(config)
    label = args.preset + "".join(f" {item}" for item in args.set)

    shape = tuple(args.shape)
    torch.manual_seed(0)
    flow = build_flow(config, shape, reference=args.reference).to(device)
    generator = torch.Generator().manual_seed(0)
    slices = torch.rand((args.batch_size, *shape), generator=generator)
    batch = to_flow_input(slices, dequantize=True, generator=generator).to(device)
    latents = torch.randn((args.batch_size, int(torch.tensor(shape).prod())), generator=generator)
    latents = latents.to(device)
    flow.train()
    with torch.no_grad():
        flow.log_prob(batch)  # data-dependent ActNorm initialisation, as in training

    where = torch.cuda.get_device_name(device) if cuda else f"{platform.processor() or platform.machine()} CPU"
    print(f"preset {label}{' (nflows reference code)' if args.reference else ''}: "
          f"{count_parameters(flow):,} parameters, slices {'x'.join(map(str, shape))}, "
          f"batch {args.batch_size}, repeats {args.repeats}")
    print(f"device: {device} ({where}), torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, cores {os.cpu_count()}")

    def report(name: str, run: Callable[[], None]) -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        wall, cpu = timed(run, args.repeats, device)
        line = (f"{name:<22} {args.batch_size / wall:8.2f} slices/s   wall {wall:7.3f} s   "
                f"cpu {cpu:7.3f} s per batch   peak RSS {peak_rss_mb():7.0f} MB")
        if cuda:
            line += f"   CUDA peak {torch.cuda.max_memory_allocated(device) / 2**20:7.0f} MB"
        print(line, flush=True)

    if "train" not in args.skip:
        optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
        flow.train()

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = -flow.log_prob(batch).mean()
            loss.backward()
            optimizer.step()

        report("train (fwd+bwd+Adam)", train_step)
        optimizer.zero_grad(set_to_none=True)
        del optimizer

    flow.eval()
    if "forward" not in args.skip:

        def forward() -> None:
            with torch.no_grad():
                flow.log_prob(batch)

        report("forward (log_prob)", forward)

    if "inverse" not in args.skip:

        def inverse() -> None:
            with torch.no_grad():
                flow._transform.inverse(latents)

        report("inverse (sampling)", inverse)

    if "harmonize" not in args.skip:
        for parameter in flow.parameters():
            parameter.requires_grad_(False)

        def harmonize_step() -> None:
            z = latents.clone().requires_grad_(True)
            images, _ = flow._transform.inverse(z)
            loss = -flow.log_prob(images).sum() + (images - batch).square().sum()
            loss.backward()

        report("harmonize (inv+fwd+bwd)", harmonize_step)


if __name__ == "__main__":
    main()
