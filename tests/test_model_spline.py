"""The faster rational-quadratic spline coupling against nflows' own, on real nflows objects."""
from __future__ import annotations

import json

import pytest
import torch
from nflows import transforms
from nflows.nn.nets import ConvResidualNet, ResidualNet
from nflows.transforms.splines import unconstrained_rational_quadratic_spline as nflows_spline
from nflows.utils import torchutils

from bids_harmony.model import FlowConfig, build_flow, count_parameters
from bids_harmony.model.architecture import LUOneByOneConvolution
from bids_harmony.model.spline import (
    RationalQuadraticCoupling,
    unconstrained_rational_quadratic_spline,
)

# (num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
SPLINE_CONFIGS = [(8, 3.0, 1e-3, 1e-3, 1e-3), (5, 1.5, 1e-2, 2e-3, 1e-2), (2, 4.0, 1e-3, 1e-3, 1e-3)]
TINY_SHAPE = (1, 16, 16)
TINY = FlowConfig(levels=2, steps_per_level=2, hidden_channels=8, num_res_blocks=1)


def _spline_inputs(num_bins: int, tail_bound: float, dtype=torch.float32, count: int = 4000):
    generator = torch.Generator().manual_seed(num_bins)
    # About a fifth of the inputs beyond the tail bound, plus both bounds and points beyond.
    inputs = torch.randn(count, generator=generator, dtype=torch.float64) * tail_bound * 0.8
    inputs[:6] = torch.tensor([-tail_bound, tail_bound, -tail_bound * 1.5, tail_bound * 1.5,
                               -tail_bound * 40, 0.0], dtype=torch.float64)
    params = [torch.randn(count, size, generator=generator, dtype=torch.float64) * 1.5
              for size in (num_bins, num_bins, num_bins - 1)]
    return [tensor.to(dtype) for tensor in (inputs, *params)]


def _run(spline, tensors, inverse, config, **extra):
    num_bins, tail_bound, min_width, min_height, min_derivative = config
    leaves = [tensor.clone().requires_grad_(True) for tensor in tensors]
    outputs, logabsdet = spline(
        *leaves, inverse=inverse, tail_bound=tail_bound, min_bin_width=min_width,
        min_bin_height=min_height, min_derivative=min_derivative, **extra,
    )
    # A loss that weights every output and log-determinant differently.
    weights = torch.linspace(0.5, 1.5, outputs.numel(), dtype=outputs.dtype).view_as(outputs)
    (weights * torch.sin(outputs) + torch.cos(weights * logabsdet)).sum().backward()
    return outputs.detach(), logabsdet.detach(), [leaf.grad for leaf in leaves]


def _tolerance_check(actual, expected, relative):
    scale = expected.abs().max().clamp_min(1.0)
    assert (actual - expected).abs().max() <= relative * scale


@pytest.mark.parametrize("config", SPLINE_CONFIGS)
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_matches_nflows_in_float32(config, inverse):
    tensors = _spline_inputs(config[0], config[1])
    ours = _run(unconstrained_rational_quadratic_spline, tensors, inverse, config)
    theirs = _run(nflows_spline, tensors, inverse, config, tails="linear")
    assert (ours[0] - theirs[0]).abs().max() < 1e-5
    assert (ours[1] - theirs[1]).abs().max() < 1e-4
    # Beyond the tail bound: identity, zero log-determinant, exactly.
    outside = tensors[0].abs() > config[1]
    assert outside.sum() > 100
    assert torch.equal(ours[0][outside], tensors[0][outside])
    assert torch.equal(ours[1][outside], torch.zeros_like(ours[1][outside]))
    # Gradients agree up to float32 round-off (both sides carry some; see the float64 test).
    for our_grad, their_grad in zip(ours[2], theirs[2]):
        _tolerance_check(our_grad, their_grad, 1e-4)


@pytest.mark.parametrize("config", SPLINE_CONFIGS)
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_and_gradients_match_nflows_in_float64(config, inverse):
    # Free of float32 noise, the two must compute the same function, to the last digits.
    tensors = _spline_inputs(config[0], config[1], dtype=torch.float64)
    ours = _run(unconstrained_rational_quadratic_spline, tensors, inverse, config)
    theirs = _run(nflows_spline, tensors, inverse, config, tails="linear")
    assert torch.allclose(ours[0], theirs[0], rtol=0, atol=1e-12)
    assert torch.allclose(ours[1], theirs[1], rtol=0, atol=1e-10)
    for our_grad, their_grad in zip(ours[2], theirs[2]):
        _tolerance_check(our_grad, their_grad, 1e-10)


def test_spline_accepts_the_bins_on_another_dimension():
    config = SPLINE_CONFIGS[0]
    inputs, widths, heights, derivatives = _spline_inputs(config[0], config[1], count=60)
    expected = unconstrained_rational_quadratic_spline(
        inputs, widths, heights, derivatives, tail_bound=config[1]
    )
    # (60, K) -> (3, K, 20): bins on dim 1 of a batch of shape (3, 20).
    moved = [p.view(3, 20, -1).permute(0, 2, 1).contiguous() for p in (widths, heights, derivatives)]
    outputs, logabsdet = unconstrained_rational_quadratic_spline(
        inputs.view(3, 20), *moved, tail_bound=config[1], bin_dim=1
    )
    assert torch.allclose(outputs.flatten(), expected[0], atol=1e-5)
    assert torch.allclose(logabsdet.flatten(), expected[1], atol=1e-4)


def test_spline_inverse_undoes_forward():
    # In float64: where a random bin squeezes a wide input range into a tiny output range,
    # float32 round-off is amplified by the inverse (nflows' own spline loses 1e-2 there too).
    config = SPLINE_CONFIGS[0]
    inputs, widths, heights, derivatives = _spline_inputs(config[0], config[1], dtype=torch.float64)
    outputs, logabsdet = unconstrained_rational_quadratic_spline(
        inputs, widths, heights, derivatives, tail_bound=config[1]
    )
    recovered, inverse_logabsdet = unconstrained_rational_quadratic_spline(
        outputs, widths, heights, derivatives, inverse=True, tail_bound=config[1]
    )
    assert (recovered - inputs).abs().max() < 1e-9
    assert torch.allclose(inverse_logabsdet, -logabsdet, atol=1e-8)


def _coupling_pair(cls_a, cls_b, channels, config, dtype):
    num_bins, tail_bound, min_width, min_height, min_derivative = config
    made = []
    for cls in (cls_a, cls_b):
        torch.manual_seed(0)
        made.append(cls(
            mask=torchutils.create_mid_split_binary_mask(channels),
            transform_net_create_fn=lambda i, o: ConvResidualNet(
                i, o, hidden_channels=8, num_blocks=1, use_batch_norm=True),
            num_bins=num_bins, tails="linear", tail_bound=tail_bound,
            min_bin_width=min_width, min_bin_height=min_height, min_derivative=min_derivative,
        ).to(dtype))
    # Larger output weights than nflows' near-zero initialisation, so the splines are far from
    # the identity.
    with torch.no_grad():
        for parameter in made[0].transform_net.final_layer.parameters():
            parameter.normal_(0.0, 2.0)
    made[1].load_state_dict(made[0].state_dict())
    return made


@pytest.mark.parametrize("config", SPLINE_CONFIGS[:2])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coupling_matches_nflows_coupling(config, inverse, dtype):
    ours, theirs = _coupling_pair(
        RationalQuadraticCoupling, transforms.PiecewiseRationalQuadraticCouplingTransform,
        5, config, dtype,  # 5 channels: an odd mid split (3 transformed, 2 identity)
    )
    assert [k for k in ours.state_dict()] == [k for k in theirs.state_dict()]
    generator = torch.Generator().manual_seed(1)
    inputs = (torch.randn((3, 5, 6, 4), generator=generator, dtype=torch.float64)
              * config[1]).to(dtype)
    results = []
    for coupling in (ours, theirs):
        coupling.eval()
        leaf = inputs.clone().requires_grad_(True)
        outputs, logabsdet = (coupling.inverse if inverse else coupling)(leaf)
        (outputs.sin().sum() + logabsdet.sum()).backward()
        grads = [leaf.grad] + [p.grad for p in coupling.parameters()]
        results.append((outputs.detach(), logabsdet.detach(), grads))
    (our_out, our_lad, our_grads), (their_out, their_lad, their_grads) = results
    if dtype == torch.float64:
        out_tol, lad_tol, grad_tol = 1e-12, 1e-10, 1e-10
    else:
        # The float32 inverse amplifies round-off where a bin is steep (see the float64 case).
        out_tol, lad_tol, grad_tol = (1e-3, 1e-4, 1e-3) if inverse else (1e-5, 1e-4, 1e-4)
    assert (our_out - their_out).abs().max() < out_tol
    assert (our_lad - their_lad).abs().max() < lad_tol * max(1.0, their_lad.abs().max().item())
    for our_grad, their_grad in zip(our_grads, their_grads):
        _tolerance_check(our_grad, their_grad, grad_tol)


def test_coupling_on_flat_inputs_matches_nflows():
    config = SPLINE_CONFIGS[0]
    made = []
    for cls in (RationalQuadraticCoupling,
                transforms.PiecewiseRationalQuadraticCouplingTransform):
        torch.manual_seed(0)
        made.append(cls(
            mask=torchutils.create_alternating_binary_mask(6, even=True),  # not contiguous halves
            transform_net_create_fn=lambda i, o: ResidualNet(i, o, hidden_features=16),
            num_bins=config[0], tails="linear", tail_bound=config[1],
        ))
    with torch.no_grad():
        made[0].transform_net.final_layer.weight.normal_(0.0, 1.0)
    made[1].load_state_dict(made[0].state_dict())
    inputs = torch.randn(40, 6) * 3
    for direction in ("forward", "inverse"):
        ours = getattr(made[0], direction)(inputs)
        theirs = getattr(made[1], direction)(inputs)
        assert (ours[0] - theirs[0]).abs().max() < 1e-5
        assert (ours[1] - theirs[1]).abs().max() < 1e-4


def _flow_pair(config, shape, batch, dtype=torch.float32):
    torch.manual_seed(0)
    fast = build_flow(config, shape).to(dtype)
    torch.manual_seed(1)  # other random permutations: they must come from the state dict
    reference = build_flow(config, shape, reference=True).to(dtype)
    fast.train()
    with torch.no_grad():
        fast.log_prob(batch)  # data-dependent ActNorm initialisation
    reference.load_state_dict(fast.state_dict())
    return fast, reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flow_matches_the_flow_built_from_nflows_classes(dtype):
    generator = torch.Generator().manual_seed(0)
    batch = (torch.rand((4, *TINY_SHAPE), generator=generator) - 0.5).to(dtype)
    fast, reference = _flow_pair(TINY, TINY_SHAPE, batch, dtype)
    assert count_parameters(fast) == count_parameters(reference)
    assert list(fast.state_dict()) == list(reference.state_dict())
    assert any(isinstance(m, RationalQuadraticCoupling) for m in fast.modules())
    assert not any(isinstance(m, RationalQuadraticCoupling) for m in reference.modules())

    tolerance = 1e-9 if dtype == torch.float64 else 2e-3
    for mode in ("train", "eval"):
        reference.load_state_dict(fast.state_dict())  # the same batch-norm running statistics
        fast.train(mode == "train")
        reference.train(mode == "train")
        log_probs, grads = [], []
        for flow in (fast, reference):
            flow.zero_grad()
            leaf = batch.clone().requires_grad_(True)
            log_prob = flow.log_prob(leaf)
            log_prob.sum().backward()
            log_probs.append(log_prob.detach())
            grads.append([leaf.grad] + [p.grad for p in flow.parameters()])
        assert torch.allclose(log_probs[0], log_probs[1], rtol=0, atol=tolerance), mode
        for ours, theirs in zip(*grads):
            _tolerance_check(ours, theirs, 1e-9 if dtype == torch.float64 else 1e-3)

    fast.eval()
    reference.eval()
    with torch.no_grad():
        noise, _ = fast._transform.forward(batch)
        ours, our_logabsdet = fast._transform.inverse(noise)
        theirs, their_logabsdet = reference._transform.inverse(noise)
    assert (ours - theirs).abs().max() < (1e-10 if dtype == torch.float64 else 1e-4)
    assert torch.allclose(our_logabsdet, their_logabsdet, rtol=0, atol=tolerance)


def test_small_preset_matches_reference_at_full_slice_size():
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand((2, 1, 144, 176), generator=generator) - 0.5
    fast, reference = _flow_pair("small", (1, 144, 176), batch)
    fast.eval()
    reference.eval()
    with torch.no_grad():
        ours, theirs = fast.log_prob(batch), reference.log_prob(batch)
    # log densities of about -1e4 over 25,344 dimensions: agreement to float32 round-off
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0.05)


def test_weights_saved_from_either_flow_load_into_the_other():
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand((3, *TINY_SHAPE), generator=generator) - 0.5
    fast, reference = _flow_pair(TINY, TINY_SHAPE, batch)
    torch.manual_seed(5)
    fresh = build_flow(json.loads(json.dumps(TINY.to_dict())), shape=TINY_SHAPE)
    fresh.load_state_dict(reference.state_dict())  # nflows classes -> ours
    for flow in (fast, reference, fresh):
        flow.eval()
    with torch.no_grad():
        assert torch.allclose(fresh.log_prob(batch), reference.log_prob(batch), atol=1e-3)
        assert torch.allclose(fresh.log_prob(batch), fast.log_prob(batch), atol=1e-6)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_flow_round_trip(mode):
    generator = torch.Generator().manual_seed(2)
    batch = torch.rand((4, *TINY_SHAPE), generator=generator) - 0.5
    fast, _ = _flow_pair(TINY, TINY_SHAPE, batch)
    fast.train(mode == "train")
    with torch.no_grad():
        noise, logabsdet = fast._transform.forward(batch)
        recovered, inverse_logabsdet = fast._transform.inverse(noise)
        # latents far out in the tails map back and forth too
        wide = torch.randn(noise.shape, generator=generator) * 4
        there, _ = fast._transform.inverse(wide)
        back, _ = fast._transform.forward(there)
    assert (recovered - batch).abs().max() < 1e-4
    assert torch.allclose(logabsdet, -inverse_logabsdet, rtol=1e-4, atol=1e-3)
    assert (back - wide).abs().max() < 1e-3


def test_lu_convolution_matches_nflows_computation():
    torch.manual_seed(0)
    ours = LUOneByOneConvolution(6, identity_init=False)
    stock = transforms.OneByOneConvolution(6, identity_init=False)
    stock.load_state_dict(ours.state_dict())
    inputs = torch.randn(3, 6, 5, 4)
    outputs, logabsdet = ours(inputs)
    expected, expected_logabsdet = stock(inputs)
    assert torch.allclose(outputs, expected, atol=1e-5)
    assert torch.allclose(logabsdet, expected_logabsdet, rtol=1e-5)
    recovered, inverse_logabsdet = ours.inverse(outputs)
    assert torch.allclose(recovered, inputs, atol=1e-5)
    assert torch.allclose(inverse_logabsdet, -logabsdet, rtol=1e-5)
