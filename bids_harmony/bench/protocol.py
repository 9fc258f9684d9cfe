"""Run methods over benchmark cases, score them per slice and summarise as the paper's tables."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .metrics import psnr, ssim
from .tissue import TISSUE_SCORES, tissue_scores

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]
METRICS = ("psnr", "ssim", "psnr_brain", "ssim_brain")


@dataclass
class BenchCase:
    """Source slices of one domain and subject, with the target-domain truth on the same grid."""

    domain: str  # "exp", "gamma0.7", ... or a scanner domain such as "Domain 1"
    kind: str  # "simulated" or "paired"
    subject: str
    source: np.ndarray  # (n, H, W) in [0, 1]
    truth: np.ndarray  # (n, H, W) in [0, 1]
    positions: np.ndarray  # (n,) positions on the model's grid
    tissues: np.ndarray  # (n, H, W) true tissue labels (tissue.TISSUES), 0 outside the brain

    @property
    def brain(self) -> np.ndarray:
        return self.tissues > 0


@dataclass
class MethodResult:
    """Scores of every slice, tissue scores of every case (its slices pooled), and one example
    slice per case and method for the figure."""

    scores: pd.DataFrame
    tissue: pd.DataFrame = field(default_factory=pd.DataFrame)
    examples: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)


def spread_indices(count: int, budget: int) -> np.ndarray:
    """At most ``budget`` indices spread evenly over ``range(count)`` (all of them if fewer)."""
    if count <= budget:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, budget).round().astype(int))


def score_slices(output: np.ndarray, case: BenchCase) -> list[dict[str, float]]:
    return [{"psnr": psnr(image, truth), "ssim": ssim(image, truth),
             "psnr_brain": psnr(image, truth, brain), "ssim_brain": ssim(image, truth, brain)}
            for image, truth, brain in zip(output, case.truth, case.brain)]


def case_tissue_scores(output: np.ndarray, case: BenchCase) -> dict[str, float]:
    """:func:`~.tissue.tissue_scores` of a case's slices pooled; NaN where the slices hold too
    little of a tissue to score."""
    try:
        return tissue_scores(output, case.truth, case.tissues, slices=True)
    except ValueError:
        return dict.fromkeys(TISSUE_SCORES, float("nan"))


def run_benchmark(cases: Iterable[BenchCase], methods: dict[str, Method],
                  progress: Callable[[int], None] | None = None) -> MethodResult:
    """Apply every method to every case; ``progress`` is called with each case's slice count."""
    rows, tissue_rows = [], []
    examples: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for case in cases:
        example = examples.setdefault((case.domain, case.subject), {
            "source": case.source[len(case.source) // 2], "truth": case.truth[len(case.truth) // 2]})
        for name, method in methods.items():
            started = time.perf_counter()
            output = method(case.source, case.positions)
            seconds = (time.perf_counter() - started) / max(len(case.source), 1)
            example[name] = output[len(output) // 2]
            for position, scores in zip(case.positions, score_slices(output, case)):
                rows.append({"kind": case.kind, "domain": case.domain, "subject": case.subject,
                             "position": int(position), "method": name, **scores,
                             "seconds_per_slice": seconds})
            tissue_rows.append({"kind": case.kind, "domain": case.domain, "subject": case.subject, "method": name,
                                "slices": len(case.source), **case_tissue_scores(output, case)})
        if progress is not None:
            progress(len(case.source))
    return MethodResult(pd.DataFrame(rows), tissue=pd.DataFrame(tissue_rows), examples=examples)


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over slices of every metric, per domain and method (order of appearance)."""
    grouped = scores.groupby(["kind", "domain", "method"], sort=False)
    summary = grouped[list(METRICS)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{statistic}" for metric, statistic in summary.columns]
    summary["seconds_per_slice"] = grouped["seconds_per_slice"].mean()
    summary["slices"] = grouped.size()
    return summary.reset_index()


def summarise_tissue(tissue: pd.DataFrame) -> pd.DataFrame:
    """Tissue scores per domain and method: the mean over the domain's subjects (each subject's
    slices pooled), and for the gaps also the mean absolute gap."""
    grouped = tissue.groupby(["kind", "domain", "method"], sort=False)
    summary = grouped[list(TISSUE_SCORES)].mean()
    for gap in ("wm_gm_gap", "csf_wm_gap"):
        summary[f"{gap}_abs"] = grouped[gap].agg(lambda values: values.abs().mean())
    summary["subjects"] = grouped.size()
    return summary.reset_index()


def tissue_markdown(summary: pd.DataFrame, title: str) -> str:
    """WM/GM and CSF/WM gaps to the truth and brain RMSE after WM scaling: one row per domain,
    one column per method."""
    methods = list(dict.fromkeys(summary["method"]))
    lines = [f"{title}: WM/GM gap / CSF/WM gap / brain RMSE (image minus truth, each scaled by its WM median; "
             "mean over subjects):", "", "| domain | truth WM/GM | " + " | ".join(methods) + " |",
             "|" + "---|" * (len(methods) + 2)]
    for (kind, domain), group in summary.groupby(["kind", "domain"], sort=False):
        first = group.iloc[0]
        cells = []
        for method in methods:
            row = group[group["method"] == method].iloc[0]
            cells.append(f"{row['wm_gm_gap']:+.3f} / {row['csf_wm_gap']:+.3f} / {row['brain_rmse']:.3f}")
        lines.append(f"| {domain} ({kind}) | {first['wm_gm'] - first['wm_gm_gap']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_tables(summary: pd.DataFrame) -> str:
    """PSNR (dB) and SSIM as mean +- sd, one row per domain, one column per method."""
    methods = list(dict.fromkeys(summary["method"]))
    sections = []
    for region, suffix in (("whole slice", ""), ("brain", "_brain")):
        header = "| domain | slices | " + " | ".join(methods) + " |"
        lines = [f"PSNR (dB) / SSIM, {region}, mean +- sd over slices:", "", header,
                 "|" + "---|" * (len(methods) + 2)]
        for (kind, domain), group in summary.groupby(["kind", "domain"], sort=False):
            cells = []
            for method in methods:
                row = group[group["method"] == method].iloc[0]
                cells.append(f"{row[f'psnr{suffix}_mean']:.2f} +- {row[f'psnr{suffix}_std']:.2f} / "
                             f"{row[f'ssim{suffix}_mean']:.3f} +- {row[f'ssim{suffix}_std']:.3f}")
            lines.append(f"| {domain} ({kind}) | {int(group['slices'].iloc[0])} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    timing = summary.groupby("method", sort=False)["seconds_per_slice"].mean()
    sections.append("Seconds per slice: " + ", ".join(f"{name} {value:.3f}" for name, value in timing.items()))
    return "\n\n".join(sections) + "\n"


def save_panel(examples: dict[tuple[str, str], dict[str, np.ndarray]], methods: list[str],
               path: str | Path, max_rows: int = 8) -> None:
    """Source, each method, ground truth and |last method - truth|: one slice of the first
    subject of each domain (at most ``max_rows`` domains, spread over the list)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    first: dict[str, tuple] = {}
    for (domain, subject), images in examples.items():
        first.setdefault(domain, ((domain, subject), images))
    first_per_domain = list(first.values())
    chosen = [first_per_domain[row] for row in spread_indices(len(first_per_domain), max_rows)]
    columns = ["source", *methods, "truth"]
    figure, axes = plt.subplots(len(chosen), len(columns) + 1,
                                figsize=(1.6 * (len(columns) + 1), 1.4 * len(chosen)), squeeze=False)
    for row, ((domain, subject), images) in enumerate(chosen):
        for column, name in enumerate(columns):
            axes[row, column].imshow(images[name].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            if row == 0:
                axes[row, column].set_title(name, fontsize=7)
        difference = np.abs(images[methods[-1]] - images["truth"])
        axes[row, -1].imshow(difference.T, cmap="magma", origin="lower", vmin=0, vmax=0.3)
        if row == 0:
            axes[row, -1].set_title(f"|{methods[-1]} - truth|", fontsize=7)
        axes[row, 0].set_ylabel(f"{domain.split(':')[0]}\nsub-{subject}", fontsize=7)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
