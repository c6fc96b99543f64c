"""``naswot``: log-determinant of the kernel of binary ReLU codes (NASWOT, final version).

Mellor et al. (2021), "Neural Architecture Search without Training" (ICML version;
NAS-Bench-Suite-Zero's ``nwot``):

1. run one minibatch forward (train-mode BatchNorm); at every call of an ReLU-like
   module (nn.ReLU, ReLU6, LeakyReLU, PReLU, RReLU), let c_i be the binary code
   (input > 0) of sample i over all positions of that activation;
2. K_H = sum over those calls of  c c^T + (1 - c)(1 - c)^T, the N x N matrix of
   the numbers of positions where two samples' codes agree (D minus their
   Hamming distance);
3. naswot = log |det K_H|  (slogdet, float64).

Higher is better. This is the v2 score, not the 2020 v1 score (the sum of the
log-eigenvalues of a different kernel). Shares the forward pass of ``_shared``.
"""

from __future__ import annotations

import torch

from . import _shared
from .base import ScoringContext, register_proxy

_shared.declare("naswot", "relu_kernel")


@register_proxy("naswot", needs_labels=False, needs_grad=False, bn_mode="train", version="1")
def naswot(ctx: ScoringContext) -> float:
    """log|det K_H| of the Hamming-agreement kernel of ReLU codes (NASWOT v2, nwot)."""
    kernel = _shared.train_pass(ctx, "relu_kernel").relu_kernel
    _sign, logabsdet = torch.linalg.slogdet(kernel)
    return float(logabsdet)
