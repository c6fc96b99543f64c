"""``zico``: inverse coefficient of variation of the gradients across minibatches (Li et al., ICLR 2023).

"ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients".
Followed: the official repository SLDGroup/ZiCo at commit
b0fec65923a90e84501593f675b1e2f422d79e3d, ``ZeroShotProxy/compute_zico.py``
(``getgrad``, ``caculate_zico``, ``getzico``) and the way ``evolution_search.py``
feeds it.

With g_b = dL_b/dW the cross-entropy gradient of minibatch b (b = 1..B), for
every nn.Conv2d and nn.Linear layer l (``named_modules`` order, weights only:
no biases, no BatchNorm parameters):

    mean_l = mean over b of |g_b|,  std_l = std over b of g_b  (per weight entry; population std, ddof 0)
    S_l    = sum over the entries with std_l != 0 of mean_l / std_l

    zico   = sum over the layers with S_l != 0 of log(S_l)

Protocol choices, as in the official code:

* B = 2 minibatches (``evolution_search.py --maxbatch``, default 2), gradients
  reset between them (``network.zero_grad()``) and one forward/backward each;
  here the one given batch is split into its first and second half
  (``torch.tensor_split``: an odd batch gives halves differing by one sample);
* BatchNorm in train mode (``network.train()``): each half is normalised with its
  own statistics, exactly as two separate minibatches are;
* entries whose std is 0 (the two gradients equal, e.g. both 0) are left out of
  S_l, and a layer whose S_l is 0 adds nothing (``if tmpsum == 0: pass``); a
  network whose loss depends on no weight scores 0, as there;
* batch size: the official search scripts (``scripts/ZiCo_NAS_ImageNet_*.sh``)
  use ``--batch_size 128`` per minibatch, so the benchmark runs this proxy at
  batch size 256 (two halves of 128);
* the loss is the batch's loss (mean cross-entropy by default) of each half;
  the arithmetic is done in float64 (the official numpy code works on float32
  copies of the gradients).

ZiCo needs its own two passes (half-batch BatchNorm statistics), so it shares no
pass with the whole-batch proxies.
"""

from __future__ import annotations

import math

import torch

from ..batch import scalar_loss
from ..errors import BatchError
from . import _shared
from .base import ScoringContext, register_proxy

SPLITS = 2
"""Minibatches the official code uses (``--maxbatch``)."""
BATCH_SIZE = 256
"""Two minibatches of the official search scripts' 128."""


def layer_term(grads: torch.Tensor) -> float | None:
    """log(sum of mean|g| / std(g) over entries with std > 0) for one layer's (B, P) gradients; None when 0."""
    g = grads.double()
    std = g.std(dim=0, unbiased=False)
    mean_abs = g.abs().mean(dim=0)
    keep = std != 0
    total = float((mean_abs[keep] / std[keep]).sum())
    if total == 0:
        return None
    return math.log(total) if total > 0 else float("nan")


def half_batch_grads(ctx: ScoringContext, weights: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Per split of the batch, the loss gradient of every weight (zeros where a weight is unused)."""
    x, y = ctx.inputs, ctx.targets
    n = x.shape[0]
    if n < SPLITS:
        raise BatchError(f"zico splits the batch into {SPLITS} minibatches, so it needs at least {SPLITS} samples, "
                         f"got {n}")
    if not isinstance(y, torch.Tensor) or y.shape[:1] != (n,):
        raise BatchError(f"zico splits the targets with the inputs, so they must be a tensor with one row per "
                         f"sample ({n}), got {type(y).__name__}")
    for w in weights:
        w.requires_grad_(True)  # the working copy's flags are restored after the proxy
    out: list[list[torch.Tensor]] = []
    sizes = [len(part) for part in torch.tensor_split(torch.arange(n), SPLITS)]
    why = f"zico splits the batch of {n} into minibatches of {' and '.join(map(str, sizes))} samples"
    with _shared.single_value_guard(ctx.model, BatchError, why), torch.enable_grad():
        for xs, ys in zip(torch.tensor_split(x, SPLITS), torch.tensor_split(y, SPLITS)):
            loss = scalar_loss(ctx.loss_fn(ctx.model(xs), ys))
            grads = (torch.autograd.grad(loss, weights, allow_unused=True) if loss.requires_grad
                     else (None,) * len(weights))
            out.append([torch.zeros_like(w) if g is None else g.detach() for g, w in zip(grads, weights)])
    return out


@register_proxy("zico", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def zico(ctx: ScoringContext) -> float:
    """Sum over Conv2d/Linear layers of log(sum of mean|g|/std(g)) across two half-batches."""
    layers = _shared.require_weight_layers(ctx.model, "zico")
    per_split = half_batch_grads(ctx, [m.weight for m in layers])
    total = 0.0
    for j in range(len(layers)):
        term = layer_term(torch.stack([split[j].reshape(-1) for split in per_split]))
        if term is not None:
            total += term
    return total
