"""BlindHarmony harmonization: fidelity gradients, behaviour on real slices, the T1w guard."""
import nibabel as nib
import numpy as np
import pytest
import torch

from bids_harmony.bench import simulate_domain
from bids_harmony.bench.metrics import psnr, ssim
from bids_harmony.harmonize import (
    HarmonizationParams,
    HighPass,
    NotT1wLikeError,
    anchor_to_source_level,
    correlation_gradient,
    edge_term,
    harmonize_image,
    harmonize_slices,
    pearson,
    smooth_change_across_slices,
    sobel_sign_mismatch,
    with_target_background,
)
from bids_harmony.model import load_model
from bids_harmony.preprocessing import grid_volume, mask_to_slices, to_slices
from bids_harmony.qc.tissue import slice_banding, slice_striping
from bids_harmony.templates import template_file


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def target_slices(multiscanner_dataset, model):
    """A target-scanner subject's valid slices and their positions (seed 7, never trained on)."""
    path = multiscanner_dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    slices, geometry = to_slices(path, model.preprocessing)
    keep = np.flatnonzero(geometry.valid)[30:110:16]  # five slices through the brain
    return slices[keep], geometry.positions[keep]


def test_correlation_gradient_is_the_scaled_gradient_of_one_minus_pearson():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 12, 10, generator=generator, dtype=torch.float64)
    y = torch.rand(3, 12, 10, generator=generator, dtype=torch.float64).requires_grad_(True)
    (autograd,) = torch.autograd.grad((1 - pearson(x, y)).sum(), y)
    scale = y[0].numel() * y.detach().flatten(1).var(1, unbiased=False).view(-1, 1, 1)
    assert torch.allclose(correlation_gradient(x, y.detach()), scale * autograd, atol=1e-12)
    # a step along it raises the correlation
    stepped = y.detach() - 0.5 * correlation_gradient(x, y.detach())
    assert torch.all(pearson(x, stepped) > pearson(x, y.detach()) + 0.1)
    constant = torch.full_like(x, 0.3)
    assert torch.equal(correlation_gradient(constant, y.detach()), torch.zeros_like(x))


def test_highpass_term_gradient_and_projection():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 16, 20, generator=generator, dtype=torch.float64)
    y = torch.rand(2, 16, 20, generator=generator, dtype=torch.float64).requires_grad_(True)
    highpass = HighPass((16, 20), 0.05, torch.device("cpu"), torch.float64)
    loss = 0.5 * (highpass(x) - highpass(y)).square().sum()
    (autograd,) = torch.autograd.grad(loss, y)
    params = HarmonizationParams(edge="highpass")
    assert torch.allclose(edge_term(x, params, highpass)(y.detach()), autograd, atol=1e-12)
    assert torch.allclose(highpass(highpass(x)), highpass(x), atol=1e-12)  # a projection
    assert highpass(torch.ones_like(x)).abs().max() < 1e-12  # the mean is low frequency


def test_sobel_sign_term_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(1, 9, 11, generator=generator, dtype=torch.float64)
    y = torch.rand(1, 9, 11, generator=generator, dtype=torch.float64)
    params = HarmonizationParams(edge="sobel-sign", edge_threshold=0.1)
    analytic = edge_term(x, params, None)(y)
    numeric = torch.zeros_like(y)
    step = 1e-6
    for index in np.ndindex(y.shape):
        plus, minus = y.clone(), y.clone()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (sobel_sign_mismatch(x, plus, 0.1) - sobel_sign_mismatch(x, minus, 0.1)).sum() / (2 * step)
    assert torch.allclose(analytic, numeric, atol=1e-5)
    assert float(sobel_sign_mismatch(x, x, 0.1)) == 0.0
    assert float(sobel_sign_mismatch(x, 1 - x, 0.1)) > 0.0


def test_a_target_slice_is_left_nearly_unchanged(model, target_slices):
    slices, positions = target_slices
    harmonized = harmonize_slices(slices, model, positions)
    assert harmonized.shape == slices.shape and harmonized.dtype == np.float32
    assert psnr(harmonized, slices) > 27.0


@pytest.mark.parametrize("domain", ["exp", "gamma0.9", "gamma1.5"])
def test_harmonizing_a_simulated_domain_improves_psnr_and_ssim(model, target_slices, domain):
    slices, positions = target_slices
    source = simulate_domain(slices, domain)
    harmonized = harmonize_slices(source, model, positions)
    assert psnr(harmonized, slices) > psnr(source, slices) + 1.0
    # gamma 0.9, nearly the identity, is where the paper's output fell below the source in SSIM
    assert np.mean([ssim(h, t) for h, t in zip(harmonized, slices)]) > np.mean(
        [ssim(s, t) for s, t in zip(source, slices)])


def test_constant_and_empty_slices_pass_through(model, target_slices):
    slices, positions = target_slices
    batch = np.concatenate([np.zeros((1,) + slices.shape[1:], np.float32),
                            np.full((1,) + slices.shape[1:], 0.4, np.float32), slices[:1]])
    harmonized = harmonize_slices(batch, model, np.concatenate([positions[:2], positions[:1]]))
    assert np.all(np.isfinite(harmonized))
    assert np.array_equal(harmonized[:2], batch[:2])


def test_harmonization_is_deterministic(model, target_slices):
    slices, positions = target_slices
    first = harmonize_slices(slices[:2], model, positions[:2], batch_size=1)
    second = harmonize_slices(slices[:2], model, positions[:2], batch_size=2)
    assert np.allclose(first, second, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_cuda_agree(model, target_slices):
    slices, positions = target_slices
    on_cpu = harmonize_slices(slices, model, positions)
    on_gpu = harmonize_slices(slices, load_model(device="cuda"), positions)
    assert np.abs(on_cpu - on_gpu).max() < 1e-2 and psnr(on_gpu, on_cpu) > 50


def test_a_t2w_image_is_flagged(model):
    t2 = nib.load(str(template_file("T2w")))
    with pytest.raises(NotT1wLikeError, match="does not look like"):
        harmonize_image(t2, model, strict=True, iterations=1)
    flagged = harmonize_image(t2, model, iterations=1)  # not strict: a warning in the result
    assert len(flagged.warnings) == 1 and "T1w-like" in flagged.warnings[0]
    assert flagged.metadata["contrast_agreement"] < 0.5
    t1 = harmonize_image(nib.load(str(template_file("T1w"))), model, iterations=1)
    assert t1.warnings == [] and t1.metadata["contrast_agreement"] > 0.5


def test_target_background_puts_the_sources_texture_at_the_target_level(model, target_slices):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:40, :48]
    head = ((yy - 20) / 15) ** 2 + ((xx - 24) / 19) ** 2 < 1
    noise = 0.01 * rng.random((40, 48))
    source = torch.as_tensor(np.where(head, 0.6, 0.04 + noise)[None], dtype=torch.float32)
    harmonized = torch.as_tensor(np.where(head, 0.7, 0.06 + 3 * noise[::-1])[None], dtype=torch.float32)
    reference = torch.as_tensor(np.where(head, 0.5, 0.02)[None], dtype=torch.float32)
    shifted = with_target_background(harmonized, source, reference, 0.05)[0].numpy()
    assert np.median(shifted[~head]) == pytest.approx(0.02, abs=1e-6)
    assert np.array_equal(shifted[head], harmonized[0].numpy()[head])
    background = noise[~head]
    assert np.allclose(shifted[~head] - 0.02, background - np.median(background), atol=1e-6)  # the source's
    # on real slices: the head is as the optimisation left it, the background is the source's
    slices, positions = target_slices
    source_slices = simulate_domain(slices, "gamma0.9")
    plain = harmonize_slices(source_slices, model, positions, target_background=False)
    moved = harmonize_slices(source_slices, model, positions)
    foreground = source_slices > 0.05 * source_slices.reshape(len(slices), -1).max(1)[:, None, None]
    assert np.array_equal(moved[foreground], plain[foreground]) and not np.array_equal(moved, plain)
    shift = (moved - source_slices)[0][~foreground[0] & (moved[0] > 0)]  # unclamped background
    assert shift.size > 1000 and np.ptp(shift) < 1e-5


def test_anchor_to_source_level_restores_the_source_level_of_the_brighter_half():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:40, :48]
    head = ((yy - 20) / 16) ** 2 + ((xx - 24) / 20) ** 2 < 1
    source = np.stack([head * (0.3 + 0.6 * (xx / 48)) + 0.01 * rng.random((40, 48)) for _ in range(4)])
    source = source.astype(np.float32)
    # a contrast change inside the slice and a level that jumps from slice to slice
    gains = np.array([0.6, 1.4, 0.9, 1.2], dtype=np.float32)[:, None, None]
    harmonized = gains * source ** 1.5
    anchored = anchor_to_source_level(harmonized, source)
    for image, reference in zip(anchored, source):
        bright = head & (reference >= np.median(reference[head]))
        assert np.median(image[bright]) == pytest.approx(np.median(reference[bright]), rel=0.02)
    # the contrast within each slice is the harmonized one
    assert np.allclose(anchored[0] / anchored[0].max(), harmonized[0] / harmonized[0].max(), atol=1e-5)
    empty = np.zeros((1, 40, 48), np.float32)
    assert np.array_equal(anchor_to_source_level(empty, empty), empty)


def test_smooth_change_across_slices_removes_level_jitter_and_keeps_detail():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:32, :40]
    head = (((yy - 16) / 13) ** 2 + ((xx - 20) / 17) ** 2 < 1).astype(np.float64)
    count = 24
    source = np.stack([head * (0.4 + 0.5 * xx / 40) for _ in range(count)])
    spans = np.linspace(800.0, 1200.0, count)  # native units differ from slice to slice
    valid = np.ones(count, bool)
    valid[[0, 11]] = False  # an empty slice at the edge and a gap inside
    # harmonization: a contrast change along a smooth trend, a level that jitters slice by slice
    # (in native units), and fine per-slice detail (a checkerboard) that must stay
    trend = 1.0 + 0.01 * np.arange(count)[:, None, None]
    jitter = 0.05 * rng.standard_normal(count)[:, None, None]
    detail = 0.02 * head * np.where((yy + xx) % 2 == 0, 1.0, -1.0)
    harmonized = source * trend + head * jitter * 1000.0 / spans[:, None, None] + detail
    harmonized[~valid] = source[~valid]
    smoothed = smooth_change_across_slices(harmonized, source, spans, valid)

    core = head.astype(bool) & (np.abs(yy - 16) < 8)  # the head's inner part, away from its rim

    def stripes(slices):  # each slice's native-unit change against its neighbours' mean
        levels = np.array([np.median(change[core]) for change in (slices - source) * spans[:, None, None]])
        return np.abs(levels[2:-1] - 0.5 * (levels[1:-2] + levels[3:]))[np.r_[0:8, 11:20]]

    assert stripes(smoothed).mean() < 0.2 * stripes(harmonized).mean()
    # the per-slice detail comes through almost whole, the trend stays, invalid slices are untouched
    checker = np.where((yy + xx) % 2 == 0, 1.0, -1.0)
    kept = np.array([(image * checker)[core].mean() for image in smoothed[valid]])
    assert np.all(kept > 0.7 * 0.02)
    assert np.median(smoothed[-1][core]) > np.median(smoothed[1][core])
    assert np.array_equal(smoothed[~valid], harmonized[~valid].astype(np.float32))


def test_harmonized_volume_has_no_more_banding_than_the_source(model, multiscanner_dataset):
    """Slices are harmonized one by one; the volume must not come out striped."""
    subject = multiscanner_dataset / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    labels = nib.load(multiscanner_dataset / "derivatives" / "groundtruth" / "sub-02" / "anat" / "sub-02_dseg.nii.gz")
    result = harmonize_image(subject, model)
    white_matter = mask_to_slices(np.asarray(labels.dataobj) == 3, labels.affine, result.geometry)
    source = np.moveaxis(grid_volume(result.source_slices, result.geometry), 2, 0)
    harmonized = np.moveaxis(grid_volume(result.harmonized_slices, result.geometry), 2, 0)
    source_banding = slice_banding(source, white_matter)
    harmonized_banding = slice_banding(harmonized, white_matter)
    source_proper = slice_banding(source, white_matter, detrend_slices=4)
    harmonized_proper = slice_banding(harmonized, white_matter, detrend_slices=4)
    source_striping = slice_striping(source, white_matter)
    harmonized_striping = slice_striping(harmonized, white_matter)
    print(f"jumps: source {source_banding:.5f}, harmonized {harmonized_banding:.5f}; without the "
          f"drift: {source_proper:.5f}, {harmonized_proper:.5f}; striping: {source_striping:.5f}, "
          f"{harmonized_striping:.5f}")
    # measured (a Colin27 head): jumps 0.196 % source, 0.255 % harmonized, much of it a drift
    # along the slices (the target scanner's field profile, carried over; README); without the
    # drift 0.169 % and 0.209 %; stripes 0.113 % and 0.122 %. One volume is a noisy sample: the
    # README gives means over 20. Anchoring alone, without smooth_change_across_slices, fails
    # both (0.268 % without the drift, 0.159 % stripes).
    assert harmonized_striping <= source_striping * 1.25
    assert harmonized_proper <= source_proper * 1.3
    assert harmonized_banding <= source_banding * 1.5
    # and the image on the native grid is the grid volume put back
    native = np.asanyarray(result.image.dataobj)
    assert native.shape == nib.load(subject).shape and np.all(np.isfinite(native))
