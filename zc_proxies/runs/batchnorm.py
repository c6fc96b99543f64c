"""Train-mode BatchNorm whose batch statistics are exact in every memory layout.

PyTorch's CPU kernel for a channels-last (NHWC) input accumulates a training
batch's statistics sequentially in float32 over N x H x W values. On
128 x 32 x 32 x 32 maps (mean 1.5, spread 3) its output is off by ~1e-5
relative to a float64 computation, against ~1e-7 for the NCHW kernel, and a
Fisher potential summed over a WRN-40-2 moved by up to 1%, enough to reorder
BlockSwap candidates. :class:`ExactBatchNorm2d` takes the sums of x and x^2
with torch's cascade (pairwise) sums instead, ~1e-7 in either layout; where a
channel's mean dominates its spread (mean^2 > 4 var, so that E[x^2] - E[x]^2
would lose digits) it takes the centred second moment in a second pass. It
normalises with the eval-mode kernel given those statistics and
differentiates with the native backward given the same statistics. In NHWC it
costs a little more than torch's kernel (~5% of an NAS-Bench-201 Fisher
score). The engine uses it in NHWC only (:mod:`zc_proxies.runs.layout`).

Its first-order backward is torch's native kernel. Asked for a graph of the
gradient (``create_graph``, as GraSP's Hessian-vector product does), it
differentiates a recomputation of the same normalisation instead, so
higher-order gradients are exact too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_DIMS = (0, 2, 3)

#: Above this mean^2 / variance a channel's variance is taken from centred values (a second pass).
CANCELLATION = 4.0


class _ExactNorm(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over (N, H, W), with the batch's own statistics."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        count = x.numel() // x.shape[1]
        mean = x.sum(_DIMS) / count
        var = ((x * x).sum(_DIMS) / count - mean * mean).clamp_(min=0.0)
        if bool((mean * mean > CANCELLATION * var).any()):  # E[x^2] - E[x]^2 would cancel: centre first
            centred = x - mean[None, :, None, None]
            var = (centred * centred).sum(_DIMS) / count
            del centred
        out = F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_mean: Any, _grad_var: Any) -> tuple:
        x, weight, bias, mean, invstd = ctx.saved_tensors
        want = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and weight is not None,
                ctx.needs_input_grad[2] and bias is not None]
        if torch.is_grad_enabled():  # create_graph: the gradient must itself be differentiable
            return (*_recomputed_gradients(x, weight, bias, ctx.eps, grad, want), None)
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(memory_format=_format_of(x)), x, weight, None, None, mean, invstd, True, ctx.eps, want)
        return gx, gw, gb, None


def _recomputed_gradients(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                          grad: torch.Tensor, want: list[bool]) -> list[torch.Tensor | None]:
    """The vector-Jacobian product of the normalisation, recomputed with autograd so it has a graph itself."""
    inputs = [t for t, w in zip((x, weight, bias), want) if w]
    count = x.numel() // x.shape[1]
    mean = x.sum(_DIMS, keepdim=True) / count
    centred = x - mean
    out = centred * torch.rsqrt((centred * centred).sum(_DIMS, keepdim=True) / count + eps)
    if weight is not None:
        out = out * weight[None, :, None, None]
    if bias is not None:
        out = out + bias[None, :, None, None]
    found = iter(torch.autograd.grad(out, inputs, grad, create_graph=True, allow_unused=True))
    return [next(found) if w else None for w in want]


def _format_of(x: torch.Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class ExactBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training-mode batch statistics are exact in every layout (see the module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not (self.training or self.running_mean is None):
            return super().forward(x)  # eval mode: the running statistics, no batch statistics to collect
        out, mean, var = _ExactNorm.apply(x, self.weight, self.bias, self.eps)
        if self.training and self.running_mean is not None:
            self._track(mean.detach(), var.detach(), x.numel() // x.shape[1])
        return out

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """The running statistics nn.BatchNorm2d keeps (unbiased variance, momentum or cumulative average)."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / max(count - 1, 1))
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


def use_exact_batchnorm(model: nn.Module) -> nn.Module:
    """Make every plain nn.BatchNorm2d of ``model`` (in place) an :class:`ExactBatchNorm2d`; returns ``model``.

    Only for a network the caller owns (a fresh build): parameters, buffers and
    their names are kept, only the modules' class changes.
    """
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = ExactBatchNorm2d
    return model
