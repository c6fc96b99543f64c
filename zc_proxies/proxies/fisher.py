"""The two Fisher proxies.

Both use the per-channel Fisher estimate of Theis et al. (2018), as BlockSwap
(Turner et al., ICLR 2020) does:

    Delta_c = 1/2 * mean over the batch of (sum over positions of a * dL/da)^2

They differ in where activations are probed and how channels are weighted:

``fisher``
    The zero-cost-proxy literature's version (Abdelfattah et al. 2021, used by
    NAS-Bench-Suite-Zero): a probe on the output of every Conv2d and Linear;
    each channel's Delta_c counts once per weight of that channel's filter
    (its fan-in), summed over all layers.
``fisher_potential``
    BlockSwap's version: probes only at block outputs (a
    :class:`~zc_proxies.probes.BlockProbe` after each block's last conv, before
    the residual add); Delta_c summed unweighted over channels and blocks. A
    model that contains no BlockProbe is refused with an error that says how to
    declare blocks, rather than silently probing something else.

Both differentiate the loss of :meth:`~zc_proxies.proxies.base.ScoringContext.forward_loss`,
so they score any kind of :class:`~zc_proxies.batch.Batch`: a classifier's
cross-entropy, a custom loss, or the summed training losses of a torchvision
detector (:class:`~zc_proxies.blockswap.detection.DetectionBatch`). On a plain
tensor batch ``fisher`` reads its saliencies off the shared pass of
:mod:`._shared` (``conv_saliencies``), so scored with grad_norm, snip, grasp,
jacob_cov, naswot... it costs no forward pass of its own and its backward pass
is the one that gives their weight gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from ..probes import BlockProbe, channel_saliencies
from . import _shared
from .base import ScoringContext, register_proxy


def channel_fisher(g: torch.Tensor) -> torch.Tensor:
    """Delta_c from the saliencies ``g`` of shape (N, C): 1/2 mean_n g^2, in float64."""
    return 0.5 * g.double().pow(2).mean(dim=0)


def fan_in(module: nn.Module) -> int:
    """Weights per output channel of a Conv2d or Linear: (in / groups) * kernel area."""
    return int(module.weight[0].numel())


def _saliencies(ctx: ScoringContext, modules: list[nn.Module]) -> list[tuple[nn.Module, torch.Tensor]]:
    # through the batch's own forward and loss, so both proxies score any kind of batch (a detector's too)
    return channel_saliencies(ctx.model, modules, ctx.forward_loss)


_shared.declare("fisher", "conv_saliencies")


@register_proxy("fisher", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def fisher(ctx: ScoringContext) -> float:
    """Fisher at every Conv2d/Linear output, fan-in weighted (zero-cost literature)."""
    layers = [m for m in ctx.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ModelError("fisher needs a model with at least one nn.Conv2d or nn.Linear to probe; found none")
    if _shared.plain_batch(ctx):  # the probes ride along the pass grad_norm, snip, jacob_cov... share
        pairs = _shared.train_pass(ctx, "conv_saliencies").conv_saliencies
    else:
        pairs = _saliencies(ctx, layers)
    total = torch.zeros((), dtype=torch.float64)
    for module, g in pairs:
        total = total + channel_fisher(g).sum().cpu() * fan_in(module)
    return float(total)


@register_proxy("fisher_potential", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def fisher_potential(ctx: ScoringContext) -> float:
    """BlockSwap's Fisher potential: probes at block outputs, channels summed unweighted."""
    blocks = [m for m in ctx.model.modules() if isinstance(m, BlockProbe)]
    if not blocks:
        raise ModelError(
            f"fisher_potential needs the model to declare its blocks, but {type(ctx.model).__name__} "
            "contains no zc_proxies.BlockProbe; put one after each block's last convolution "
            "(before the residual add), or use proxy='fisher', which probes every conv"
        )
    total = torch.zeros((), dtype=torch.float64)
    for _module, g in _saliencies(ctx, blocks):
        total = total + channel_fisher(g).sum().cpu()
    return float(total)
