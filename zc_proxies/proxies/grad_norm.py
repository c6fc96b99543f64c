"""``grad_norm``: the sum over layers of the norm of the loss gradient of each layer's weight.

Abdelfattah et al. (2021), as in NAS-Bench-Suite-Zero (Krishnakumar et al. 2022):

    grad_norm = sum over Conv2d/Linear layers l of || dL/dW_l ||_2

with L the cross-entropy of one minibatch, BatchNorm in train mode, and the
Frobenius norm of each whole weight tensor (biases and BatchNorm parameters are
not counted). The gradients come from the shared pass (see ``_shared``), so
grad_norm, snip, plain and grasp scored together cost one forward/backward.
"""

from __future__ import annotations

from . import _shared
from .base import ScoringContext, register_proxy

_shared.declare("grad_norm", "weight_grads")


@register_proxy("grad_norm", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def grad_norm(ctx: ScoringContext) -> float:
    """Sum over Conv2d/Linear layers of the L2 norm of the weight's loss gradient."""
    _shared.require_weight_layers(ctx.model, "grad_norm")
    grads = _shared.train_pass(ctx, "weight_grads").weight_grads
    return _shared.layer_sum(g.double().norm() for g in grads)
