"""BlindHarmony: pull slices from any scanner onto the target scanner's appearance.

A harmonized slice ``y`` of a source slice ``x`` (both min-max normalised to [0, 1]) should be
likely under the target flow, strongly correlated with ``x`` (scanner effects are smooth, seed
Eq. 1) and have its edges where ``x`` has them (seed Eq. 2):

    minimise  -alpha * log p(y)  +  beta1 * fidelity(x, y)  +  beta2 * edge(x, y)

solved as the authors do, by alternating for a few iterations (METHOD.md):

1. an image-space step on the fidelity terms, ``y' = y - beta1 * g_fidelity - beta2 * g_edge``;
2. a likelihood step in latent space: ``z = f(y')``, shrink ``z`` towards the origin
   (``alpha`` for its centred part, ``alpha2`` for its mean), ``y = f^-1(z)``.

The result is the last fidelity step ``y'`` (the authors' May-2023 code; ``iterations``
alternations then cost ``iterations - 1`` passes through the flow) or the last flow output (their
camera-ready code). :meth:`HarmonizationParams.preset` names the three methods: ours
(``bids_harmony``), ``arxiv-v1`` and ``camera-ready`` (docs/methods.md follows each step to the
authors' code).

Fidelity gradients (``fidelity``), each the gradient, with respect to ``y``, of a term to minimise:

- ``correlation`` (ours): ``n * var(y) * d(1 - r)/dy = r * (y - mean y) - sd(y)/sd(x) * (x - mean x)``,
  so that ``beta1 = 1`` replaces ``y``'s centred part by ``x`` rescaled to ``y``'s spread;
- ``batch-correlation`` (May 2023, as written): ``-d rho/dy`` of a Pearson-like correlation whose
  pixel count ``N`` is the whole batch's, not the slice's, which leaves it nearly uncentred and
  makes the result depend on the batch size; the authors' ``beta1`` is 1000;
- ``cosine`` (camera-ready): ``-d cos(x, y)/dy`` of the uncentred cosine similarity per slice.

Edge terms (``edge``):

- ``highpass`` (May 2023): ``0.5 * ||HP(x) - HP(y)||^2``, HP an orthonormal DCT projection dropping
  normalised frequencies below ``highpass_radius``: ``g_edge = HP(y - x)``;
- ``sobel-tv`` (camera-ready): ``sum M_d * |S_d y|`` over the two Sobel directions ``d``, where the
  mask ``M_d`` keeps the pixels of the source foreground whose ``|S_d x|`` is below the slice's
  ``edge_percentile``-th percentile: it smooths ``y`` where ``x`` is flat;
- ``sobel-sign`` (ours): where ``x`` has a clear gradient (above ``edge_threshold`` of the slice's
  largest), ``y``'s Sobel gradient should point the same way: ``sum relu(-sign(S x) * S y)``.

Every step is guarded per slice: a fidelity step or a flow output that is not finite (or a flow
output that is all zero) is replaced by the iterate it came from, as the camera-ready code does
for a whole batch. Everything runs in torch on the model's device, batched over slices, with no
randomness: the flow's input takes the mid-point of each 12-bit level, not dequantisation noise.
Afterwards (``target_background``, ours), the pixels below the source foreground take the source's
texture at the target's level: there is no tissue contrast there to harmonize.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F

from .errors import NotT1wLikeError
from .model import HarmonyModel, from_flow_output, to_flow_input
from .settings import HarmonizationParams

_EPS = 1e-8
COSINE_EPS = 1e-6  # the camera-ready code's guard on the norms
#: ``global-mean-masked`` keeps the mean slice where the source is above this percentile (the
#: authors' simulated-data script)
GLOBAL_MEAN_PERCENTILE = 45.0
MIN_LEVEL_PIXELS = 80  # fewer pixels than this are too few to measure a level on


def _per_slice(values: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1), to broadcast a per-slice value over (N, H, W)."""
    return values.view(-1, 1, 1)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correlation of each slice pair over all pixels; 0 where either slice is constant."""
    xc = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    yc = y.flatten(1) - y.flatten(1).mean(1, keepdim=True)
    norms = xc.norm(dim=1) * yc.norm(dim=1)
    return torch.where(norms > _EPS, (xc * yc).sum(1) / norms.clamp_min(_EPS), torch.zeros_like(norms))


def correlation_gradient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``n * var(y) * d(1 - pearson(x, y))/dy`` per slice (zero for constant slices)."""
    dims = tuple(range(1, x.dim()))
    xc = x - x.mean(dims, keepdim=True)
    yc = y - y.mean(dims, keepdim=True)
    x_sd = xc.square().mean(dims, keepdim=True).sqrt()
    y_sd = yc.square().mean(dims, keepdim=True).sqrt()
    r = pearson(x, y).view(-1, *([1] * (x.dim() - 1)))
    gradient = r * yc - y_sd / x_sd.clamp_min(_EPS) * xc
    return torch.where((x_sd > _EPS) & (y_sd > _EPS), gradient, torch.zeros_like(gradient))


def batch_correlation_gradient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-d rho/dy`` of the authors' May-2023 correlation, per (N, H, W) slice.

    ``rho = (n S_xy - S_x S_y) / sqrt((n S_yy - S_y^2)(n S_xx - S_x^2))`` with sums ``S`` over each
    slice's pixels but ``n`` the number of pixels of the whole batch, as their code has it. Not
    finite where ``y`` or ``x`` is constant (the per-slice guard then keeps the iterate).
    """
    n = float(y.numel())
    sx, sy = _per_slice(x.flatten(1).sum(1)), _per_slice(y.flatten(1).sum(1))
    sxy = _per_slice((x * y).flatten(1).sum(1))
    syy, sxx = _per_slice(y.square().flatten(1).sum(1)), _per_slice(x.square().flatten(1).sum(1))
    covariance = n * sxy - sx * sy
    y_spread, x_spread = n * syy - sy.square(), n * sxx - sx.square()
    d_covariance, d_y_spread = n * x - sx, 2.0 * (n * y - sy)
    return -(d_covariance * y_spread - 0.5 * d_y_spread * covariance) / (y_spread.pow(1.5) * x_spread.sqrt())


def cosine_gradient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-d cos(x, y)/dy`` per slice, with the camera-ready code's guard on the norms."""
    x_norm = _per_slice(x.flatten(1).norm(dim=1)) + COSINE_EPS
    y_norm = _per_slice(y.flatten(1).norm(dim=1)) + COSINE_EPS
    inner = _per_slice((x * y).flatten(1).sum(1))
    return -x / (y_norm * x_norm) + inner * y / (y_norm.pow(3) * x_norm)


FIDELITY_GRADIENTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "correlation": correlation_gradient,
    "batch-correlation": batch_correlation_gradient,
    "cosine": cosine_gradient,
}


def _dct_matrix(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix: ``C @ v`` transforms, ``C.T @ c`` inverts."""
    k = torch.arange(size, device=device, dtype=torch.float64)[:, None]
    i = torch.arange(size, device=device, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (i + 0.5) * k / size) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(dtype)


class HighPass:
    """Orthogonal projection dropping DCT frequencies of normalised radius below ``radius``."""

    def __init__(self, shape: tuple[int, int], radius: float, device: torch.device, dtype=torch.float32):
        height, width = shape
        self.rows = _dct_matrix(height, device, dtype)
        self.columns = _dct_matrix(width, device, dtype)
        fy = torch.arange(height, device=device, dtype=dtype)[:, None] / height
        fx = torch.arange(width, device=device, dtype=dtype)[None, :] / width
        self.keep = ((fy.square() + fx.square()).sqrt() >= radius).to(dtype)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        coefficients = self.rows @ images @ self.columns.T
        return self.rows.T @ (coefficients * self.keep) @ self.columns


_SOBEL = torch.tensor([[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]])


def sobel(images: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """(N, H, W) -> (N, 2, H, W) Sobel derivatives along W and H (``padding``: a torch padding
    mode; ``reflect`` is OpenCV's default border)."""
    kernel = _SOBEL.to(images)
    weights = torch.stack([kernel, kernel.transpose(1, 2)])  # (2, 1, 3, 3)
    padded = F.pad(images[:, None], (1, 1, 1, 1), mode=padding)
    return F.conv2d(padded, weights)


def sobel_sign_mismatch(x: torch.Tensor, y: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per slice: how far ``y``'s gradients point against ``x``'s where ``x`` has clear edges."""
    gx = sobel(x)
    magnitude = gx.norm(dim=1, keepdim=True)
    largest = magnitude.flatten(1).amax(1).view(-1, 1, 1, 1)
    mask = (magnitude > threshold * largest).to(x.dtype)
    return (mask * F.relu(-torch.sign(gx) * sobel(y))).flatten(1).sum(1)


def flat_parts(x: torch.Tensor, percentile: float, foreground_threshold: float) -> torch.Tensor:
    """(N, 2, H, W) masks of the camera-ready Sobel term: per slice and direction, the source
    foreground's pixels whose ``|Sobel x|`` is below that direction's ``percentile``-th
    percentile over the whole slice."""
    magnitude = sobel(x, "reflect").abs()
    limit = torch.quantile(magnitude.flatten(2), percentile / 100.0, dim=2)[..., None, None]
    return (magnitude < limit) & foreground_masks(x, foreground_threshold)[:, None]


def sobel_total_variation(masks: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per slice: the Sobel total variation of ``y`` inside ``masks`` (:func:`flat_parts`)."""
    return (masks * sobel(y, "reflect").abs()).flatten(1).sum(1)


def _gradient_of(term: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """The gradient of a per-slice term at ``y`` (slices do not interact, so of its sum)."""
    with torch.enable_grad():
        leaf = y.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(term(leaf).sum(), leaf)
    return gradient


def edge_term(x: torch.Tensor, params: HarmonizationParams,
              highpass: HighPass | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The edge term's gradient as a function of ``y``, with what depends on ``x`` worked out once."""
    if params.edge == "highpass":
        return lambda y: highpass(y - x)
    if params.edge == "sobel-tv":
        masks = flat_parts(x, params.edge_percentile, params.foreground_threshold)
        return lambda y: _gradient_of(lambda leaf: sobel_total_variation(masks, leaf), y)
    return lambda y: _gradient_of(lambda leaf: sobel_sign_mismatch(x, leaf, params.edge_threshold), y)


def _latent_shrink(z: torch.Tensor, alpha: float, alpha2: float) -> torch.Tensor:
    mean = z.mean(1, keepdim=True)
    return (1.0 - alpha) * (z - mean) + (1.0 - alpha2) * mean


def keep_usable(candidate: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """``candidate``'s slices, except those that are not finite or all zero: ``fallback``'s.

    The camera-ready code falls back for the whole batch when any value of it is bad; per slice,
    a slice's result does not depend on which other slices share its batch.
    """
    flat = candidate.flatten(1)
    usable = torch.isfinite(flat).all(1) & (flat.abs().sum(1) > 0)
    return torch.where(_per_slice(usable), candidate, fallback)


def foreground_masks(slices: torch.Tensor, threshold: float) -> torch.Tensor:
    """Source foreground per slice: above ``threshold`` of the slice's range."""
    lows = slices.flatten(1).amin(1).view(-1, 1, 1)
    highs = slices.flatten(1).amax(1).view(-1, 1, 1)
    return slices > lows + threshold * (highs - lows)


def start_images(x: torch.Tensor, position_means: torch.Tensor, global_mean: torch.Tensor,
                 params: HarmonizationParams) -> torch.Tensor:
    """Where the optimisation of each slice starts (``params.init``)."""
    if params.init == "mean":
        return position_means * foreground_masks(x, params.foreground_threshold)
    if params.init == "mean-unmasked":
        return position_means.clone()
    if params.init == "global-mean-masked":
        limit = torch.quantile(x.flatten(1), GLOBAL_MEAN_PERCENTILE / 100.0, dim=1)
        return global_mean * (x > _per_slice(limit))
    return x.clone()


def with_target_background(harmonized: torch.Tensor, source: torch.Tensor, references: torch.Tensor,
                           threshold: float) -> torch.Tensor:
    """Below the source foreground (air, and bone or fluid as dark), give each harmonized slice
    the source's own texture, moved so that its median is the median background of the mean
    target slice ``references`` at that position.

    There is no tissue contrast to harmonize there. The optimisation leaves that region at a
    level set by the source's noise floor and the last steps, and with the source's noise
    amplified; the target scanner has its own level. No pixel of the head changes.
    """
    background = ~foreground_masks(source, threshold)
    reference_background = ~foreground_masks(references, threshold)
    result = harmonized.clone()
    for index in range(len(harmonized)):
        inside, reference = background[index], reference_background[index]
        if inside.sum() >= MIN_LEVEL_PIXELS and reference.any():
            texture = source[index][inside]
            level = references[index][reference].median()
            result[index][inside] = (texture - texture.median() + level).clamp(0.0, 1.0)
    return result


def fidelity_step(x: torch.Tensor, y: torch.Tensor, params: HarmonizationParams,
                  edge_gradient: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """``y - beta1 * g_fidelity - beta2 * g_edge`` (a term with a zero beta is not computed)."""
    step = torch.zeros_like(y)
    if params.beta1:
        step += params.beta1 * FIDELITY_GRADIENTS[params.fidelity](x, y)
    if params.beta2:
        step += params.beta2 * edge_gradient(y)
    return y - step


def likelihood_step(y: torch.Tensor, model: HarmonyModel, params: HarmonizationParams) -> torch.Tensor:
    """``f^-1(shrink(f(y)))`` on the flow's 12-bit grid, in [0, 1]."""
    transform, num_bits = model.flow._transform, model.flow_config.num_bits
    z, _ = transform(to_flow_input(y[:, None], num_bits))
    images, _ = transform.inverse(_latent_shrink(z, params.alpha, params.alpha2))
    return from_flow_output(images, num_bits)[:, 0]


@torch.no_grad()
def _harmonize_batch(x: torch.Tensor, start: torch.Tensor, model: HarmonyModel,
                     params: HarmonizationParams, highpass: HighPass | None) -> torch.Tensor:
    edge_gradient = edge_term(x, params, highpass) if params.beta2 else None
    y = start
    for iteration in range(params.iterations):
        stepped = keep_usable(fidelity_step(x, y, params, edge_gradient), y)
        if params.result == "fidelity" and iteration == params.iterations - 1:
            return stepped.clamp(0.0, 1.0)
        y = keep_usable(likelihood_step(stepped, model, params), stepped.clamp(0.0, 1.0))
    return y


def harmonize_slices(slices: np.ndarray | torch.Tensor, model: HarmonyModel,
                     positions: np.ndarray | None = None,
                     params: HarmonizationParams | None = None, **changes: Any) -> np.ndarray:
    """Harmonize (N, H, W) min-max normalised slices; returns (N, H, W) float32 in [0, 1].

    ``positions`` (the slices' positions on the model's grid) select the mean target slice each
    optimisation starts from; without them the mean over all positions is used. Constant and
    empty slices come back unchanged.
    """
    params = (params or HarmonizationParams()).replace(**changes)
    device = model.device
    source = torch.as_tensor(np.asarray(slices, dtype=np.float32)).to(device)
    if source.dim() != 3 or tuple(source.shape[1:]) != tuple(model.shape[1:]):
        raise ValueError(f"slices of shape {tuple(source.shape)} do not fit the model's "
                         f"{tuple(model.shape[1:])} grid")
    means = torch.as_tensor(model.mean_slices, dtype=torch.float32, device=device)
    global_mean = means.mean(0, keepdim=True)
    if positions is None:
        position_means = global_mean.expand(len(source), -1, -1)
    else:
        position_means = means[torch.as_tensor(np.asarray(positions), dtype=torch.long, device=device)]
    highpass = (HighPass(tuple(model.shape[1:]), params.highpass_radius, device)
                if params.edge == "highpass" and params.beta2 else None)
    spans = source.flatten(1).amax(1) - source.flatten(1).amin(1)
    output = source.clone()
    was_training = model.flow.training
    model.flow.eval()
    try:
        for begin in range(0, len(source), params.batch_size):
            rows = torch.arange(begin, min(begin + params.batch_size, len(source)), device=device)
            rows = rows[spans[rows] > _EPS]
            if len(rows) == 0:
                continue
            x = source[rows]
            start = start_images(x, position_means[rows], global_mean, params)
            harmonized = _harmonize_batch(x, start, model, params, highpass)
            if params.target_background:
                harmonized = with_target_background(harmonized, x, position_means[rows],
                                                    params.foreground_threshold)
            output[rows] = harmonized
    finally:
        model.flow.train(was_training)
    return output.cpu().numpy()


@dataclass
class HarmonizedImage:
    """A harmonized volume on the input's grid, with what a report needs."""

    image: Any  # nibabel.Nifti1Image, on the input's own grid
    source_slices: np.ndarray  # (n, H, W) normalised source slices on the model's grid
    harmonized_slices: np.ndarray  # on the source slices' [0, 1] scale (may exceed 1)
    geometry: Any  # preprocessing.SliceGeometry
    metadata: dict[str, Any]
    warnings: list[str]


# Below this agreement (see ``contrast_check``) a source does not look like the target's
# contrast. Measured with the demo model: the ICBM 2009c T2w template -0.35, its T1w 0.75,
# simulated T1w of all five scanners (15 subjects of seed 11) 0.66 to 1.
T1W_LIKE_MIN_AGREEMENT = 0.5
CONTRAST_BINS = 10


def contrast_check(slices: np.ndarray, positions: np.ndarray, model: HarmonyModel) -> float:
    """Does the source order tissues as the target does? A rank correlation in [-1, 1].

    Over the pixels that are head both in the source and in the mean target slice at the same
    position, pooled over the volume, the pixels are split into ``CONTRAST_BINS`` bins by the
    mean target intensity (background, CSF, grey matter, ..., white matter and fat); the
    result is the Spearman correlation between the bins' order and the source's median in each
    bin. Working on tissue-level medians makes it robust to anatomy that differs from the
    target's mean (a pixel-wise correlation is not); a T2w, whose tissue order is inverted,
    scores near or below zero.
    """
    from scipy.stats import spearmanr

    source = np.asarray(slices, dtype=np.float32)
    reference = model.mean_slices[np.asarray(positions)]
    head = foreground_masks(torch.as_tensor(source), 0.05).numpy() & (reference > 0.05)
    if head.sum() < 10 * CONTRAST_BINS:
        return float("nan")
    values, expected = source[head], reference[head]
    edges = np.quantile(expected, np.linspace(0.0, 1.0, CONTRAST_BINS + 1)[1:-1])
    bins = np.searchsorted(edges, expected, side="right")
    medians = [np.median(values[bins == index]) for index in range(CONTRAST_BINS) if np.any(bins == index)]
    return float(spearmanr(np.arange(len(medians)), medians)[0])


CHANGE_SMOOTHING_SLICES = 3.0  # Gaussian sigma, in slices, of the change's coarse part across slices
CHANGE_DETAIL_PIXELS = 1.0  # in-plane Gaussian sigma (pixels) below which the change is detail


def anchor_to_source_level(harmonized: np.ndarray, source: np.ndarray,
                           foreground_threshold: float = 0.05) -> np.ndarray:
    """Scale each harmonized slice so the brighter half of its head (white matter, mostly)
    sits at the source slice's level.

    Slices are min-max normalised, so a harmonized slice's level relative to its maximum (often
    fat or a vessel) follows the target's slices at that position, not this head; mapped back
    through the source's own range it drifts along the volume. Anchored to the source's
    brighter half (median of the pixelwise source/harmonized ratio there), the volume keeps the
    source's level from slice to slice and the harmonized contrast within each slice. Slices
    whose head has fewer than ``MIN_LEVEL_PIXELS`` pixels are left as they are.
    """
    source = np.asarray(source, dtype=np.float32)
    masks = foreground_masks(torch.as_tensor(source), foreground_threshold).numpy()
    anchored = np.array(harmonized, dtype=np.float32, copy=True)
    for index, (image, reference, mask) in enumerate(zip(anchored, source, masks)):
        if mask.sum() < MIN_LEVEL_PIXELS:
            continue
        bright = mask & (reference >= np.median(reference[mask]))
        if np.median(image[bright]) > _EPS:
            anchored[index] = image * np.median(reference[bright] / np.maximum(image[bright], _EPS))
    return anchored


def smooth_change_across_slices(harmonized: np.ndarray, source: np.ndarray, spans: np.ndarray,
                                valid: np.ndarray) -> np.ndarray:
    """Smooth the coarse part of what harmonization changed across neighbouring slices.

    Each slice is optimised on its own, so the tissue levels it comes out at jitter from slice
    to slice around the trend, which stripes the volume. The change (harmonized minus source,
    in the source's native units: ``spans`` are the slices' max - min) is split in-plane into
    its detail (finer than ``CHANGE_DETAIL_PIXELS``: noise, sharp edges), kept slice by slice,
    and its coarse part (levels, contrast, bias), replaced by a Gaussian average over
    neighbouring slices (sigma ``CHANGE_SMOOTHING_SLICES``) that weighs only ``valid`` slices.
    Arrays are ``(n_positions, H, W)`` on consecutive grid positions; invalid (and constant)
    slices come back as they went in.
    """
    from scipy import ndimage

    source = np.asarray(source, dtype=np.float64)
    scale = np.asarray(spans, dtype=np.float64)[:, None, None]
    weights = (np.asarray(valid, dtype=bool) & (np.asarray(spans) > 0)).astype(np.float64)[:, None, None]
    change = (np.asarray(harmonized, dtype=np.float64) - source) * scale * weights
    coarse = ndimage.gaussian_filter(change, (0, CHANGE_DETAIL_PIXELS, CHANGE_DETAIL_PIXELS))
    spread = ndimage.gaussian_filter1d(coarse, CHANGE_SMOOTHING_SLICES, axis=0, mode="constant")
    reach = ndimage.gaussian_filter1d(weights, CHANGE_SMOOTHING_SLICES, axis=0, mode="constant")
    smoothed = change - coarse + spread / np.maximum(reach, _EPS)
    result = source + smoothed / np.maximum(scale, _EPS)
    return np.where(weights > 0, result, harmonized).astype(np.float32)


@dataclass
class PreparedT1w:
    """A T1w on the model's slices, checked: what the harmonization step needs."""

    slices: np.ndarray  # (n_positions, H, W) in [0, 1]
    geometry: Any  # preprocessing.SliceGeometry
    agreement: float  # contrast_check's tissue-order agreement
    warnings: list[str]


def prepare_t1w(image: Any, model: HarmonyModel, strict: bool = False) -> PreparedT1w:
    """The first step of :func:`harmonize_image`: the shared preprocessing and the contrast
    check. ``strict`` turns the contrast warning into :class:`NotT1wLikeError`."""
    from .preprocessing import load_t1w, to_slices

    image, _, name = load_t1w(image)
    slices, geometry = to_slices(image, model.preprocessing)
    valid = np.flatnonzero(geometry.valid)
    warnings: list[str] = []
    agreement = contrast_check(slices[valid], geometry.positions[valid], model)
    if not agreement >= T1W_LIKE_MIN_AGREEMENT:
        message = (f"the source does not look like the target's T1w contrast (tissue-order agreement "
                   f"{agreement:.2f} with the target's mean slices, expected at least "
                   f"{T1W_LIKE_MIN_AGREEMENT}); BlindHarmony assumes T1w-like input")
        if strict:
            raise NotT1wLikeError(f"{name}: {message}")
        warnings.append(message)
    return PreparedT1w(slices, geometry, agreement, warnings)


def harmonize_volume_slices(slices: np.ndarray, geometry: Any, model: HarmonyModel,
                            params: HarmonizationParams | None = None) -> np.ndarray:
    """The second step: harmonize a volume's valid slices and (``anchor_level``) anchor each to
    its source level.

    Invalid slices come back unchanged; the result is on the source slices' [0, 1] scale.
    """
    params = params or HarmonizationParams()
    valid = np.flatnonzero(geometry.valid)
    harmonized = np.array(slices, dtype=np.float32, copy=True)
    if len(valid):
        harmonized[valid] = harmonize_slices(slices[valid], model, geometry.positions[valid], params)
        if params.anchor_level:
            harmonized[valid] = anchor_to_source_level(harmonized[valid], slices[valid],
                                                       params.foreground_threshold)
    return harmonized


def reassemble(harmonized: np.ndarray, slices: np.ndarray, geometry: Any,
               smooth_across_slices: bool = True) -> tuple[np.ndarray, Any]:
    """The last step: (``smooth_across_slices``) smooth the change across slices, and put the
    volume back on the native grid.

    Returns the final slices (on the source slices' scale) and the native-grid image.
    """
    from .preprocessing import from_slices

    final = (smooth_change_across_slices(harmonized, slices, geometry.slice_max - geometry.slice_min,
                                         geometry.valid) if smooth_across_slices else harmonized)
    return final, from_slices(final, geometry)


def harmonize_image(image: Any, model: HarmonyModel, params: HarmonizationParams | None = None,
                    strict: bool = False, **changes: Any) -> HarmonizedImage:
    """Harmonize a T1w volume (path or nibabel image) with the shared preprocessing.

    The result is on the input's own grid, in the source's intensity units. Two volume steps of
    ours, on by default (``anchor_level``, ``smooth_across_slices``), put each harmonized slice's
    brighter half at the source's level (:func:`anchor_to_source_level`) and smooth the coarse
    part of the change across slices (:func:`smooth_change_across_slices`); then each slice is
    mapped back through its source slice's own minimum and maximum. The
    three steps (:func:`prepare_t1w`, :func:`harmonize_volume_slices`, :func:`reassemble`) are
    the ones the participant workflow runs as separate nodes. ``strict`` turns the contrast
    warning into :class:`NotT1wLikeError`.
    """
    params = (params or HarmonizationParams()).replace(**changes)
    prepared = prepare_t1w(image, model, strict)
    harmonized = harmonize_volume_slices(prepared.slices, prepared.geometry, model, params)
    final, output = reassemble(harmonized, prepared.slices, prepared.geometry, params.smooth_across_slices)
    metadata = {
        "parameters": params.to_dict(),
        "valid_slices": int(prepared.geometry.valid.sum()),
        "contrast_agreement": round(prepared.agreement, 4),
        "model_sha256": model.sha256,
    }
    return HarmonizedImage(output, prepared.slices, final, prepared.geometry, metadata, prepared.warnings)
