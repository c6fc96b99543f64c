"""``zen``: the Zen-score of Lin et al. (2021), as NAS-Bench-Suite-Zero computes it.

On a private copy of the network (train-mode BatchNorm):

1. re-initialise it: Conv2d and Linear weights ~ N(0, 1), their biases 0;
   BatchNorm2d / GroupNorm weights 1 and biases 0; BatchNorm running statistics
   reset (as on a freshly built network);
2. draw Gaussian inputs x1, x2 of the minibatch's shape and let x_mix = x1 + 0.01 x2;
3. F(x) = the feature map entering global average pooling (the input of the last
   nn.AdaptiveAvgPool2d called in the forward pass);
4. Delta = mean over samples of sum over (C, H, W) of |F(x1) - F(x_mix)|;
5. zen = log(Delta) + sum over BatchNorm2d layers of log sqrt(mean(running_var)).

The running variances in step 5 are the ones left by the two forward passes in
train mode with each layer's own momentum, exactly as in NAS-Bench-Suite-Zero's
implementation (layers that keep no running statistics are skipped). Random draws
come, in the order above (weights in ``model.modules()`` order, then x1, then x2),
from a generator seeded with the scoring seed. The pixels and labels of the batch
are not used, only its shape.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ModelError
from . import _shared
from .base import ScoringContext, register_proxy

MIXUP_GAMMA = 1e-2


def gaussian_reinit(net: nn.Module, gen: torch.Generator, *, reset_running_stats: bool = True) -> None:
    """Zen-NAS's re-initialisation (in place), drawing from ``gen`` in module order.

    Conv2d/Linear weights ~ N(0, 1) and biases 0; BatchNorm2d/GroupNorm weights 1 and biases 0; BatchNorm
    running statistics reset unless ``reset_running_stats`` is False (SWAP's variant of the same scheme).
    """
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _shared.in_logical_order(m.weight, lambda w: w.normal_(0.0, 1.0, generator=gen))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                if reset_running_stats and isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
                    m.reset_running_stats()
                if m.weight is not None:
                    m.weight.fill_(1.0)
                if m.bias is not None:
                    m.bias.zero_()


def features_before_pooling(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the last nn.AdaptiveAvgPool2d called when ``net`` runs on ``x``."""
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0]))
               for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not handles:
        raise ModelError(f"zen needs the feature map before global average pooling, but {type(net).__name__} "
                         "has no nn.AdaptiveAvgPool2d module")
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ModelError("zen: the model's nn.AdaptiveAvgPool2d was never called in the forward pass")
    feat = seen[-1]
    if feat.dim() != 4:
        raise ModelError(f"zen: the feature map before global pooling has shape {tuple(feat.shape)}, expected (N, C, H, W)")
    return feat


@register_proxy("zen", needs_labels=False, needs_grad=False, bn_mode="train", version="1")
def zen(ctx: ScoringContext) -> float:
    """Zen-score: log of the mixup feature-map difference of a Gaussian-initialised copy plus BN scaling."""
    net = copy.deepcopy(ctx.model)
    gen = ctx.generator()
    gaussian_reinit(net, gen)
    shape, device, dtype = ctx.inputs.shape, ctx.inputs.device, ctx.inputs.dtype
    x1 = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    x2 = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    with torch.no_grad():
        f1 = features_before_pooling(net, x1)
        f2 = features_before_pooling(net, x1 + MIXUP_GAMMA * x2)
        delta = (f1 - f2).abs().sum(dim=(1, 2, 3)).mean()
        total = torch.log(delta.double())
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_var is not None:
                total = total + 0.5 * torch.log(m.running_var.double().mean())
    return float(total)

