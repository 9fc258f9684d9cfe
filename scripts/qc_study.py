"""The QC study of docs/qc.md: a simulated multi-scanner dataset, harmonized with QC, against
the simulator's paired truth; prints the tables (markdown).

Usage (after ``bids_harmony BIDS_DIR OUTPUT_DIR participant`` with QC on a dataset made by
``bids_harmony-simulate``, which writes the paired target scans and the true tissues):

    python scripts/qc_study.py BIDS_DIR OUTPUT_DIR

1. The site effect (``bids_harmony.reports.group``, as ``group_report.html`` shows it): each
   measure's scanner share of variance before and after, with its interval, and the
   within-scanner SD.
2. Per scanner, against the same head simulated on the target scanner (``desc-pairedtarget``):
   the gap of the local WM/GM ratio and of the CSF/WM ratio (medians, true tissues) and the
   brain RMSE after scaling each image by its WM median (the target resampled onto the image's
   grid, linear), source vs harmonized.
3. Per scanner, the Dice of Atropos WM (source, harmonized) against the true WM.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from bids_harmony.qc.metrics import contrast_ratio, dice
from bids_harmony.qc.tissue import wm_gm_ratio
from bids_harmony.reports.group import OK, SHORT_NAMES, collect, site_effects

BIDS_WM = 2  # the QC segmentations' label table (desc-*_dseg.tsv): 1 GM, 2 WM, 3 CSF


def truth_labels(groundtruth: Path) -> dict[str, int]:
    """The simulator's label table, read from its dseg.tsv (never assumed)."""
    with open(groundtruth / "dseg.tsv") as stream:
        return {row["name"]: int(row["index"]) for row in csv.DictReader(stream, delimiter="\t")}


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)


def ratios(data: np.ndarray, truth: np.ndarray, labels: dict[str, int], voxel_mm: np.ndarray) -> tuple[float, float]:
    """The local WM/GM ratio and the CSF/WM ratio of medians, on the true tissues."""
    wm, gm, csf = labels["WM"], labels["GM"], labels["CSF"]
    return (wm_gm_ratio(data, truth, voxel_mm, wm_label=wm, gm_label=gm), 1.0 / contrast_ratio(data, truth, wm, csf))


def distances(image: np.ndarray, truth: np.ndarray, target_ratios: tuple[float, float], target: np.ndarray,
              labels: dict[str, int], voxel_mm: np.ndarray) -> dict[str, float]:
    """Ratio gaps and WM-scaled brain RMSE of ``image`` against the paired target scan
    (``target`` resampled onto the image's grid; its ratios measured on its own grid)."""
    image_wm_gm, image_csf_wm = ratios(image, truth, labels, voxel_mm)
    wm = truth == labels["WM"]
    brain = np.isin(truth, (labels["WM"], labels["GM"], labels["CSF"])) & (target > 0)
    scaled, reference = image / np.median(image[wm]), target / np.median(target[wm])
    return {"wm_gm_gap": abs(image_wm_gm - target_ratios[0]), "csf_wm_gap": abs(image_csf_wm - target_ratios[1]),
            "rmse": float(np.sqrt(np.mean((scaled[brain] - reference[brain]) ** 2)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args()
    groundtruth = args.bids_dir / "derivatives" / "groundtruth"
    labels = truth_labels(groundtruth)
    runs = collect(args.output_dir).with_status(OK)

    print("| measure | runs | scanner share before [95 % CI] | after [95 % CI] | within-scanner SD before | after |")
    print("|---|---|---|---|---|---|")
    for name, change in site_effects(runs).items():
        before, after = change.before, change.after

        def share(effect):
            if effect.share is None:
                return "n/a"
            low, high = effect.share_interval or (float("nan"), float("nan"))
            return f"{effect.share:.2f} [{low:.2f}, {high:.2f}]"

        def spread(effect):
            return "n/a" if effect.within_sd is None else f"{effect.within_sd:.4g}"

        print(f"| {SHORT_NAMES[name]} | {before.runs} | {share(before)} | {share(after)} | {spread(before)} "
              f"| {spread(after)} |")

    paired, dices = defaultdict(list), defaultdict(list)
    for run in runs:
        stem = Path(run.source).name.removesuffix("_T1w.nii.gz")
        anat = args.output_dir / Path(run.source).parent
        truth_dir = groundtruth / Path(run.source).parent
        truth = np.asarray(nib.load(str(truth_dir / f"{stem}_dseg.nii.gz")).dataobj)
        source_image = nib.load(str(args.bids_dir / run.source))
        voxel_mm = np.asarray(source_image.header.get_zooms()[:3], dtype=float)
        source, harmonized = load(args.bids_dir / run.source), load(anat / f"{stem}_desc-harmonized_T1w.nii.gz")
        for which in ("source", "harmonized"):
            atropos = np.asarray(nib.load(str(anat / f"{stem}_desc-{which}_dseg.nii.gz")).dataobj)
            dices[run.scanner].append((which, dice(atropos == BIDS_WM, truth == labels["WM"])))
        target_file = truth_dir / f"{stem}_desc-pairedtarget_T1w.nii.gz"
        if target_file.is_file():
            target_image = nib.load(str(target_file))
            target_truth = np.asarray(nib.load(str(truth_dir / f"{stem}_desc-pairedtarget_dseg.nii.gz")).dataobj)
            target_ratios = ratios(np.asarray(target_image.dataobj, dtype=np.float64), target_truth, labels,
                                   np.asarray(target_image.header.get_zooms()[:3], dtype=float))
            target = np.asarray(resample_from_to(target_image, source_image, order=1).dataobj, dtype=np.float64)
            paired[run.scanner].append(tuple(distances(data, truth, target_ratios, target, labels, voxel_mm)
                                             for data in (source, harmonized)))

    print()
    print("| scanner | runs | WM/GM ratio gap, source / harmonized | CSF/WM ratio gap | brain RMSE (WM-scaled) |")
    print("|---|---|---|---|---|")
    for scanner, pairs in sorted(paired.items()):
        cells = [f"{np.mean([b[key] for b, _ in pairs]):.3f} / {np.mean([a[key] for _, a in pairs]):.3f}"
                 for key in ("wm_gm_gap", "csf_wm_gap", "rmse")]
        print(f"| {scanner} | {len(pairs)} | " + " | ".join(cells) + " |")

    print()
    print("| scanner | runs | Atropos WM Dice vs true WM, source | harmonized |")
    print("|---|---|---|---|")
    for scanner, values in sorted(dices.items()):
        source = [value for which, value in values if which == "source"]
        harmonized = [value for which, value in values if which == "harmonized"]
        print(f"| {scanner} | {len(source)} | {np.mean(source):.3f} | {np.mean(harmonized):.3f} |")


if __name__ == "__main__":
    main()
