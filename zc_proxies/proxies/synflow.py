"""``synflow`` and ``synflow_bn``: synaptic flow of the absolute-valued network.

Tanaka et al. (2020), SynFlow; as a zero-cost proxy in Abdelfattah et al. (2021)
and NAS-Bench-Suite-Zero:

1. take the network in float64 with every parameter and buffer replaced by its
   absolute value;
2. feed one input of all ones (one sample, the batch's image shape) and let
   R = the sum of all outputs;
3. synflow = sum over Conv2d/Linear weights w of | w * dR/dw |.

``synflow`` removes BatchNorm (NAS-Bench-Suite-Zero's ``bn=False`` copy: each
BatchNorm module acts as an identity), ``synflow_bn`` keeps it in train mode. The
computation is in float64 because R grows like a product over layers and
overflows float32 on deep networks. The score is returned raw: the logarithm
NAS-Bench-Suite-Zero stores (``log(synflow)``) is a report-time transform and does
not change ranks. Neither labels nor the batch's pixels are used.

The absolute float64 network is not a copy of the module tree (``copy.deepcopy``
of a NAS-Bench-201 network cost half of this proxy's time): the working copy runs
with float64 stand-ins for its parameters and buffers (``torch.func.functional_call``),
and for ``synflow`` its BatchNorm modules pass their input through for the length
of the call. The stand-ins are in torch's default (NCHW) memory format whatever
the run's layout: torch has no channels-last float64 kernels on the CPU, and one
sample in NCHW is faster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ModelError
from . import _shared
from .base import ScoringContext, register_proxy

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_UNSET = object()


def _pass_through(x: torch.Tensor) -> torch.Tensor:
    return x


@contextmanager
def batchnorm_bypassed(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm module of ``model`` returns its input unchanged inside the block (put back after)."""
    saved = []
    try:
        for module in model.modules():
            if isinstance(module, _BATCHNORMS):
                saved.append((module, vars(module).get("forward", _UNSET)))
                module.forward = _pass_through
        yield
    finally:
        for module, forward in saved:
            if forward is _UNSET:
                del module.forward
            else:
                module.forward = forward


def _absolute_float64(tensor: torch.Tensor) -> torch.Tensor:
    """|tensor| in float64 and NCHW for a floating tensor; a clone of any other (a counter, a mask)."""
    if not tensor.is_floating_point():
        return tensor.detach().clone()
    return tensor.detach().to(dtype=torch.float64, memory_format=torch.contiguous_format).abs_()


def synaptic_flow(ctx: ScoringContext, *, keep_bn: bool, proxy: str) -> float:
    """The synflow sum on ``ctx.model`` run with absolute float64 parameters and buffers."""
    net = ctx.model
    layers = _shared.require_weight_layers(net, proxy)
    stand_in = {id(t): _absolute_float64(t) for t in [*net.parameters(), *net.buffers()]}
    values = {name: stand_in[id(t)] for name, t in [*net.named_parameters(remove_duplicate=False),
                                                      *net.named_buffers(remove_duplicate=False)]}
    missing = [type(m).__name__ for m in layers if id(m.weight) not in stand_in]
    if missing:
        raise ModelError(f"{proxy} differentiates with respect to each layer's weight, but a {missing[0]}'s "
                         "weight is computed (a parametrization?), not a parameter of the model")
    weights = [stand_in[id(m.weight)].requires_grad_(True) for m in layers]
    ones = torch.ones((1, *ctx.inputs.shape[1:]), dtype=torch.float64, device=ctx.inputs.device)
    bypass = nullcontext() if keep_bn else batchnorm_bypassed(net)
    with torch.enable_grad(), bypass:
        out = _shared.model_output(functional_call(net, values, (ones,), tie_weights=False), proxy)
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
