"""``synflow`` and ``synflow_bn``: synaptic flow of the absolute-valued network.

Tanaka et al. (2020), SynFlow; as a zero-cost proxy in Abdelfattah et al. (2021)
and NAS-Bench-Suite-Zero:

1. take a copy of the network in float64 and replace every parameter and buffer
   by its absolute value;
2. feed one input of all ones (one sample, the batch's image shape) and let
   R = the sum of all outputs;
3. synflow = sum over Conv2d/Linear weights w of | w * dR/dw |.

``synflow`` removes BatchNorm (NAS-Bench-Suite-Zero's ``bn=False`` copy: each
BatchNorm module becomes an identity), ``synflow_bn`` keeps it in train mode. The
computation is in float64 because R grows like a product over layers and
overflows float32 on deep networks. The score is returned raw: the logarithm
NAS-Bench-Suite-Zero stores (``log(synflow)``) is a report-time transform and does
not change ranks. Neither labels nor the batch's pixels are used.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import _shared
from .base import ScoringContext, register_proxy

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _strip_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm submodule by nn.Identity (in place); a bare BatchNorm model becomes Identity."""
    if isinstance(model, _BATCHNORMS):
        return nn.Identity()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BATCHNORMS):
                setattr(parent, name, nn.Identity())
    return model


def synaptic_flow(ctx: ScoringContext, *, keep_bn: bool, proxy: str) -> float:
    """The synflow sum on a private float64 copy of ``ctx.model`` with absolute weights."""
    net = copy.deepcopy(ctx.model)
    if not keep_bn:
        net = _strip_batchnorm(net)
    net = net.double()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    layers = _shared.require_weight_layers(net, proxy)
    weights = [m.weight for m in layers]
    for w in weights:
        w.requires_grad_(True)
    ones = torch.ones((1, *ctx.inputs.shape[1:]), dtype=torch.float64, device=ctx.inputs.device)
    with torch.enable_grad():
        out = _shared.model_output(net(ones), proxy)
        total = out.sum()
        if total.requires_grad:
            grads = torch.autograd.grad(total, weights, allow_unused=True)
        else:
            grads = (None,) * len(weights)
    return _shared.layer_sum((w.detach() * g).abs() for w, g in zip(weights, grads) if g is not None)


@register_proxy("synflow", needs_labels=False, needs_grad=True, bn_mode="train", version="1",
                network="live")
def synflow(ctx: ScoringContext) -> float:
    """Synaptic flow of the absolute network without BatchNorm, input of ones, float64."""
    return synaptic_flow(ctx, keep_bn=False, proxy="synflow")


@register_proxy("synflow_bn", needs_labels=False, needs_grad=True, bn_mode="train", version="1",
                network="live")
def synflow_bn(ctx: ScoringContext) -> float:
    """Synaptic flow of the absolute network with train-mode BatchNorm, input of ones, float64."""
    return synaptic_flow(ctx, keep_bn=True, proxy="synflow_bn")
