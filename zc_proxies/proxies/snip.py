"""``snip``: connection sensitivity summed over all weights.

Lee et al. (2019), SNIP; as a zero-cost proxy in Abdelfattah et al. (2021) and
NAS-Bench-Suite-Zero: the saliency of a weight is |dL/dm * 1| for a multiplicative
mask m = 1 on it, which equals |W * dL/dW|, so

    snip = sum over Conv2d/Linear weights w of | w * dL/dw |

(cross-entropy on one minibatch, BatchNorm in train mode, per weight, absolute value
taken before summing). Shares the loss gradients of ``_shared``.
"""

from __future__ import annotations

from . import _shared
from .base import ScoringContext, register_proxy

_shared.declare("snip", "weight_grads")


@register_proxy("snip", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def snip(ctx: ScoringContext) -> float:
    """Sum over Conv2d/Linear weights of |w * dL/dw| (SNIP saliency)."""
    layers = _shared.require_weight_layers(ctx.model, "snip")
    grads = _shared.train_pass(ctx, "weight_grads").weight_grads
    return _shared.layer_sum((m.weight.detach().double() * g.double()).abs() for m, g in zip(layers, grads))
