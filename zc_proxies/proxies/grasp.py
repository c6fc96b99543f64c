"""``grasp``: the Hessian-gradient product score of GraSP, summed over weights.

Wang et al. (2020), GraSP; as a zero-cost proxy in Abdelfattah et al. (2021) and
NAS-Bench-Suite-Zero:

    g = dL/dW (held constant),  Hg = d/dW (g . dL/dW),
    grasp = sum over Conv2d/Linear weights w of  -(w * (Hg)_w)

(cross-entropy on one minibatch, train-mode BatchNorm). The minus sign is
NAS-Bench-Suite-Zero's, chosen so that higher is better. Both backward passes
(the gradient with ``create_graph`` and the Hessian-vector product) run in the
shared pass, whose first-order gradients also serve grad_norm, snip and plain.
"""

from __future__ import annotations

from . import _shared
from .base import ScoringContext, register_proxy

_shared.declare("grasp", "weight_grads", "hessian_grad")


@register_proxy("grasp", needs_labels=True, needs_grad=True, bn_mode="train", version="1")
def grasp(ctx: ScoringContext) -> float:
    """Sum over Conv2d/Linear weights of -w * (H g) (GraSP, sign as in NAS-Bench-Suite-Zero)."""
    layers = _shared.require_weight_layers(ctx.model, "grasp")
    hg = _shared.train_pass(ctx, "weight_grads", "hessian_grad").hessian_grad
    return _shared.layer_sum(-(m.weight.detach().double() * h.double()) for m, h in zip(layers, hg))
