"""Simulated subjects must really differ, as people do (issue: inter-subject variability)."""
import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from bids_harmony.preprocessing import PreprocessingConfig, to_slices


def test_mean_of_ten_subjects_does_not_predict_an_eleventh(target_cohort):
    """Mean slice of ten target subjects vs an eleventh at the same position: < 22 dB PSNR.

    Slices come from the real preprocessing (rigid placement in template space, per-slice
    min-max), so position k is the same anatomy level for everyone: what is left is the
    subjects' own anatomy, size, deformation and contrast.
    """
    config = PreprocessingConfig()
    stacks, valid = [], []
    for index in range(1, 12):
        path = target_cohort / f"sub-{index:02d}" / "anat" / f"sub-{index:02d}_T1w.nii.gz"
        slices, geometry = to_slices(path, config)
        stacks.append(slices)
        valid.append(geometry.valid)
    stacks, valid = np.stack(stacks), np.stack(valid)
    scores = []
    for held_out in range(11):
        others = [index for index in range(11) if index != held_out]
        mean = stacks[others].mean(0)
        usable = valid.all(0)
        score = np.mean([
            peak_signal_noise_ratio(stacks[held_out][k], mean[k], data_range=1.0)
            for k in np.flatnonzero(usable)
        ])
        scores.append(score)
    print("mean-of-ten PSNR per held-out subject (dB):", np.round(scores, 2))
    assert max(scores) < 22.0
    assert min(scores) > 8.0  # still brains at the same place: not noise
