"""``l2_norm``: the sum over layers of the L2 norm of each layer's weight (no data needed).

As in NAS-Bench-Suite-Zero: sum over Conv2d/Linear layers of ||W_l||_2 (Frobenius
norm of the whole weight tensor; biases and BatchNorm parameters not counted). At
initialisation it mostly measures how many (and how wide) layers there are.
"""

from __future__ import annotations

from . import _shared
from .base import ScoringContext, register_proxy


@register_proxy("l2_norm", needs_labels=False, needs_grad=False, bn_mode="eval", version="1")
def l2_norm(ctx: ScoringContext) -> float:
    """Sum over Conv2d/Linear layers of the L2 norm of the weight."""
    layers = _shared.require_weight_layers(ctx.model, "l2_norm")
    return _shared.layer_sum(m.weight.detach().double().norm() for m in layers)
