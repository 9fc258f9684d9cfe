"""Segmentation QC metrics on synthetic arrays whose volumes, contrast, CNR and Dice are known."""
import numpy as np
import pytest

from bids_harmony.qc.metrics import (
    before_after_metrics,
    cnr,
    contrast_ratio,
    dice,
    tissue_volumes_ml,
    voxel_volume_mm3,
)

BIDS = {"GM": 1, "WM": 2, "CSF": 3}
SIMULATOR = {"CSF": 1, "GM": 2, "WM": 3}
BORDER = 1000.0  # on the voxels that erosion removes: any leak of them into a measure shows


def _two_cubes(table):
    """A WM and a GM cube of 10^3 voxels (cores 8^3 = 512), apart, labelled with ``table``.

    Core voxels alternate 140/160 (WM) and 90/110 (GM): means 150 and 100, medians 150 and
    100, population variances 100 and 100. Border voxels are 1000.
    """
    labels = np.zeros((12, 24, 12), dtype=np.int16)
    image = np.zeros(labels.shape, dtype=np.float32)
    for tissue, where, values in (("WM", np.s_[1:11, 1:11, 1:11], (140.0, 160.0)),
                                  ("GM", np.s_[1:11, 13:23, 1:11], (90.0, 110.0))):
        labels[where] = table[tissue]
        block = np.full((10, 10, 10), BORDER, dtype=np.float32)
        block[1:-1, 1:-1, 1:-1] = np.tile(values, 256).reshape(8, 8, 8)
        image[where] = block
    return image, labels


@pytest.mark.parametrize("table", [BIDS, SIMULATOR], ids=["bids", "simulator"])
def test_contrast_and_cnr_have_their_known_values_in_either_label_table(table):
    image, labels = _two_cubes(table)
    assert contrast_ratio(image, labels, table["WM"], table["GM"]) == pytest.approx(1.5)
    # |150 - 100| / sqrt(100 + 100)
    assert cnr(image, labels, table["WM"], table["GM"]) == pytest.approx(50 / np.sqrt(200))


def test_tissue_volumes_count_voxels_times_their_volume():
    labels = np.zeros((10, 10, 10), dtype=np.int16)
    labels.flat[:100] = 1
    labels.flat[100:350] = 2
    volumes = tissue_volumes_ml(labels, 2.0, BIDS)
    assert volumes == pytest.approx({"GM": 0.2, "WM": 0.5, "CSF": 0.0})  # 100 and 250 voxels of 2 mm^3
    with pytest.raises(ValueError, match="voxel volume"):
        tissue_volumes_ml(labels, 0.0, BIDS)


def test_voxel_volume_is_right_on_an_oblique_flipped_grid():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.0, 2.0, 3.0])
    assert voxel_volume_mm3(affine) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="degenerate"):
        voxel_volume_mm3(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_dice_has_its_known_values():
    a = np.zeros((8, 8, 8), dtype=bool)
    b = np.zeros_like(a)
    a[0:4, 0:4, 0:4] = True  # 64 voxels
    b[1:5, 0:4, 0:4] = True  # 64 voxels, 48 shared
    assert dice(a, b) == pytest.approx(2 * 48 / 128)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="both masks are empty"):
        dice(np.zeros_like(a), np.zeros_like(a))
    with pytest.raises(ValueError, match="different shapes"):
        dice(a, a[1:])


def test_measures_that_cannot_be_taken_raise_instead_of_returning_nan():
    image, labels = _two_cubes(BIDS)
    tiny = np.zeros_like(labels)
    tiny[2:4, 2:4, 2:4] = BIDS["WM"]  # no core voxel: every one touches the background
    tiny[1:11, 13:23, 1:11] = BIDS["GM"]
    for measure in (contrast_ratio, cnr):
        with pytest.raises(ValueError, match="too few core WM voxels"):
            measure(image, tiny, BIDS["WM"], BIDS["GM"])
        with pytest.raises(ValueError, match="too few core GM voxels"):  # a label the image lacks
            measure(image, labels, BIDS["WM"], BIDS["CSF"])
    with pytest.raises(ValueError, match="non-finite"):
        contrast_ratio(np.where(labels == BIDS["WM"], np.nan, image), labels, BIDS["WM"], BIDS["GM"])
    with pytest.raises(ValueError, match="positive intensity scale"):
        contrast_ratio(np.where(labels == BIDS["GM"], 0.0, image), labels, BIDS["WM"], BIDS["GM"])
    constant = np.where(labels == BIDS["WM"], 2.0, 1.0)
    with pytest.raises(ValueError, match="CNR is undefined"):
        cnr(constant, labels, BIDS["WM"], BIDS["GM"])
    with pytest.raises(ValueError, match="differ in shape"):
        cnr(image[1:], labels, BIDS["WM"], BIDS["GM"])


def test_before_after_metrics_report_each_image_on_its_own_labels():
    source, labels = _two_cubes(BIDS)
    harmonized = np.where(labels == BIDS["WM"], source * 1.2, source)  # contrast 1.5 -> 1.8
    harmonized_labels = labels.copy()
    harmonized_labels[1:6, 1:11, 1:11] = 0  # half of the WM cube lost: Dice 2*500/1500
    metrics = before_after_metrics(source, harmonized, labels, harmonized_labels, voxel_volume_mm3=1.0,
                                   label_values=BIDS)
    assert metrics == pytest.approx({
        "gm_volume_ml_source": 1.0, "wm_volume_ml_source": 1.0,
        "gm_volume_ml_harmonized": 1.0, "wm_volume_ml_harmonized": 0.5,
        "wm_gm_contrast_source": 1.5, "wm_gm_contrast_harmonized": 1.8,
        "wm_gm_cnr_source": 50 / np.sqrt(200),
        "wm_gm_cnr_harmonized": cnr(harmonized, harmonized_labels, BIDS["WM"], BIDS["GM"]),
        "wm_dice_source_harmonized": 2 * 500 / 1500,
    })
    assert all(np.isfinite(value) for value in metrics.values())
