"""``plain``: the first-order Taylor term, sum of gradient times weight.

Abdelfattah et al. (2021), as in NAS-Bench-Suite-Zero:

    plain = sum over Conv2d/Linear weights w of  w * dL/dw

(signed; cross-entropy, train-mode BatchNorm). Between two independent runs of
NAS-Bench-Suite-Zero this proxy correlates only 0.18, so it mainly measures the
initialisation and batch; its published correlation with accuracy on
NAS-Bench-201 is negative. The sign convention is kept as published
(higher_is_better=True) so reports reproduce the published numbers.
"""

from __future__ import annotations

from . import _shared
from .base import ScoringContext, register_proxy

_shared.declare("plain", "weight_grads")


@register_proxy("plain", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def plain(ctx: ScoringContext) -> float:
    """Sum over Conv2d/Linear weights of w * dL/dw (signed)."""
    layers = _shared.require_weight_layers(ctx.model, "plain")
    grads = _shared.train_pass(ctx, "weight_grads").weight_grads
    return _shared.layer_sum(m.weight.detach().double() * g.double() for m, g in zip(layers, grads))
