"""``jacob_cov``: how decorrelated the input jacobians of a minibatch are.

Mellor et al. (2021, first version of "Neural Architecture Search without
Training"), in the form NAS-Bench-Suite-Zero computes as ``jacov``:

1. J = d(sum of all outputs)/d(inputs), one row of C*H*W values per sample
   (train-mode BatchNorm, one forward and one backward pass);
2. Sigma = the N x N correlation matrix of the rows of J;
3. with its eigenvalues v and k = 1e-5:

       jacob_cov = - sum_i [ log(v_i + k) + 1 / (v_i + k) ]

Higher is better. A network whose output does not depend on its input (a cell of
only ``none`` edges) has a zero jacobian and an undefined correlation: that is a
NonFiniteScoreError here, where NAS-Bench-Suite-Zero stores the sentinel -1e8.
Shares the forward pass of ``_shared`` with epe_nas, naswot and the gradient proxies.
"""

from __future__ import annotations

import torch

from . import _shared
from .base import ScoringContext, register_proxy

EPS = 1e-5

_shared.declare("jacob_cov", "input_jacobian")


def jacobian_score(jacobian: torch.Tensor) -> float:
    """-sum(log(v + k) + 1/(v + k)) over the eigenvalues v of the rows' correlation matrix."""
    corr = _shared.corrcoef(jacobian)
    if not torch.isfinite(corr).all():
        return float("nan")
    v = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(v + EPS) + 1.0 / (v + EPS)).sum())


@register_proxy("jacob_cov", needs_labels=False, needs_grad=True, bn_mode="train", version="1",
                network="live")
def jacob_cov(ctx: ScoringContext) -> float:
    """Eigenvalue score of the correlation of per-sample input jacobians (NAS-Bench-Suite-Zero jacov)."""
    return jacobian_score(_shared.train_pass(ctx, "input_jacobian").input_jacobian)
