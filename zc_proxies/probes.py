"""Channel saliencies: per sample and channel, the sum over positions of activation x gradient.

Both Fisher proxies (and any other proxy that wants the same quantity) rest on

    g[n, c] = sum_i a[n, c, i] * dL/da[n, c, i]

at some set of probe points. Where the probed output ``a`` is already part of
the autograd graph, the gradient of the loss with respect to ``a`` itself is
asked for and multiplied by ``a``: the forward pass is untouched and no
memory pass is added to it. Where it is not (nothing upstream requires grad,
typically the first layer), ``a`` is multiplied by a per-sample, per-channel
scale ``s`` of value 1 that requires grad, and ``g`` = dL/ds. Nothing else is
differentiated: no weight gradients.

An in-place operation downstream (``ReLU(inplace=True)`` right after a probed
layer) would overwrite ``a`` before its gradient is read; autograd's version
counter shows it, :attr:`SaliencyProbes.intact` turns false, and the callers
run the pass again with scales on every probe (``scales_only``), whose values
in-place operations cannot corrupt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .errors import ModelError


class BlockProbe(nn.Identity):
    """Marks the output of a block for ``fisher_potential``.

    Place one inside each block, on the output of the block's last convolution
    and before any residual addition, as BlockSwap does. It computes nothing and
    holds no parameters, so state dicts and parameter counts are unchanged.
    """


def channel_dim(module: nn.Module) -> int:
    """The axis that holds channels in ``module``'s output (last for Linear)."""
    return -1 if isinstance(module, nn.Linear) else 1


class SaliencyProbes:
    """Probes on the outputs of ``modules`` while the context is open; their saliencies after one backward pass.

    Every call of a probed module adds one entry to :attr:`targets`: its output
    (when the output already requires grad and not ``scales_only``), or a fresh
    ones tensor ``s`` of shape (N, C, 1, ...) that requires grad and that the
    output is multiplied by. Neither changes a value of the forward pass or a
    gradient of anything else, so the probes ride along any backward pass: ask
    for the gradients of :attr:`targets` beside whatever else is differentiated
    (the shared pass of several proxies asks beside the weights' in one
    ``autograd.grad``) and pass them to :meth:`saliencies`.
    """

    def __init__(self, modules: Iterable[nn.Module], scales_only: bool = False) -> None:
        self.modules = list(modules)
        self.scales_only = scales_only
        self.targets: list[torch.Tensor] = []
        self.owners: list[nn.Module] = []
        self._versions: list[int | None] = []  # a target that is the output itself: its version then; else None
        self._handles: list = []

    def _hook(self, module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(f"cannot probe {type(module).__name__}: its output ({shape}) is not a batch of "
                             "channels (N, C, ...)")
        self.owners.append(module)
        if output.requires_grad and not self.scales_only:
            self.targets.append(output)
            self._versions.append(output._version)
            return None
        dim = channel_dim(module) % output.dim()
        shape = [1] * output.dim()
        shape[0], shape[dim] = output.shape[0], output.shape[dim]
        scale = torch.ones(shape, dtype=output.dtype, device=output.device, requires_grad=True)
        self.targets.append(scale)
        self._versions.append(None)
        return output * scale

    def __enter__(self) -> SaliencyProbes:
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def intact(self) -> bool:
        """False if an in-place operation has overwritten a probed output that is its own target."""
        return all(v is None or t._version == v for t, v in zip(self.targets, self._versions))

    def saliencies(self, grads: Iterable[torch.Tensor | None]) -> list[tuple[nn.Module, torch.Tensor]]:
        """``(module, g)`` per probed call, ``g`` (N, C), from the gradients of :attr:`targets` (None: no path)."""
        if not self.intact:
            raise RuntimeError("internal: a probed output was modified in place; run again with scales_only=True")
        out = []
        for module, target, version, grad in zip(self.owners, self.targets, self._versions, grads):
            n = target.shape[0]
            if version is None:  # a scale: its gradient is the saliency
                g = torch.zeros_like(target) if grad is None else grad.detach()
                out.append((module, g.reshape(n, -1)))
                continue
            output = target.detach()
            dim = channel_dim(module) % output.dim()
            if grad is None:
                out.append((module, output.new_zeros(n, output.shape[dim])))
                continue
            positions = [d for d in range(1, output.dim()) if d != dim]
            product = grad.detach() * output
            out.append((module, product.sum(dim=positions) if positions else product))
        return out


def channel_saliencies(
    model: nn.Module,
    modules: Iterable[nn.Module],
    forward_loss: Callable[[], torch.Tensor],
) -> list[tuple[nn.Module, torch.Tensor]]:
    """Run ``forward_loss`` and return ``(module, g)`` for every call of a probed module.

    ``forward_loss`` runs ``model`` on a minibatch and returns the scalar loss
    (:meth:`~zc_proxies.proxies.base.ScoringContext.forward_loss`), whatever the
    model's calling convention. ``g`` has shape ``(N, C)``. A module called twice
    in one forward pass gives two entries. Probes whose output does not reach the
    loss give zeros. It runs once, or twice if an in-place operation overwrote a
    probed output (see the module docstring).
    """
    modules = list(modules)
    for scales_only in (False, True):
        with SaliencyProbes(modules, scales_only) as probes:
            loss = forward_loss()
        if not probes.targets:
            return []
        if not probes.intact:
            continue
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, probes.targets, allow_unused=True)
        else:  # no probe reaches the loss
            grads = (None,) * len(probes.targets)
        return probes.saliencies(grads)
    raise RuntimeError("internal: probes with scales only cannot be overwritten in place")
