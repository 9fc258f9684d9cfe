"""A faster rational-quadratic spline coupling, a drop-in for nflows' class.

``nflows.transforms.PiecewiseRationalQuadraticCouplingTransform`` (with linear tails) spends
most of its CPU time outside the coupling network: it splits the elements inside and
outside the tail interval with boolean-mask gathers and scatters (``nonzero``, ``index``,
``index_put``), pads and normalises every spline parameter (softplus of all ``K + 1``
derivatives, ``heights / widths`` for all bins), works on the ``(..., K)`` parameter layout
that a permuted view of the network output gives (strided, so most kernels copy it first),
runs seven separate gathers, and in the inverse checks ``assert (discriminant >= 0).all()``.

:func:`unconstrained_rational_quadratic_spline` here computes the same function, written from
the equations of Durkan et al. 2019 ("Neural Spline Flows", eqs. 4-8 and appendix A) with
nflows' parameterisation, but

- evaluates the spline on *all* elements, with the inputs clamped into ``[-B, B]``, and
  merges the identity (linear) tails with ``torch.where``, so nothing is gathered by mask;
- keeps the bins on any dimension (``bin_dim``), so that the coupling can use the network
  output ``(N, C * P, H, W)`` as the contiguous view ``(N, C, P, H, W)`` with no copy;
- touches the ``K`` bin planes only where it must (softmax, cumulative sum, the bin search
  by comparison with the interior knots); everything after the bin search (knot positions,
  derivatives, softplus) is gathered first and computed on single planes, with the fixed
  boundary knots (``-B``, ``B``) and boundary derivatives (slope 1, from nflows' padding
  constant) put in with ``torch.where`` instead of padding the parameter tensors.

:class:`RationalQuadraticCoupling` subclasses the nflows class: same constructor, same
sub-modules, parameters, buffers and state-dict keys (weights load either way), and the same
outputs and log-determinants up to float32 round-off. For image inputs with channel masks
that split into two contiguous ranges (nflows' mid split, used by the BlindHarmony flow) it
also replaces the index-select / index-put of the two halves by slicing and ``torch.cat``.
Anything it does not speed up (other tails, the unconditional transform) goes to nflows' code.
"""
from __future__ import annotations

import math

import torch
from nflows import transforms
from nflows.transforms.splines.rational_quadratic import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
)
from torch.nn import functional as F

__all__ = ["RationalQuadraticCoupling", "unconstrained_rational_quadratic_spline"]


def _boundary_derivative(min_derivative: float, like: torch.Tensor) -> torch.Tensor:
    """The derivative nflows puts at both ends of the interval for linear tails.

    nflows pads the unnormalised derivatives with ``log(exp(1 - min_derivative) - 1)``, so that
    ``min_derivative + softplus(.)`` is 1 (the slope of the identity tails) up to round-off;
    computed the same way here, in the inputs' dtype, so that the two agree to the last bit.
    """
    constant = math.log(math.exp(1.0 - min_derivative) - 1.0)
    return min_derivative + F.softplus(torch.tensor(constant, dtype=like.dtype, device=like.device))


def _rq_spline(
    inputs: torch.Tensor,
    unnormalized_knots: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    dim: int,
    inverse: bool,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
    scale: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline with widths and heights in one tensor.

    ``inputs`` has shape ``S``; ``unnormalized_knots`` has shape ``S[:dim] + (2, K) + S[dim:]``
    (widths, then heights, on axis ``dim``; bins on ``dim + 1``); ``unnormalized_derivatives``
    has shape ``S[:dim] + (K - 1,) + S[dim:]`` (interior knots 1..K-1).
    """
    num_bins = unnormalized_knots.shape[dim + 1]
    pair_axis, bin_axis = dim, dim + 1
    trailing = (1,) * (inputs.dim() - dim)  # broadcasts a (2, K) table over S[dim:]
    dtype, device = inputs.dtype, inputs.device

    x = inputs.unsqueeze(dim).unsqueeze(dim)  # S[:dim] + (1, 1) + S[dim:]
    inside = x.abs() <= bound
    clamped = x.clamp(-bound, bound)

    # Interior knots 1..K-1 of both axes, in nflows' arithmetic (same rounding): bin sizes
    # m + (1 - m K) softmax(u) (m the minimal bin size), cumulated, scaled from [0, 1] to
    # [-B, B]; knot 0 is -B and knot K is B. Only these lines and the search touch K planes.
    if scale is not None:
        unnormalized_knots = unnormalized_knots / scale
    sizes = F.softmax(unnormalized_knots, dim=bin_axis).narrow(bin_axis, 0, num_bins - 1)
    if min_bin_width == min_bin_height:
        sizes = min_bin_width + (1 - min_bin_width * num_bins) * sizes
    else:
        minimum = torch.tensor([min_bin_width, min_bin_height], dtype=dtype, device=device)
        sizes = minimum.view(2, 1, *trailing) + (1 - minimum * num_bins).view(2, 1, *trailing) * sizes
    knots = 2 * bound * torch.cumsum(sizes, dim=bin_axis) - bound

    # Bin index 0..K-1 = number of interior knots at or below the (clamped) input: nflows'
    # searchsorted, whose knot 0 (-B) is always at or below it and whose knot K (B + eps) never.
    search = knots.narrow(pair_axis, 1 if inverse else 0, 1)
    count_dtype = torch.uint8 if num_bins <= 256 else torch.int64  # a cheaper reduction
    bin_index = (clamped >= search).sum(bin_axis, keepdim=True, dtype=count_dtype).long()

    # Knots and derivatives at both ends of the bin. Interior knot / derivative k is stored at
    # plane k - 1; the ends of the interval are fixed: knots -B and B, derivative 1 (linear tails).
    at_ends = torch.cat([bin_index == 0, bin_index == num_bins - 1], bin_axis)
    edges = torch.tensor([-bound, bound], dtype=dtype, device=device).view(2, *trailing)
    boundary_derivative = _boundary_derivative(min_derivative, inputs)
    if num_bins > 1:
        planes = torch.cat(
            [(bin_index - 1).clamp_min(0), bin_index.clamp_max(num_bins - 2)], bin_axis
        )
        ends = torch.gather(knots, bin_axis, planes.expand(*knots.shape[:bin_axis], 2,
                                                            *knots.shape[bin_axis + 1:]))
        derivatives = min_derivative + F.softplus(
            torch.gather(unnormalized_derivatives.unsqueeze(pair_axis), bin_axis, planes)
        )
    else:
        ends = x.new_zeros(()).expand(*x.shape[:dim], 2, 2, *x.shape[dim + 2:])
        derivatives = x.new_zeros(()).expand(*x.shape[:dim], 1, 2, *x.shape[dim + 2:])
    ends = torch.where(at_ends, edges, ends)  # (x, y) on pair_axis, (low, high) on bin_axis
    derivatives = torch.where(at_ends, boundary_derivative, derivatives)

    sizes = ends.narrow(bin_axis, 1, 1) - ends.narrow(bin_axis, 0, 1)
    width, height = sizes.narrow(pair_axis, 0, 1), sizes.narrow(pair_axis, 1, 1)
    x_low = ends.narrow(pair_axis, 0, 1).narrow(bin_axis, 0, 1)
    y_low = ends.narrow(pair_axis, 1, 1).narrow(bin_axis, 0, 1)
    d_low = derivatives.narrow(bin_axis, 0, 1)
    d_high = derivatives.narrow(bin_axis, 1, 1)
    delta = height / width
    slope_sum = d_low + d_high - 2 * delta

    # Durkan et al. 2019, eqs. 4-8: with t the position in the bin, s = h / w,
    # y = y_k + h (s t^2 + d_k t(1-t)) / (s + (d_k + d_k+1 - 2s) t(1-t)) and
    # dy/dx = s^2 (d_k+1 t^2 + 2s t(1-t) + d_k (1-t)^2) / (s + (d_k + d_k+1 - 2s) t(1-t))^2.
    if inverse:
        # Appendix A: t solves a t^2 + b t + c = 0; the root 2c / (-b - sqrt(b^2 - 4ac)).
        offset = clamped - y_low
        a = offset * slope_sum + height * (delta - d_low)
        b = height * d_low - offset * slope_sum
        c = -delta * offset
        discriminant = (b.pow(2) - 4 * a * c).clamp_min(0.0)
        theta = (2 * c) / (-b - torch.sqrt(discriminant))
        outputs = theta * width + x_low
    else:
        theta = (clamped - x_low) / width

    theta_one_minus_theta = theta * (1 - theta)
    denominator = delta + slope_sum * theta_one_minus_theta
    derivative_numerator = delta.pow(2) * (
        d_high * theta.pow(2) + 2 * delta * theta_one_minus_theta + d_low * (1 - theta).pow(2)
    )
    logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet
    else:
        numerator = height * (delta * theta.pow(2) + d_low * theta_one_minus_theta)
        outputs = y_low + numerator / denominator

    outputs = torch.where(inside, outputs, x).squeeze(bin_axis).squeeze(pair_axis)
    logabsdet = torch.where(inside, logabsdet, 0.0).squeeze(bin_axis).squeeze(pair_axis)
    return outputs, logabsdet


def _check_bins(num_bins: int, min_bin_width: float, min_bin_height: float) -> None:
    if min_bin_width * num_bins > 1.0:
        raise ValueError("Minimal bin width too large for the number of bins")
    if min_bin_height * num_bins > 1.0:
        raise ValueError("Minimal bin height too large for the number of bins")


def unconstrained_rational_quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    inverse: bool = False,
    tail_bound: float = 1.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    bin_dim: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotonic rational-quadratic spline on ``[-B, B]``, identity outside ("linear" tails).

    Same arguments and results as ``nflows.transforms.splines.unconstrained_rational_quadratic_
    spline(..., tails="linear")``: the parameter tensors have the shape of ``inputs`` with one
    more dimension ``bin_dim`` (``-1`` as in nflows, or any other) of size K (widths, heights)
    and K - 1 (interior derivatives). Returns ``(outputs, logabsdet)``, elementwise, of the
    shape of ``inputs``.
    """
    num_bins = unnormalized_widths.shape[bin_dim]
    _check_bins(num_bins, min_bin_width, min_bin_height)
    if unnormalized_heights.shape != unnormalized_widths.shape:
        raise ValueError("widths and heights must have the same shape")
    if unnormalized_derivatives.shape[bin_dim] != num_bins - 1:
        raise ValueError("linear tails take num_bins - 1 interior derivatives")
    dim = bin_dim % unnormalized_widths.dim()
    return _rq_spline(
        inputs,
        torch.stack([unnormalized_widths, unnormalized_heights], dim),
        unnormalized_derivatives,
        dim,
        inverse,
        float(tail_bound),
        min_bin_width,
        min_bin_height,
        min_derivative,
        None,
    )


def _contiguous_range(indices: torch.Tensor) -> tuple[int, int] | None:
    values = indices.tolist()
    if values and values == list(range(values[0], values[0] + len(values))):
        return values[0], len(values)
    return None


class RationalQuadraticCoupling(transforms.PiecewiseRationalQuadraticCouplingTransform):
    """``PiecewiseRationalQuadraticCouplingTransform`` with the faster spline of this module.

    Same constructor, parameters and state-dict keys as the nflows class. The fast path covers
    ``tails="linear"`` without the unconditional transform (the BlindHarmony flow's coupling);
    other settings run nflows' own code.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._update_split()

    def _update_split(self) -> None:
        # For masks whose two halves are contiguous channel ranges (nflows' mid split), slicing
        # and concatenation replace index_select / index_put.
        identity = _contiguous_range(self.identity_features)
        transform = _contiguous_range(self.transform_features)
        self._split = None
        if identity is not None and transform is not None:
            (id_start, id_len), (tr_start, tr_len) = identity, transform
            if tr_start == 0 and id_start == tr_len:
                self._split = ("transform_first", tr_len, id_len)
            elif id_start == 0 and tr_start == id_len:
                self._split = ("identity_first", id_len, tr_len)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._update_split()

    @property
    def _fast(self) -> bool:
        return self.tails == "linear" and self.unconditional_transform is None

    def _halves(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kind, first, second = self._split
        head, tail = inputs.narrow(1, 0, first), inputs.narrow(1, first, second)
        return (tail, head) if kind == "transform_first" else (head, tail)  # identity, transform

    def _join(self, identity: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        kind = self._split[0]
        parts = [transformed, identity] if kind == "transform_first" else [identity, transformed]
        return torch.cat(parts, dim=1)

    def _check_inputs(self, inputs: torch.Tensor) -> None:
        if inputs.dim() not in [2, 4]:
            raise ValueError("Inputs must be a 2D or a 4D tensor.")
        if inputs.shape[1] != self.features:
            raise ValueError(
                "Expected features = {}, got {}.".format(self.features, inputs.shape[1])
            )

    def forward(self, inputs, context=None):
        if not self._fast or self._split is None:
            return super().forward(inputs, context)
        return self._split_transform(inputs, context, inverse=False)

    def inverse(self, inputs, context=None):
        if not self._fast or self._split is None:
            return super().inverse(inputs, context)
        return self._split_transform(inputs, context, inverse=True)

    def _split_transform(self, inputs, context, inverse: bool):
        self._check_inputs(inputs)
        identity, transform = self._halves(inputs)
        params = self.transform_net(identity, context)
        transformed, logabsdet = self._coupling_transform(transform, params, inverse=inverse)
        return self._join(identity, transformed), logabsdet

    def _softmax_scale(self) -> float | None:
        # nflows divides the unnormalised widths and heights by sqrt(hidden size), or warns.
        for name in ("hidden_features", "hidden_channels"):
            if hasattr(self.transform_net, name):
                return math.sqrt(getattr(self.transform_net, name))
        return None

    def _coupling_transform(self, inputs, transform_params, inverse=False):
        if not self._fast:
            return super()._coupling_transform(inputs, transform_params, inverse)
        scale = self._softmax_scale()
        if scale is None:  # nflows' path, with its warning
            return super()._coupling_transform(inputs, transform_params, inverse)
        # (N, C * P, H, W) -> (N, C, P, H, W) or (N, D * P) -> (N, D, P): views, bins on dim 2;
        # widths and heights are the first 2K of the P = 3K - 1 parameters: one (2, K) view.
        # (split rather than two narrows: its backward is one cat, not two zero-filled copies)
        params = transform_params.reshape(*inputs.shape[:2], -1, *inputs.shape[2:])
        k = self.num_bins
        _check_bins(k, self.min_bin_width, self.min_bin_height)
        knots, derivatives = params.split([2 * k, k - 1], dim=2)
        outputs, logabsdet = _rq_spline(
            inputs,
            knots.unflatten(2, (2, k)),
            derivatives,
            2,
            inverse,
            float(self.tail_bound),
            self.min_bin_width,
            self.min_bin_height,
            self.min_derivative,
            scale,
        )
        return outputs, logabsdet.reshape(logabsdet.shape[0], -1).sum(-1)
