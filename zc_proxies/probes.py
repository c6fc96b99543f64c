"""Channel saliencies: per sample and channel, the sum over positions of activation x gradient.

Both Fisher proxies (and any other proxy that wants the same quantity) rest on

    g[n, c] = sum_i a[n, c, i] * dL/da[n, c, i]

at some set of probe points. It equals dL/ds[n, c] for a per-sample, per-channel
scale ``s`` multiplied into the activation at value 1, so each probe point's
output is multiplied by such a tensor of ones and the gradients of the loss with
respect to those scales are asked for. Nothing else is differentiated: no weight
gradients, no stored activations, and in-place operations downstream of a probe
cannot corrupt it.
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
    """Per-sample, per-channel scales of value 1 on the outputs of ``modules``, while the context is open.

    Every call of a probed module multiplies its output by a fresh ones tensor
    ``s`` of shape (N, C, 1, ...) that requires grad; the gradient of a loss
    with respect to ``s`` is the saliency ``g``. Multiplying by one changes no
    value of the forward pass and no gradient of anything else, so the probes
    can ride along any backward pass (the shared pass of several proxies asks
    for these gradients beside the weights' in one ``autograd.grad``).
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.modules = list(modules)
        self.scales: list[torch.Tensor] = []
        self.owners: list[nn.Module] = []
        self._handles: list = []

    def _hook(self, module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(f"cannot probe {type(module).__name__}: its output ({shape}) is not a batch of "
                             "channels (N, C, ...)")
        dim = channel_dim(module) % output.dim()
        shape = [1] * output.dim()
        shape[0], shape[dim] = output.shape[0], output.shape[dim]
        scale = torch.ones(shape, dtype=output.dtype, device=output.device, requires_grad=True)
        self.scales.append(scale)
        self.owners.append(module)
        return output * scale

    def __enter__(self) -> SaliencyProbes:
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def saliencies(self, grads: Iterable[torch.Tensor | None]) -> list[tuple[nn.Module, torch.Tensor]]:
        """``(module, g)`` per probed call from the gradients of :attr:`scales` (None: did not reach the loss)."""
        out = []
        for module, scale, grad in zip(self.owners, self.scales, grads):
            g = torch.zeros_like(scale) if grad is None else grad.detach()
            out.append((module, g.reshape(scale.shape[0], -1)))
        return out


def channel_saliencies(
    model: nn.Module,
    modules: Iterable[nn.Module],
    forward_loss: Callable[[], torch.Tensor],
) -> list[tuple[nn.Module, torch.Tensor]]:
    """Run ``forward_loss`` once and return ``(module, g)`` for every call of a probed module.

    ``forward_loss`` runs ``model`` on a minibatch and returns the scalar loss
    (:meth:`~zc_proxies.proxies.base.ScoringContext.forward_loss`), whatever the
    model's calling convention. ``g`` has shape ``(N, C)``. A module called twice
    in one forward pass gives two entries. Probes whose output does not reach the
    loss give zeros.
    """
    with SaliencyProbes(modules) as probes:
        loss = forward_loss()
    if not probes.scales:
        return []
    if loss.requires_grad:
        grads = torch.autograd.grad(loss, probes.scales, allow_unused=True)
    else:  # no probe reaches the loss
        grads = (None,) * len(probes.scales)
    return probes.saliencies(grads)
