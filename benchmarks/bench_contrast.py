"""Where does the tissue contrast go? The volume-level tissue scores of BlindHarmony with one
setting changed at a time, on paired heads of a ``bids_harmony-simulate`` dataset.

    python benchmarks/bench_contrast.py BIDS_DIR OUT.csv [--per-domain 1] [--variants NAME ...]

Each variant is ``name=setting:value,...`` (the name may hold "=" itself) or one of :data:`VARIANTS`' names; ``none`` and
``histogram matching`` are always scored. Prints, per domain and variant, the mean WM/GM and
CSF/WM gaps to the paired target, brain RMSE after WM scaling, the per-tissue Wasserstein
distance, banding and the seconds per volume; writes every row to OUT.csv.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")

import torch  # noqa: E402

from bids_harmony.bench.cases import split_images  # noqa: E402
from bids_harmony.bench.volumes import VOLUME_SCORES, score_volumes  # noqa: E402
from bids_harmony.model import load_model  # noqa: E402
from bids_harmony.settings import HarmonizationParams  # noqa: E402

#: One change at a time from our method (``bids_harmony``): the start, the steps, their number,
#: the volume steps.
VARIANTS = {
    "bids_harmony": {},
    "camera-ready": None,
    "init=source": {"init": "source"},
    "init=mean-unmasked": {"init": "mean-unmasked"},
    "no likelihood shrink": {"alpha": 0.0, "alpha2": 0.0},
    "beta2=0": {"beta2": 0.0},
    "beta1=0.8": {"beta1": 0.8},
    "iterations=1": {"iterations": 1},
    "iterations=2": {"iterations": 2},
    "iterations=8": {"iterations": 8},
    "iterations=16": {"iterations": 16},
    "no anchor": {"anchor_level": False},
    "no smoothing": {"smooth_across_slices": False},
    "no target background": {"target_background": False},
}


def parse_variant(text: str) -> tuple[str, HarmonizationParams]:
    if text in VARIANTS:
        change = VARIANTS[text]
        return text, HarmonizationParams.preset(text) if change is None else HarmonizationParams().replace(**change)
    name, _, settings = text.rpartition("=")
    base = HarmonizationParams()
    changes = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition(":")
        default = getattr(base, key)
        changes[key] = (value.lower() == "true") if isinstance(default, bool) else type(default)(value)
    return name, base.replace(**changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output", type=Path, help="CSV of every row")
    parser.add_argument("--model", help="model file (default: the bundled one)")
    parser.add_argument("--per-domain", type=int, default=1, help="source subjects per scanner domain")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    _, sources = split_images(model, args.bids_dir)
    chosen, seen = [], {}
    for domain, image in sources:
        seen[domain] = seen.get(domain, 0) + 1
        if seen[domain] <= args.per_domain:
            chosen.append((domain, image))
    columns = {"none": None, "histogram matching": None, **dict(parse_variant(text) for text in args.variants)}
    started = time.perf_counter()
    scores = score_volumes(model, chosen, args.bids_dir / "derivatives" / "groundtruth", columns,
                           progress=lambda: print(f"{time.perf_counter() - started:.0f} s", flush=True))
    scores.to_csv(args.output, index=False, float_format="%.5f")
    table = scores.groupby(["domain", "method"], sort=False)[[*VOLUME_SCORES, "seconds"]].mean()
    print(table.round(4).to_string())
    overall = scores.groupby("method", sort=False)[[*VOLUME_SCORES, "seconds"]].agg(lambda v: v.abs().mean())
    print("\nmean absolute over source images:\n" + overall.round(4).to_string())
    print(f"{len(chosen)} source images, {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
