"""One simulated head as every scanner sees it: the README's figure."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nibabel.processing import resample_from_to  # noqa: E402

from .acquisition import acquire, random_subject  # noqa: E402
from .anatomy import load_anatomy  # noqa: E402
from .dataset import subject_rng  # noqa: E402
from .scanners import SCANNERS  # noqa: E402

_FIGURE_SUBJECT = 10_000  # a subject index no dataset uses, so the figure has its own streams


def _display_grid(centre_mm: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """A 1 mm RAS grid of 180 x 216 x 200 mm around the head."""
    shape = (180, 216, 200)
    affine = np.eye(4)
    affine[:3, 3] = centre_mm - (np.asarray(shape) - 1) / 2.0
    return shape, affine


def draw_scanner_panel(path: str | Path, anatomy: str, scanners: list[str], seed: int = 0) -> None:
    """Axial and sagittal views of one subject imaged by each scanner, each on its own scale."""
    subject = random_subject(load_anatomy(anatomy), subject_rng(seed, _FIGURE_SUBJECT, 0))
    shape, affine = _display_grid(subject.slab_centre)
    axial_index = shape[2] // 2 + 5
    figure, axes = plt.subplots(2, len(scanners), figsize=(2.3 * len(scanners), 5.2),
                                gridspec_kw={"height_ratios": [1.2, 1.0]})
    axes = np.asarray(axes).reshape(2, len(scanners))
    for column, key in enumerate(scanners):
        scanner = SCANNERS[key]
        scan = acquire(subject, scanner, subject_rng(seed, _FIGURE_SUBJECT, 1 + column))
        volume = resample_from_to(scan.image, (shape, affine), order=1).get_fdata()
        top = np.percentile(volume[volume > 0], 99.5)
        views = (volume[:, :, axial_index].T, volume[shape[0] // 2 + 4, :, :].T)
        for row, view in enumerate(views):
            axes[row, column].imshow(view, cmap="gray", origin="lower", vmin=0, vmax=top)
            axes[row, column].axis("off")
        axes[0, column].set_title(
            f"{scanner.domain}\n{scanner.model} {scanner.field_strength:g} T\n"
            + " x ".join(f"{size:g}" for size in scanner.voxel_size) + " mm",
            fontsize=8,
        )
    figure.suptitle(f"One simulated head ({anatomy}) on each scanner", fontsize=10)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=75)
    plt.close(figure)
