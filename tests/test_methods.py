"""The named methods: ours and the authors' two loops (docs/methods.md), their gradients checked
against autograd or finite differences, their loop steps against hand-worked cases, the per-slice
guard, and the volume steps switched off."""
import nibabel as nib
import numpy as np
import pytest
import torch

from bids_harmony.bench import simulate_domain
from bids_harmony.errors import SettingsError
from bids_harmony.harmonize import (
    HighPass,
    _harmonize_batch,
    _latent_shrink,
    batch_correlation_gradient,
    cosine_gradient,
    edge_term,
    fidelity_step,
    flat_parts,
    harmonize_image,
    harmonize_slices,
    keep_usable,
    likelihood_step,
    pearson,
    sobel,
    sobel_total_variation,
    start_images,
)
from bids_harmony.model import load_model
from bids_harmony.preprocessing import from_slices
from bids_harmony.settings import METHODS, OUR_ADDITIONS, HarmonizationParams
from bids_harmony.templates import template_file


@pytest.fixture(scope="module")
def model():
    return load_model()


def _random(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- presets

def test_presets_are_settings_values_with_the_seeds_names():
    assert list(METHODS) == ["bids_harmony", "arxiv-v1", "camera-ready"]
    assert HarmonizationParams.preset("bids_harmony") == HarmonizationParams()
    camera_ready = HarmonizationParams.preset("camera-ready")
    assert (camera_ready.iterations, camera_ready.alpha, camera_ready.beta1, camera_ready.beta2) == (10, 1e-3, 1000, 1e-3)
    assert camera_ready.alpha2 == camera_ready.alpha  # z <- (1 - alpha) z
    assert (camera_ready.fidelity, camera_ready.edge, camera_ready.init, camera_ready.result) == (
        "cosine", "sobel-tv", "mean-unmasked", "flow")
    arxiv = HarmonizationParams.preset("arxiv-v1")
    assert (arxiv.iterations, arxiv.alpha, arxiv.alpha2, arxiv.beta1, arxiv.beta2, arxiv.batch_size) == (
        5, 1e-3, 0.06, 1000, 0.5, 50)
    assert (arxiv.fidelity, arxiv.edge, arxiv.result) == ("batch-correlation", "highpass", "fidelity")
    ablated = camera_ready.replace(beta1=0)
    assert ablated.beta1 == 0.0 and ablated.method() == ("camera-ready", {"beta1": 0.0})
    assert HarmonizationParams().method() == ("bids_harmony", {})
    assert HarmonizationParams().additions() == list(OUR_ADDITIONS)
    assert camera_ready.additions() == [] and arxiv.additions() == []
    with pytest.raises(SettingsError, match="unknown method 'paper'"):
        HarmonizationParams.preset("paper")


# --------------------------------------------------------------------------- gradients

def test_cosine_gradient_matches_autograd():
    x, y = _random(3, 12, 10, seed=0), _random(3, 12, 10, seed=1).requires_grad_(True)
    cosine = (x * y).flatten(1).sum(1) / (x.flatten(1).norm(dim=1) * y.flatten(1).norm(dim=1))
    (autograd,) = torch.autograd.grad(-cosine.sum(), y)
    assert torch.allclose(cosine_gradient(x, y.detach()), autograd, atol=1e-7)  # the norms carry 1e-6
    stepped = y.detach() - cosine_gradient(x, y.detach())  # a step along it raises the cosine
    new = (x * stepped).flatten(1).sum(1) / (x.flatten(1).norm(dim=1) * stepped.flatten(1).norm(dim=1))
    assert torch.all(new > cosine.detach())


def test_batch_correlation_gradient_matches_autograd_with_the_batchs_pixel_count():
    x, y = _random(3, 12, 10, seed=2), _random(3, 12, 10, seed=3).requires_grad_(True)
    n = y.numel()  # the whole batch's pixels, as the authors' May-2023 code counts them
    sx, sy = x.flatten(1).sum(1), y.flatten(1).sum(1)
    rho = (n * (x * y).flatten(1).sum(1) - sx * sy) / torch.sqrt(
        (n * y.square().flatten(1).sum(1) - sy ** 2) * (n * x.square().flatten(1).sum(1) - sx ** 2))
    (autograd,) = torch.autograd.grad(-rho.sum(), y)
    assert torch.allclose(batch_correlation_gradient(x, y.detach()), autograd, rtol=1e-9, atol=1e-12)
    # one slice in the batch: the count is the slice's own and rho is Pearson's correlation
    one = y[:1].detach().requires_grad_(True)
    (pearson_gradient,) = torch.autograd.grad(-pearson(x[:1], one).sum(), one)
    assert torch.allclose(batch_correlation_gradient(x[:1], one.detach()), pearson_gradient, atol=1e-12)


def _authors_sobel(images, axis):
    """OpenCV's 3 x 3 Sobel (cv2.Sobel with its default reflect-101 border), in numpy."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    smooth, derive = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    rows, columns = (smooth, derive) if axis == "x" else (derive, smooth)
    height, width = images.shape[1:]
    out = np.zeros_like(images)
    for i in range(3):
        for j in range(3):
            out += rows[i] * columns[j] * padded[:, i:i + height, j:j + width]
    return out


def test_sobel_tv_masks_and_gradient():
    x = np.zeros((1, 12, 14))
    x[0, 2:10, 2:12] = np.linspace(0.2, 1.0, 10)[None, :]  # a ramp on a foreground, dark around
    x[0, 2:10, 7:] += 0.5  # and a step edge
    x, y = torch.as_tensor(x), _random(1, 12, 14, seed=4)
    directions = sobel(x, "reflect")
    assert np.allclose(directions[:, 0].numpy(), _authors_sobel(x.numpy(), "x"))
    assert np.allclose(directions[:, 1].numpy(), _authors_sobel(x.numpy(), "y"))
    masks = flat_parts(x, 30.0, 0.05)
    assert not masks[0, 0, 2:10, 6:8].any()  # the step edge is never "flat"
    assert not masks[0, :, 0, :].any() and not masks[0, :, 11, :].any()  # nor the dark outside
    magnitude = directions.abs()
    for direction in range(2):
        inside = masks[0, direction]
        limit = np.percentile(magnitude[0, direction].numpy(), 30)
        assert (magnitude[0, direction][inside] < limit).all()

    params = HarmonizationParams.preset("camera-ready")
    gradient = edge_term(x, params, None)(y)
    step, numeric = 1e-6, torch.zeros_like(y)
    for index in np.ndindex(y.shape):
        plus, minus = y.clone(), y.clone()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (sobel_total_variation(masks, plus) - sobel_total_variation(masks, minus)).sum() / (2 * step)
    assert torch.allclose(gradient, numeric, atol=1e-5)
    # away from the border it is the authors' expression, -[Sx(Mx sign(Sx y)) + Sy(My sign(Sy y))]
    signs = (masks * torch.sign(sobel(y, "reflect"))).numpy()
    theirs = -(_authors_sobel(signs[:, 0], "x") + _authors_sobel(signs[:, 1], "y"))
    assert np.allclose(gradient.numpy()[:, 2:-2, 2:-2], theirs[:, 2:-2, 2:-2])


# --------------------------------------------------------------------------- loop steps by hand

def test_fidelity_and_latent_steps_by_hand():
    x = torch.tensor([[[0.2, 0.4], [0.6, 0.8]]], dtype=torch.float64)
    y = torch.tensor([[[0.5, 0.1], [0.3, 0.9]]], dtype=torch.float64)
    xv, yv = x.numpy().ravel(), y.numpy().ravel()
    # camera-ready, edge term off: y - beta1 * (-x/(|y||x|) + <x,y> y/(|y|^3 |x|)), norms + 1e-6 as theirs
    cosine = HarmonizationParams.preset("camera-ready").replace(beta2=0.0)
    nx, ny = np.sqrt((xv ** 2).sum()) + 1e-6, np.sqrt((yv ** 2).sum()) + 1e-6
    expected = yv - 1000 * (-xv / (nx * ny) + (xv @ yv) * yv / (ny ** 3 * nx))
    assert np.allclose(fidelity_step(x, y, cosine, None).numpy().ravel(), expected, rtol=1e-12)
    # arxiv-v1, edge term off: one slice in the batch, so rho is Pearson's r
    batch = HarmonizationParams.preset("arxiv-v1").replace(beta2=0.0)
    xc, yc = xv - xv.mean(), yv - yv.mean()
    r = xc @ yc / np.sqrt((xc @ xc) * (yc @ yc))
    d_r = xc / np.sqrt((xc @ xc) * (yc @ yc)) - r * yc / (yc @ yc)
    assert np.allclose(fidelity_step(x, y, batch, None).numpy().ravel(), yv + 1000 * d_r)
    # ours: beta1 = 1 puts x's centred part, rescaled to y's spread, in place of y's (plus 1 - r of y's)
    ours = HarmonizationParams(beta1=1.0, beta2=0.0)
    assert np.allclose(fidelity_step(x, y, ours, None).numpy().ravel(),
                       yv.mean() + (1 - r) * yc + yc.std() / xc.std() * xc)
    # the edge step adds beta2 times the edge gradient
    highpass = HighPass((2, 2), 0.05, torch.device("cpu"), torch.float64)
    with_edges = HarmonizationParams(beta1=0.0, beta2=0.5)
    assert torch.allclose(fidelity_step(x, y, with_edges, edge_term(x, with_edges, highpass)),
                          y - 0.5 * highpass(y - x))
    # latent steps: (1 - alpha)(z - mean) + (1 - alpha2) mean; camera-ready's alpha2 = alpha: (1 - alpha) z
    z = torch.tensor([[1.0, 2.0, 6.0]])
    assert torch.allclose(_latent_shrink(z, 0.1, 0.5), torch.tensor([[-1.8 + 1.5, -0.9 + 1.5, 2.7 + 1.5]]))  # mean 3
    assert torch.allclose(_latent_shrink(z, 0.1, 0.1), 0.9 * z)


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_runs_its_loop_as_documented(model, name):
    """Two iterations composed by hand from the documented steps, on the real flow, equal the method's
    result: start, then fidelity and likelihood steps, the result being the last fidelity step or
    the last flow output."""
    params = HarmonizationParams.preset(name).replace(iterations=2)
    positions = np.array([50, 70])
    source = simulate_domain(model.mean_slices[positions], "gamma1.5")
    x = torch.as_tensor(source)
    means = torch.as_tensor(model.mean_slices, dtype=torch.float32)
    highpass = HighPass(tuple(model.shape[1:]), params.highpass_radius, torch.device("cpu"))
    edge = edge_term(x, params, highpass)
    y = start_images(x, means[positions], means.mean(0, keepdim=True), params)
    if params.init == "mean-unmasked":
        assert torch.equal(y, means[positions])
    with torch.no_grad():
        y = likelihood_step(fidelity_step(x, y, params, edge), model, params)
        last = fidelity_step(x, y, params, edge)
        expected = last.clamp(0, 1) if params.result == "fidelity" else likelihood_step(last, model, params)
    harmonized = harmonize_slices(source, model, positions, params.replace(target_background=False))
    assert np.allclose(harmonized, expected.numpy(), atol=1e-5)


def test_the_guard_keeps_each_bad_slice_apart():
    good, fallback = torch.full((1, 2, 2), 0.5), torch.full((4, 2, 2), 0.25)
    candidate = torch.cat([good, torch.full((1, 2, 2), float("nan")), torch.zeros(1, 2, 2),
                           torch.tensor([[[0.1, float("inf")], [0.2, 0.3]]])])
    kept = keep_usable(candidate, fallback)
    assert torch.equal(kept[0], good[0]) and torch.equal(kept[1:], fallback[1:])


def test_a_slice_whose_step_is_not_finite_keeps_its_iterate(model):
    """The May-2023 gradient divides by the iterate's spread: a flat start gives NaN for that
    slice alone; the other slice's result is unchanged and everything stays finite."""
    params = HarmonizationParams.preset("arxiv-v1").replace(iterations=1)
    positions = np.array([60, 61])
    x = torch.as_tensor(simulate_domain(model.mean_slices[positions], "exp"))
    start = torch.as_tensor(model.mean_slices[positions]).clone()
    assert not torch.isfinite(batch_correlation_gradient(x, torch.zeros_like(start))).all()
    highpass = HighPass(tuple(model.shape[1:]), params.highpass_radius, torch.device("cpu"))
    flat = start.clone()
    flat[1] = 0.0
    out = _harmonize_batch(x, flat, model, params, highpass)
    reference = _harmonize_batch(x, start, model, params, highpass)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], flat[1])  # its iterate, kept
    assert torch.equal(out[0], reference[0])  # the other slice as if nothing had happened


# --------------------------------------------------------------------------- volume steps

def test_volume_steps_off_give_the_per_slice_result_on_the_native_grid(model):
    params = HarmonizationParams(iterations=1, anchor_level=False, smooth_across_slices=False)
    result = harmonize_image(nib.load(str(template_file("T1w"))), model, params)
    valid = np.flatnonzero(result.geometry.valid)
    expected = result.source_slices.copy()
    expected[valid] = harmonize_slices(result.source_slices[valid], model, result.geometry.positions[valid], params)
    assert np.array_equal(result.harmonized_slices, expected)
    native = from_slices(expected, result.geometry)
    assert np.allclose(np.asarray(result.image.dataobj), np.asarray(native.dataobj))
    with_steps = harmonize_image(nib.load(str(template_file("T1w"))), model, iterations=1)
    assert not np.allclose(with_steps.harmonized_slices, expected)  # the steps change something
