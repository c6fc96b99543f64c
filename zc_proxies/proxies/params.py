"""``params``: the number of parameters, in millions (no data needed).

Every parameter tensor of the model counts once (shared tensors once), BatchNorm
affine parameters and biases included, trainable or not. The unit is millions,
as in NAS-Bench-Suite-Zero's files and NAS-Bench-201's "params (MB)".
"""

from __future__ import annotations

from .base import ScoringContext, register_proxy


@register_proxy("params", needs_labels=False, needs_grad=False, bn_mode="eval", version="1")
def params(ctx: ScoringContext) -> float:
    """Number of parameters, in millions."""
    return sum(p.numel() for p in ctx.model.parameters()) / 1e6
