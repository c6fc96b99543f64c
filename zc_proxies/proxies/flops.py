"""``flops``: floating-point operations of one sample's forward pass, in millions (no data needed).

Counted the way NAS-Bench-Suite-Zero's files count them (NASLib uses tensorwatch's
port of torchstat), so our numbers equal the published ones exactly on
NAS-Bench-201. One sample of the batch's shape runs forward in eval mode and every
call of a leaf module adds:

=================================  ===============================================
module                             operations
=================================  ===============================================
Conv2d                             k_h * k_w * C_in * C_out / groups * H_out * W_out
                                   (multiply-accumulates), + C_out * H_out * W_out
                                   for a bias
Linear                             rows * in_features * out_features (bias not counted)
BatchNorm2d                        elements of its input, x2 when affine
ReLU, ReLU6, PReLU, ELU, LeakyReLU elements of the input
AvgPool2d, MaxPool2d               k_h * k_w per output element
AdaptiveAvg/MaxPool2d              per output cell and channel,
                                   (rows spanned + 1) * (columns spanned + 1)
Upsample                           output elements
anything else                      0 (element-wise adds, Identity, Zero, ...)
=================================  ===============================================

The adaptive-pooling rule (the "+ 1"s) is torchstat's and is kept for exact
comparability: on NAS-Bench-201 it makes the 8 x 8 global pooling count 81 per
channel. Unlike torchstat, a module called twice counts twice.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import ScoringContext, register_proxy

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)


def _adaptive_pool(inp: torch.Tensor, out: torch.Tensor) -> int:
    n, c, h, w = inp.shape
    oh, ow = out.shape[-2:]
    rows = [int(math.ceil((i + 1) * h / oh)) - int(math.floor(i * h / oh)) + 1 for i in range(oh)]
    cols = [int(math.ceil((j + 1) * w / ow)) - int(math.floor(j * w / ow)) + 1 for j in range(ow)]
    return n * c * sum(rows) * sum(cols)


def module_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Operations one call of ``module`` counts under the rules above."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        macs = kh * kw * module.in_channels * (module.out_channels // module.groups) * out[0, 0].numel() * out.shape[0]
        return macs + (out.numel() if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        return (inp.numel() // module.in_features) * module.in_features * module.out_features
    if isinstance(module, nn.BatchNorm2d):
        return inp.numel() * (2 if module.affine else 1)
    if isinstance(module, _ACTIVATIONS):
        return inp.numel()
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        k = module.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return out.numel() * kh * kw
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_pool(inp, out) if inp.dim() == 4 else 0
    if isinstance(module, nn.Upsample):
        return out.numel()
    return 0


def count_flops(model: nn.Module, sample_shape: tuple[int, ...], *, device: torch.device,
                dtype: torch.dtype) -> int:
    """Total operations of one forward pass of ``model`` on zeros of shape ``(1, *sample_shape)``."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            total += module_flops(module, inputs[0], output)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *sample_shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return total


@register_proxy("flops", needs_labels=False, needs_grad=False, bn_mode="eval", version="1")
def flops(ctx: ScoringContext) -> float:
    """Forward-pass operations of one sample, in millions (NASLib/torchstat counting rules)."""
    return count_flops(ctx.model, tuple(ctx.inputs.shape[1:]), device=ctx.inputs.device,
                       dtype=ctx.inputs.dtype) / 1e6
