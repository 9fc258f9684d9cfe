"""Batch normalisation over the whole batch of a distributed (DDP) run, on any device.

With DistributedDataParallel each process sees only its share of a batch; plain batch norm
would then normalise with share statistics, so N processes would train a different model
than one process, and their running statistics would drift apart. ``torch.nn.SyncBatchNorm``
fixes this on GPUs only; this module does the same with ``all_reduce`` (gloo or NCCL), so the
CPU path is exact too.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _GlobalBatchNorm(torch.autograd.Function):
    """Normalise with statistics over every process's share; gradients likewise."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, eps):
        dims = [0] + list(range(2, inputs.dim()))
        count = torch.tensor([inputs.numel() / inputs.shape[1]], dtype=inputs.dtype, device=inputs.device)
        stats = torch.cat([inputs.sum(dims), (inputs * inputs).sum(dims), count])
        dist.all_reduce(stats)
        channels = inputs.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        variance = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0.0)
        inverse_std = torch.rsqrt(variance + eps)
        shape = [1, channels] + [1] * (inputs.dim() - 2)
        normalised = (inputs - mean.view(shape)) * inverse_std.view(shape)
        ctx.save_for_backward(normalised, weight, inverse_std, total)
        ctx.dims = dims
        ctx.mark_non_differentiable(mean, variance, total)
        return normalised * weight.view(shape) + bias.view(shape), mean, variance, total

    @staticmethod
    def backward(ctx, grad_output, _grad_mean, _grad_variance, _grad_total):
        normalised, weight, inverse_std, total = ctx.saved_tensors
        dims, channels = ctx.dims, normalised.shape[1]
        shape = [1, channels] + [1] * (normalised.dim() - 2)
        grad_bias = grad_output.sum(dims)
        grad_weight = (grad_output * normalised).sum(dims)
        sums = torch.cat([grad_bias, grad_weight])
        dist.all_reduce(sums)  # the batch statistics couple every process's samples
        mean_grad = (sums[:channels] / total).view(shape)
        mean_grad_normalised = (sums[channels:] / total).view(shape)
        grad_input = (grad_output - mean_grad - normalised * mean_grad_normalised) \
            * (weight * inverse_std).view(shape)
        return grad_input, grad_weight, grad_bias, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that, in a distributed run, uses whole-batch statistics."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(inputs)
        outputs, mean, variance, total = _GlobalBatchNorm.apply(inputs, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = variance * total / (total - 1).clamp_min(1)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        return outputs


def global_batch_norm(module: nn.Module) -> nn.Module:
    """Swap every ``BatchNorm2d`` of ``module`` for a :class:`GlobalBatchNorm2d` (same weights)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum,
                                            child.affine, child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            replacement.to(child.weight.device)
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            global_batch_norm(child)
    return module
