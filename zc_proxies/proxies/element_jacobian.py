"""Per-sample logit Jacobians with respect to single parameter elements, one backward pass per class.

VKDNW needs J[n, c, k] = d z_{n, c} / d theta_k, where z_n are the logits of
sample n *alone* and theta_k is the first element (flat index 0) of parameter
tensor k. Differentiating every sample and class separately (or ``vmap`` of
``jacrev`` over samples, :func:`~zc_proxies.proxies.vkdnw.logit_jacobians`)
computes whole weight gradients per sample only to keep one number of each.

Here the network runs once on the whole batch and is differentiated once per
class c, with respect to activations only. A network that treats its samples
independently (eval-mode BatchNorm, no other coupling) gives, in that backward
pass, every sample's own gradient d z_{n, c} / d out at the output ``out`` of
each layer. The derivative with respect to one element of the layer's weight is
then a closed form in that gradient and the layer's input:

=================================  =============================================================
layer                              d z_{n,c} / d (element 0) of ...
=================================  =============================================================
``Conv2d`` weight[0, 0, 0, 0]      sum_{h,w} g[n, 0, h, w] * xpad[n, 0, h*s_h, w*s_w]
                                   (xpad: the input zero-padded as the layer pads it)
``Linear`` weight[0, 0]            sum over extra dims of g[n, ..., 0] * x[n, ..., 0]
BatchNorm (eval) weight[0]         sum_{positions} g[n, 0] * (x[n, 0] - mean_0) / sqrt(var_0 + eps)
``GroupNorm`` weight[0]            sum_{positions} g[n, 0] * xhat[n, 0] (group 0's statistics)
any of these, bias[0]              sum_{positions} g[n, 0]
=================================  =============================================================

summed over the calls of the layer. Costs: one forward pass and C backward
passes of activation gradients (no weight gradients), against N x C backward
passes with weight gradients for the per-sample route.

The fast route is used only when it is exact, and two checks made on the way
decide it; otherwise :func:`element_jacobians` returns None and the caller takes
the per-sample route:

* every selected tensor is the ``weight`` or ``bias`` of one of the layers above
  (Conv2d with zero padding; BatchNorm in eval mode with running statistics) and
  is held by no other module;
* the samples do not interact: the first sample run alone gives the logits it
  gets in the batch (to float tolerance; batch statistics would change them);
* for class 0 the gradient of the selected tensors is also taken by autograd, and
  its element 0 must equal the sum over samples of the closed forms (this catches
  a weight used outside its layer's forward call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: Relative tolerance of the two checks (float32 arithmetic in different orders agrees far better).
CHECK_RTOL = 1e-3


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros"
    if isinstance(module, _BatchNorm):
        return not module.training and module.running_mean is not None and module.running_var is not None
    return isinstance(module, (nn.Linear, nn.GroupNorm))


def _owners(net: nn.Module, names: list[str]) -> list[tuple[nn.Module, str]] | None:
    """(layer, 'weight' or 'bias') per name, or None if one is not a supported layer's own, unshared tensor."""
    holders: dict[int, int] = {}
    for _module_name, module in net.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                holders[id(p)] = holders.get(id(p), 0) + 1
    owners = []
    for name in names:
        prefix, _, attr = name.rpartition(".")
        module = net.get_submodule(prefix) if prefix else net
        param = module._parameters.get(attr)
        if attr not in ("weight", "bias") or param is None or not _supported(module) or holders[id(param)] != 1:
            return None
        owners.append((module, attr))
    return owners


def _normalised_first_channel(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The normalised channel 0 that multiplies weight[0] of a BatchNorm (eval) or GroupNorm layer."""
    if isinstance(module, _BatchNorm):
        return (x[:, 0] - module.running_mean[0]) / torch.sqrt(module.running_var[0] + module.eps)
    group = x[:, : x.shape[1] // module.num_groups]
    flat = group.reshape(group.shape[0], -1)
    mean = flat.mean(dim=1)
    var = flat.var(dim=1, unbiased=False)
    shape = (-1,) + (1,) * (x.dim() - 2)
    return (x[:, 0] - mean.view(shape)) / torch.sqrt(var.view(shape) + module.eps)


def _element_gradient(module: nn.Module, attr: str, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """d z / d (element 0 of module.attr) per sample (N,), from the layer's input ``x`` and output gradient ``g``."""
    if isinstance(module, nn.Linear):
        g0 = g[..., 0]
        term = g0 if attr == "bias" else g0 * x[..., 0]
        return term.reshape(term.shape[0], -1).sum(dim=1)
    g0 = g[:, 0]
    if attr == "bias":
        return g0.reshape(g0.shape[0], -1).sum(dim=1)
    if isinstance(module, nn.Conv2d):
        left_w, right_w, top_h, bottom_h = module._reversed_padding_repeated_twice
        padded = F.pad(x[:, 0], (left_w, right_w, top_h, bottom_h))
        s_h, s_w = module.stride
        h, w = g0.shape[-2:]
        picked = padded[:, : s_h * (h - 1) + 1 : s_h, : s_w * (w - 1) + 1 : s_w]
        return (g0 * picked).sum(dim=(1, 2))
    term = g0 * _normalised_first_channel(module, x)
    return term.reshape(term.shape[0], -1).sum(dim=1)


def _agrees(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor) -> bool:
    return bool(((got - want).abs() <= CHECK_RTOL * scale + 1e-30).all())


def element_jacobians(net: nn.Module, x: torch.Tensor, names: list[str],
                      skip_last: bool = False) -> tuple[torch.Tensor, torch.Tensor] | None:
    """J (N, C, P) = d logits / d (element 0 of each of ``names``) per sample alone, and the logits (N, C); or None.

    ``net`` is in eval mode and returns logits (N, C). With ``skip_last`` the
    last logit is not differentiated and its rows of J are zeros (one backward
    pass fewer, for a caller that multiplies them by zero anyway).
    None means the fast route does not apply exactly to this network (see the
    module docstring); nothing about ``net`` is changed either way.
    """
    owners = _owners(net, names)
    if owners is None or x.shape[0] < 1:
        return None
    params = [getattr(m, a) for m, a in owners]
    flags = [p.requires_grad for p in net.parameters()]
    by_module: dict[nn.Module, list[tuple[int, str]]] = {}
    for k, (module, attr) in enumerate(owners):
        by_module.setdefault(module, []).append((k, attr))
    n = x.shape[0]
    state = {"class": 0, "jac": None}

    def on_forward(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x_in = inputs[0].detach()

        def on_grad(g: torch.Tensor) -> None:
            for k, attr in by_module[module]:
                state["jac"][:, state["class"], k] += _element_gradient(module, attr, x_in, g.detach())

        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(on_grad)  # fires with the gradient of this value, even if it is later modified in place

    handles = [m.register_forward_hook(on_forward) for m in by_module]
    try:
        for p in net.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            logits = net(leaf)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
                return None
            for h in handles:
                h.remove()
            handles = []
            with torch.no_grad():
                alone = net(x[:1])
            if not isinstance(alone, torch.Tensor) or alone.shape != logits[:1].shape or not _agrees(
                    alone, logits[:1].detach(), logits.detach().abs().max()):
                return None  # the samples interact: the per-sample route is needed
            todo = logits.shape[1] - 1 if skip_last else logits.shape[1]
            state["jac"] = torch.zeros(n, logits.shape[1], len(names), dtype=logits.dtype, device=logits.device)
            for c in range(todo):
                state["class"] = c
                cotangent = torch.zeros_like(logits)
                cotangent[:, c] = 1.0
                wanted = [leaf] + (params if c == 0 else [])
                grads = torch.autograd.grad(logits, wanted, grad_outputs=cotangent, retain_graph=c + 1 < todo,
                                            allow_unused=True)
                if c == 0:
                    direct = torch.stack([torch.zeros((), dtype=logits.dtype, device=logits.device) if gk is None
                                          else gk.reshape(-1)[0] for gk in grads[1:]])
                    total = state["jac"][:, 0].sum(dim=0)
                    scale = state["jac"][:, 0].abs().sum(dim=0).clamp_min(direct.abs())
                    if not _agrees(total, direct, scale):
                        return None  # a selected weight acts outside its layer's call
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)
    return state["jac"], logits.detach()
