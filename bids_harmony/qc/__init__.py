"""Quality control: tissue contrast, bias profile, slice banding and segmentation metrics.

Every measure takes its label values explicitly: the simulator's ground truth (1 CSF, 2 GM,
3 WM) and BIDS's dseg table (1 GM, 2 WM, 3 CSF, :data:`BIDS_LABELS`) must never be mixed.
"""
from .metrics import before_after_metrics, cnr, contrast_ratio, dice, tissue_volumes_ml, voxel_volume_mm3
from .segmentation import BIDS_LABELS, TissueSegmentation, brain_mask, segment_tissues
from .tissue import bias_profile, core_mask, slice_banding, slice_striping, wm_gm_ratio

__all__ = [
    "BIDS_LABELS",
    "TissueSegmentation",
    "before_after_metrics",
    "bias_profile",
    "brain_mask",
    "cnr",
    "contrast_ratio",
    "core_mask",
    "dice",
    "segment_tissues",
    "slice_banding",
    "slice_striping",
    "tissue_volumes_ml",
    "voxel_volume_mm3",
    "wm_gm_ratio",
]
