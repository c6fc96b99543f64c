"""``epe_nas``: per-class correlation of input jacobians (EPE-NAS, Lopes et al. 2021).

As NAS-Bench-Suite-Zero computes it (from the authors' code):

1. J = d(sum of all outputs)/d(inputs), one row per sample (the same jacobian as
   jacob_cov, train-mode BatchNorm);
2. for every class c present in the batch, Sigma_c = the correlation matrix of the
   rows of J whose label is c, and s_c = sum over all its entries of
   log(|Sigma_c| + 1e-5);
3. with K the number of network outputs:

   * K <= 100:  epe_nas = sum_c |s_c|
   * K > 100:   s_c is divided by the number of samples of class c (classes with a
     single sample are left out, as in the original, where they raise), and
     epe_nas = sum over pairs (c, c') of |s_c - s_c'|, divided by the number of classes used.

Higher is better. A class with a single sample contributes log(1 + 1e-5) in the
first form. Needs labels; shares the forward pass of ``_shared``.
"""

from __future__ import annotations

import torch

from ..errors import BatchError
from . import _shared
from .base import ScoringContext, register_proxy

EPS = 1e-5

_shared.declare("epe_nas", "input_jacobian")


def epe_score(jacobian: torch.Tensor, labels: torch.Tensor, num_outputs: int) -> float:
    """The EPE-NAS score of per-sample jacobian rows grouped by ``labels``."""
    per_class: list[torch.Tensor] = []
    for c in torch.unique(labels, sorted=True):
        rows = jacobian[labels == c]
        corr = _shared.corrcoef(rows)
        s = torch.log(corr.abs() + EPS).sum()
        if num_outputs > 100:
            if rows.shape[0] < 2:
                continue
            s = s / rows.shape[0]
        per_class.append(s)
    if not per_class:
        return float("nan")
    s = torch.stack(per_class)
    if num_outputs <= 100:
        return float(s.abs().sum())
    return float((s[:, None] - s[None, :]).abs().sum() / len(per_class))


@register_proxy("epe_nas", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def epe_nas(ctx: ScoringContext) -> float:
    """Sum over classes of |sum log(|corr| + 1e-5)| of the input jacobians (EPE-NAS)."""
    labels = ctx.targets
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise BatchError("epe_nas groups the samples by class: targets must be a 1-D tensor of class indices")
    shared = _shared.train_pass(ctx, "input_jacobian")
    return epe_score(shared.input_jacobian, labels, shared.num_outputs)
