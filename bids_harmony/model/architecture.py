"""The BlindHarmony flow: a multiscale Neural Spline Flow built from ``nflows`` parts.

Architecture (METHOD.md; Durkan et al. 2019, "Neural Spline Flows", Glow layout):
``levels`` levels, each = squeeze, then ``steps_per_level`` steps of
[ActNorm, LU 1x1 convolution, rational-quadratic spline coupling], then one more LU 1x1
convolution closing the level; after every level but the last, half of the channels are
factored out to the base distribution (a standard normal over all C*H*W dimensions).

Choices that reproduce the authors' printed count of 14,486,534 trainable parameters for
the ``paper`` preset at 1 x 144 x 176 (the layout of ``experiments/images.py`` in the ``nsf``
repository, which ``nflows`` grew out of):

- the extra 1x1 convolution closing each level is needed (without it: 14,485,114),
  and so is ActNorm in every step (without it: 14,485,694);
- the coupling net sees only the identity half of the channels and outputs
  ``3K - 1`` spline parameters per transformed channel (linear tails), no unconditional
  transform on the identity half;
- ``ConvResidualNet`` without context channels, batch norm, no dropout.

The coupling mask splits the channels at the midpoint in every step, as ``nsf`` does; the
1x1 convolution before each coupling already mixes channels, so no alternation is needed
(an alternating mask gives the same count, since every level has an even channel count).

Input convention: the flow models images in [-0.5, 0.5] ("glow" scaling of 12-bit data).
The scaling is kept outside the flow, in :func:`to_flow_input` / :func:`from_flow_output`,
because the harmonization works on [0, 1] slices and needs the deterministic, differentiable
map, while training needs the dequantised one; both share one definition here. Log densities
returned by the flow are therefore densities of the [-0.5, 0.5] image; :func:`bits_per_dim`
adds the constant that turns them into bits per dimension of the ``num_bits``-bit data.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from nflows import distributions, flows, transforms
from nflows.nn.nets import ConvResidualNet
from nflows.utils import torchutils
from torch import nn

from .spline import RationalQuadraticCoupling

__all__ = [
    "PER_LEVEL_FIELDS",
    "PRESETS",
    "FlowConfig",
    "bits_per_dim",
    "build_flow",
    "count_parameters",
    "from_flow_output",
    "to_flow_input",
]

Shape = tuple[int, int, int]
PerLevel = int | tuple[int, ...]
PER_LEVEL_FIELDS = ("steps_per_level", "hidden_channels", "num_res_blocks")
DEFAULT_SHAPE: Shape = (1, 144, 176)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Everything needed to rebuild a flow, storable as JSON next to its weights.

    ``num_bits`` is not part of the network: it is the quantisation depth that the flow's
    input scaling (:func:`to_flow_input`) and bits-per-dimension figures refer to, kept here
    so that a model file carries it.

    ``steps_per_level``, ``hidden_channels`` and ``num_res_blocks`` are one value for every level
    (the paper) or a tuple with one value per level, finest first: a level's coupling networks
    cost in proportion to its pixel count, so on a CPU budget the coarse levels, which carry the
    head's shape, can be made deeper and wider for little time.
    """

    levels: int = 4
    steps_per_level: PerLevel = 7
    hidden_channels: PerLevel = 96
    num_res_blocks: PerLevel = 3
    num_bins: int = 8
    tail_bound: float = 3.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3
    batch_norm: bool = True
    dropout: float = 0.0
    num_bits: int = 12

    def __post_init__(self) -> None:
        for name in ("levels", "num_bins", "num_bits"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"FlowConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in PER_LEVEL_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):  # the JSON form of a tuple
                value = tuple(value)
                object.__setattr__(self, name, value)
            if not (_positive_int(value) or (isinstance(value, tuple) and len(value) == self.levels
                                             and all(map(_positive_int, value)))):
                raise ValueError(f"FlowConfig.{name} must be a positive integer or one per level "
                                 f"({self.levels}), got {value!r}")
        for name in ("tail_bound", "min_bin_width", "min_bin_height", "min_derivative"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"FlowConfig.{name} must be a positive number, got {value!r}")
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"FlowConfig.batch_norm must be a bool, got {self.batch_norm!r}")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"FlowConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.num_bins * max(self.min_bin_width, self.min_bin_height) >= 1.0:
            raise ValueError("FlowConfig: num_bins * min_bin_width/height must stay below 1")

    def at_level(self, name: str, level: int) -> int:
        """The value of a per-level field for ``level`` (0 = finest)."""
        value = getattr(self, name)
        return value[level] if isinstance(value, tuple) else value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict, the form a model file stores."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlowConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused rather than silently dropped,
        since a model file written by another version must not load as a different network."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown FlowConfig key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**data)


PRESETS: dict[str, FlowConfig] = {
    # The authors' network: 14,486,534 trainable parameters at 1 x 144 x 176.
    "paper": FlowConfig(),
    # For 2 CPU cores (the demo model): the paper's 4 levels and layout, with the steps and
    # channels moved to the coarse levels, where pixels are few and the head's shape is modelled
    # (one step of 8 channels at full resolution, six of 80 at the coarsest); 2,804,550
    # parameters at 1 x 144 x 176, trained in batches of 4 (on 2 cores slices/s hardly depend on
    # the batch, so small batches buy more updates). Variants and their figures: README, "The
    # bundled demo model".
    "small": FlowConfig(levels=4, steps_per_level=(1, 2, 4, 6), hidden_channels=(8, 24, 56, 80),
                        num_res_blocks=(1, 1, 2, 3)),
}


def _channel_matmul(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``weight @ x + bias`` over the channels of an (N, C, H, W) batch (a 1x1 convolution with
    an (O, C) ``weight``), in one batched GEMM on the (N, C, H*W) view: on CPU two to four times
    faster than ``conv2d`` for the few channels here (forward and backward), with no permute to
    (N*H*W, C) and back, and a contiguous result."""
    n, c, h, w = inputs.shape
    out_channels = weight.shape[0]
    outputs = torch.baddbmm(
        bias.view(1, out_channels, 1).expand(n, out_channels, h * w),
        weight.expand(n, out_channels, c),
        inputs.reshape(n, c, h * w),
    )
    return outputs.view(n, out_channels, h, w)


class LUOneByOneConvolution(transforms.OneByOneConvolution):
    """nflows' LU 1x1 convolution, computed faster, with its inverse on ``torch.linalg``.

    Same parameters, buffers and state-dict keys as ``nflows.transforms.OneByOneConvolution``
    (weights load either way) and the same function: a fixed channel permutation, then
    ``W = L U`` (unit lower / upper triangular with softplus diagonal) and the bias. nflows
    applies the permutation (a copy), permutes the batch to (N*H*W, C), multiplies by U and L
    separately and hands back a permuted view; here the permutation is folded into the columns
    of ``L U`` (rows of ``(L U)^-1`` for the inverse) and applied in one batched GEMM on the
    (N, C, H*W) view. The log-determinant is ``H * W * sum(log diag U)`` instead of a sum over
    H * W copies of it.

    nflows 0.14 inverts with ``torch.triangular_solve`` (``LULinear.inverse_no_cache`` and
    ``LULinear.weight_inverse``), which torch deprecates with a warning and will remove; both
    use ``torch.linalg.solve_triangular`` here. The cache of ``use_cache()`` (eval mode) holds
    ``L U`` and its inverse, as in nflows.
    """

    def _weight_and_logabsdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training and self.using_cache:
            self._check_forward_cache()
            return self.cache.weight, self.cache.logabsdet
        lower, upper = self._create_lower_upper()
        return lower @ upper, self.logabsdet()

    def _inverse_weight_and_logabsdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training and self.using_cache:
            self._check_inverse_cache()
            return self.cache.inverse, self.cache.logabsdet
        return self.weight_inverse(), self.logabsdet()

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.dim() != 4:
            raise ValueError("Inputs must be a 4D tensor.")
        n, _, h, w = inputs.shape
        weight, logabsdet = self._weight_and_logabsdet()
        # nflows permutes the channels first: x_p[:, i] = x[:, perm[i]], so W x_p = W[:, perm^-1] x.
        weight = weight.index_select(1, self.permutation._inverse_permutation)
        outputs = _channel_matmul(inputs, weight, self.bias)
        return outputs, (h * w) * logabsdet * inputs.new_ones(n)

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.dim() != 4:
            raise ValueError("Inputs must be a 4D tensor.")
        n, _, h, w = inputs.shape
        inverse_weight, logabsdet = self._inverse_weight_and_logabsdet()
        # x = P^-1 W^-1 (y - b): the inverse permutation picks the rows of W^-1.
        inverse_weight = inverse_weight.index_select(0, self.permutation._inverse_permutation)
        outputs = _channel_matmul(inputs, inverse_weight, -(inverse_weight @ self.bias))
        return outputs, -(h * w) * logabsdet * inputs.new_ones(n)

    def inverse_no_cache(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # On (N*H*W, C) rows, as nflows' LULinear: forward is y = x U^T L^T + b, so
        # x = (y - b) L^-T U^-T: two right-hand solves.
        lower, upper = self._create_lower_upper()
        outputs = torch.linalg.solve_triangular(
            lower.t(), inputs - self.bias, upper=True, left=False, unitriangular=True
        )
        outputs = torch.linalg.solve_triangular(upper.t(), outputs, upper=False, left=False)
        logabsdet = -self.logabsdet() * inputs.new_ones(inputs.shape[0])
        return outputs, logabsdet

    def weight_inverse(self) -> torch.Tensor:
        # W^-1 = U^-1 L^-1 (also what the cached inverse of ``use_cache()`` holds).
        lower, upper = self._create_lower_upper()
        identity = torch.eye(self.features, dtype=lower.dtype, device=lower.device)
        lower_inverse = torch.linalg.solve_triangular(
            lower, identity, upper=False, unitriangular=True
        )
        return torch.linalg.solve_triangular(upper, lower_inverse, upper=True)


class _ReferenceLUOneByOneConvolution(LUOneByOneConvolution):
    """nflows' own computation (permutation, (N*H*W, C) rows, U then L), with the torch.linalg
    inverse: the reference that ``build_flow(..., reference=True)`` uses."""

    forward = transforms.OneByOneConvolution.forward
    inverse = transforms.OneByOneConvolution.inverse


class ActNorm(transforms.ActNorm):
    """nflows' ActNorm (same parameters, buffer and data-dependent initialisation) with the
    per-channel affine map of an image batch in one fused ``addcmul`` each way."""

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.dim() != 4:
            return super().forward(inputs, context)
        if self.training and not self.initialized:
            self._initialize(inputs)
        n, c, h, w = inputs.shape
        outputs = torch.addcmul(self.shift.view(1, c, 1, 1), inputs, self.scale.view(1, c, 1, 1))
        return outputs, h * w * torch.sum(self.log_scale) * inputs.new_ones(n)

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.dim() != 4:
            return super().inverse(inputs, context)
        n, c, h, w = inputs.shape
        inverse_scale = torch.exp(-self.log_scale)
        outputs = torch.addcmul(
            (-self.shift * inverse_scale).view(1, c, 1, 1), inputs, inverse_scale.view(1, c, 1, 1)
        )
        return outputs, -h * w * torch.sum(self.log_scale) * inputs.new_ones(n)


class _ConvResidualNet(ConvResidualNet):
    """nflows' ``ConvResidualNet`` (same modules, parameters and state-dict keys) with its 1x1
    input and output convolutions computed as batched GEMMs (:func:`_channel_matmul`) instead of
    ``conv2d``: the same function, and on CPU a good part of the network's time, since the output
    layer writes the 3K - 1 spline parameters of every transformed channel at full resolution."""

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None or inputs.dim() != 4:
            return super().forward(inputs, context)
        temps = _conv1x1(inputs, self.initial_layer)
        for block in self.blocks:
            temps = block(temps, context)
        return _conv1x1(temps, self.final_layer)


def _conv1x1(inputs: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    return _channel_matmul(inputs, layer.weight.flatten(1), layer.bias)


def _coupling(num_channels: int, config: FlowConfig, level: int, reference: bool) -> transforms.Transform:
    def create_net(in_channels: int, out_channels: int) -> nn.Module:
        return (ConvResidualNet if reference else _ConvResidualNet)(
            in_channels=in_channels,
            out_channels=out_channels,
            hidden_channels=config.at_level("hidden_channels", level),
            context_channels=None,
            num_blocks=config.at_level("num_res_blocks", level),
            use_batch_norm=config.batch_norm,
            dropout_probability=config.dropout,
        )

    coupling = (transforms.PiecewiseRationalQuadraticCouplingTransform if reference
                else RationalQuadraticCoupling)
    return coupling(
        mask=torchutils.create_mid_split_binary_mask(num_channels),
        transform_net_create_fn=create_net,
        num_bins=config.num_bins,
        tails="linear",
        tail_bound=config.tail_bound,
        apply_unconditional_transform=False,
        min_bin_width=config.min_bin_width,
        min_bin_height=config.min_bin_height,
        min_derivative=config.min_derivative,
    )


def _step(num_channels: int, config: FlowConfig, level: int, reference: bool) -> transforms.Transform:
    return transforms.CompositeTransform([
        (transforms.ActNorm if reference else ActNorm)(num_channels),
        _one_by_one(num_channels, reference),
        _coupling(num_channels, config, level, reference),
    ])


def _one_by_one(num_channels: int, reference: bool) -> LUOneByOneConvolution:
    return (_ReferenceLUOneByOneConvolution if reference else LUOneByOneConvolution)(num_channels)


def _resolve_config(preset_or_config: str | FlowConfig | Mapping[str, Any]) -> FlowConfig:
    if isinstance(preset_or_config, FlowConfig):
        return preset_or_config
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(
                f"unknown flow preset {preset_or_config!r}; known: {', '.join(sorted(PRESETS))}"
            )
        return PRESETS[preset_or_config]
    if isinstance(preset_or_config, Mapping):
        return FlowConfig.from_dict(preset_or_config)
    raise TypeError(
        f"expected a preset name, FlowConfig or dict, got {type(preset_or_config).__name__}"
    )


def _validate_shape(shape: Any, levels: int) -> Shape:
    if (not isinstance(shape, (tuple, list)) or len(shape) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ValueError(f"flow input shape must be (C, H, W) of positive ints, got {shape!r}")
    c, h, w = shape
    factor = 2 ** levels
    if h % factor or w % factor:
        raise ValueError(
            f"flow input shape {tuple(shape)}: H and W must be divisible by 2**levels = {factor}"
        )
    return c, h, w


def build_flow(
    preset_or_config: str | FlowConfig | Mapping[str, Any] = "paper",
    shape: Shape = DEFAULT_SHAPE,
    *,
    reference: bool = False,
) -> flows.Flow:
    """Build an untrained flow over images of ``shape`` = (C, H, W) in [-0.5, 0.5].

    ``preset_or_config`` is a key of :data:`PRESETS`, a :class:`FlowConfig`, or its dict form
    (as stored in a model file). ``flow.log_prob`` takes a (N, C, H, W) batch.

    The flow is built from nflows' transforms with faster drop-in subclasses for the spline
    coupling (:class:`~bids_harmony.model.spline.RationalQuadraticCoupling`), the LU 1x1
    convolution and ActNorm: same parameters, state-dict keys and function (up to float32
    round-off). ``reference=True`` builds the same network from nflows' own code instead (the
    spline and 1x1 convolution as nflows computes them; only the deprecated triangular solves
    replaced), for tests and benchmarks; weights load from one into the other.
    """
    config = _resolve_config(preset_or_config)
    c, h, w = _validate_shape(shape, config.levels)
    num_dims = c * h * w

    multiscale = transforms.MultiscaleCompositeTransform(num_transforms=config.levels)
    for level in range(config.levels):
        squeeze = transforms.SqueezeTransform()
        c, h, w = squeeze.get_output_shape(c, h, w)
        steps = config.at_level("steps_per_level", level)
        transform = transforms.CompositeTransform(
            [squeeze]
            + [_step(c, config, level, reference) for _ in range(steps)]
            + [_one_by_one(c, reference)]
        )
        next_shape = multiscale.add_transform(transform, (c, h, w))
        if next_shape is not None:
            c, h, w = next_shape

    return flows.Flow(multiscale, distributions.StandardNormal((num_dims,)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters: the figure to compare with the paper's 14,486,534."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def to_flow_input(
    slices: torch.Tensor,
    num_bits: int = 12,
    dequantize: bool = False,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Map [0, 1] slices to the flow's [-0.5, 0.5] domain ("glow" scaling of ``num_bits`` data).

    A slice value v stands for the level q = v * (2**num_bits - 1). With ``dequantize`` (for
    training) q is rounded and uniform noise in [0, 1) added, as in Glow / NSF; without it
    (for harmonization) the mid-point q + 1/2 is used, which keeps the map affine and
    differentiable. Either way the result is (q + u) / 2**num_bits - 0.5. ``noise`` (uniform in
    [0, 1), the shape of ``slices``) replaces the draw, so that several processes can share one
    draw for a whole batch.
    """
    bins = 2 ** num_bits
    levels = slices.clamp(0.0, 1.0) * (bins - 1)
    if dequantize:
        if noise is None:
            noise = torch.rand(
                levels.shape, generator=generator, dtype=levels.dtype, device=levels.device
            )
        levels = torch.round(levels) + noise
    else:
        levels = levels + 0.5
    return levels / bins - 0.5


def from_flow_output(images: torch.Tensor, num_bits: int = 12) -> torch.Tensor:
    """Inverse of the non-dequantised :func:`to_flow_input`, clamped back into [0, 1]."""
    bins = 2 ** num_bits
    return (((images + 0.5) * bins - 0.5) / (bins - 1)).clamp(0.0, 1.0)


def bits_per_dim(log_prob: torch.Tensor, shape: Shape, num_bits: int = 12) -> torch.Tensor:
    """Bits per dimension of ``num_bits`` data from the flow's log density on [-0.5, 0.5]."""
    num_dims = math.prod(shape)
    return (-log_prob / num_dims + num_bits * math.log(2.0)) / math.log(2.0)
