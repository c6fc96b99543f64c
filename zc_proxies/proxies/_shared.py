"""Computations several proxies share, done once per scoring call and kept in ``ctx.cache``.

Most zero-cost proxies in train-mode BatchNorm need the same single forward pass
and differ only in what they read off it:

=====================  ===========================================  =====================
artifact               what it is                                   used by
=====================  ===========================================  =====================
``weight_grads``       dL/dW for every Conv2d/Linear weight          grad_norm, snip, plain
``hessian_grad``       H g for those weights (g = dL/dW, detached)   grasp
``input_jacobian``     d(sum of all outputs)/d(inputs), (N, D)       jacob_cov, epe_nas
``relu_kernel``        NASWOT's kernel of ReLU activation codes      naswot
=====================  ===========================================  =====================

:func:`train_pass` computes the artifacts a proxy asks for *and* those that the
other proxies of the same :func:`~zc_proxies.score` call have declared (with
:func:`declare`), all from one forward pass on the shared working copy: the loss
is differentiated for the weight gradients (with ``create_graph`` when grasp needs
the Hessian-gradient product), and the sum of the outputs for the input jacobian;
ReLU codes are read by pre-forward hooks during the same pass. Every artifact
equals what its proxy would compute alone, because train-mode BatchNorm makes the
forward pass independent of the running statistics, and asking for the gradient
of the inputs does not change the gradients of the weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ModelError
from .base import ScoringContext

# Key under which score() lists the names of the proxies scored together on one working copy.
TOGETHER = "_zc_proxies_together"
_PASS = "_zc_train_pass"

ARTIFACTS = ("weight_grads", "hessian_grad", "input_jacobian", "relu_kernel")
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
# Activations whose sign pattern NASWOT reads (NAS-Bench-Suite-Zero hooks every module whose
# type name contains "ReLU"); for all of them, output > 0 exactly when input > 0.
RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU)

_DECLARED: dict[str, frozenset[str]] = {}


def declare(proxy_name: str, *artifacts: str) -> None:
    """Record that ``proxy_name`` reads these artifacts, so a shared pass can compute them early."""
    unknown = set(artifacts) - set(ARTIFACTS)
    if unknown:
        raise ValueError(f"unknown shared artifacts {sorted(unknown)}; known: {', '.join(ARTIFACTS)}")
    _DECLARED[proxy_name] = frozenset(artifacts)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Every Conv2d and Linear module, in ``model.modules()`` order (NAS-Bench-Suite-Zero's layer set)."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def require_weight_layers(model: nn.Module, proxy: str) -> list[nn.Module]:
    """:func:`weight_layers`, or a :class:`ModelError` naming ``proxy`` when there are none."""
    layers = weight_layers(model)
    if not layers:
        raise ModelError(f"{proxy} sums over nn.Conv2d and nn.Linear weights, but "
                         f"{type(model).__name__} contains neither")
    return layers


def corrcoef(rows: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between the rows of ``rows`` (as numpy.corrcoef), in float64, clipped to [-1, 1].

    A row with zero variance gives NaN entries, as in numpy.
    """
    x = rows.double()
    x = x - x.mean(dim=1, keepdim=True)
    cov = x @ x.T
    std = cov.diagonal().sqrt()
    return (cov / std[:, None] / std[None, :]).clamp(-1.0, 1.0)


def model_output(out: object, proxy: str) -> torch.Tensor:
    """The model's output as one tensor, or a :class:`ModelError` that says what came back."""
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{proxy} needs the model to return one tensor of outputs, got {type(out).__name__}")
    return out


@dataclass
class TrainPass:
    """Results of one shared forward pass; an artifact that was not computed is None."""

    layers: list[nn.Module]
    artifacts: set[str] = field(default_factory=set)
    weight_grads: list[torch.Tensor] | None = None
    hessian_grad: list[torch.Tensor] | None = None
    input_jacobian: torch.Tensor | None = None
    relu_kernel: torch.Tensor | None = None
    relu_calls: int = 0
    num_outputs: int = 0  # size of the outputs' last axis (the number of classes for a classifier)

    def merge(self, other: TrainPass) -> TrainPass:
        for name in other.artifacts:
            setattr(self, name, getattr(other, name))
        if "relu_kernel" in other.artifacts:
            self.relu_calls = other.relu_calls
        self.artifacts |= other.artifacts
        self.num_outputs = other.num_outputs
        return self


def companions(ctx: ScoringContext) -> set[str]:
    """Artifacts declared by the proxies scored together with the current one."""
    wanted: set[str] = set()
    for name in ctx.cache.get(TOGETHER, ()):
        wanted |= _DECLARED.get(name, frozenset())
    return wanted


def train_pass(ctx: ScoringContext, *artifacts: str) -> TrainPass:
    """The shared pass holding ``artifacts`` (computed now, with the companions' needs, if not cached)."""
    unknown = set(artifacts) - set(ARTIFACTS)
    if unknown:
        raise ValueError(f"unknown shared artifacts {sorted(unknown)}")
    have: TrainPass | None = ctx.cache.get(_PASS)
    done = have.artifacts if have is not None else set()
    if set(artifacts) <= done:
        return have  # type: ignore[return-value]
    todo = (set(artifacts) | companions(ctx)) - done
    new = _run(ctx, todo)
    merged = new if have is None else have.merge(new)
    ctx.cache[_PASS] = merged
    return merged


def _zeros_for(grads: Iterable[torch.Tensor | None], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(w) if g is None else g.detach() for g, w in zip(grads, weights)]


def _kernel_dtype(device: torch.device) -> torch.dtype:
    # 0/1 codes summed over at most 2**24 positions are exact in float32 on CPU; on CUDA a
    # TF32 setting could round them, so use float64 there.
    return torch.float64 if device.type == "cuda" else torch.float32


def _run(ctx: ScoringContext, todo: set[str]) -> TrainPass:
    model = ctx.model
    layers = weight_layers(model)
    weights = [m.weight for m in layers]
    result = TrainPass(layers=layers, artifacts=set(todo))
    need_loss = bool(todo & {"weight_grads", "hessian_grad"})
    need_jac = "input_jacobian" in todo
    need_kernel = "relu_kernel" in todo
    if need_loss and not layers:
        raise ModelError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear weights to differentiate")
    n = ctx.inputs.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=ctx.inputs.device)
    calls = 0

    def count_codes(_module: nn.Module, inputs: tuple) -> None:
        nonlocal kernel, calls
        a = inputs[0].detach().reshape(n, -1)
        codes = (a > 0).to(_kernel_dtype(a.device))
        agree = codes @ codes.T  # positions where both are active
        active = codes.sum(dim=1)
        # sum_d [c_id c_jd + (1 - c_id)(1 - c_jd)] = 2 c_i.c_j - |c_i| - |c_j| + D
        kernel = kernel + (2 * agree - active[:, None] - active[None, :] + codes.shape[1]).double()
        calls += 1

    handles = []
    if need_kernel:
        handles = [m.register_forward_pre_hook(count_codes) for m in model.modules() if isinstance(m, RELU_LIKE)]
        if not handles:
            raise ModelError(
                f"naswot reads the activation pattern of nn.ReLU modules, but {type(model).__name__} has none "
                "(functional F.relu calls cannot be observed); use nn.ReLU modules"
            )
    for w in weights:
        w.requires_grad_(True)  # the working copy's flags are restored after the proxy
    x = ctx.inputs.detach().clone().requires_grad_(need_jac)
    try:
        with torch.set_grad_enabled(need_loss or need_jac):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    out = model_output(out, "this proxy")
    result.num_outputs = int(out.shape[-1]) if out.dim() else 1
    if need_kernel:
        result.relu_kernel, result.relu_calls = kernel, calls
    if need_loss:
        loss = ctx.loss(out)
        hessian = "hessian_grad" in todo
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, weights, allow_unused=True,
                                        create_graph=hessian, retain_graph=hessian or need_jac)
        else:
            grads = (None,) * len(weights)
        result.weight_grads = _zeros_for(grads, weights)
        if hessian:
            terms = [(g.detach() * g).sum() for g in grads if g is not None and g.requires_grad]
            if terms:
                hg = torch.autograd.grad(torch.stack(terms).sum(), weights, allow_unused=True,
                                         retain_graph=need_jac)
            else:
                hg = (None,) * len(weights)
            result.hessian_grad = _zeros_for(hg, weights)
    if need_jac:
        if out.requires_grad:
            (jx,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), allow_unused=True)
        else:
            jx = None
        jac = torch.zeros_like(x) if jx is None else jx.detach()
        result.input_jacobian = jac.reshape(n, -1)
    return result


def layer_sum(values: Iterable[torch.Tensor]) -> float:
    """Sum of per-layer tensors, accumulated in float64 (as one Python float)."""
    total = torch.zeros((), dtype=torch.float64)
    for v in values:
        total = total + v.double().sum().cpu()
    return float(total)
