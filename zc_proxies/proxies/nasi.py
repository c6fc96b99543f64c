"""``ntk_trace`` and ``nasi``: the NTK trace norm at initialisation (Shu et al., ICLR 2022).

"NASI: Label- and Data-agnostic Neural Architecture Search at Initialization"
(arXiv 2109.00817). NASI characterises an architecture by the trace norm of its
neural tangent kernel at initialisation, ||Theta_0||_tr = sum_i ||d f(x_i)/d theta||^2,
and searches for the architecture that maximises it. Source followed: the
paper (Sec. 3); the official code (github.com/shuyao95/NASI) was not available
to this implementation, so the choices below that the paper leaves open are ours
and are marked as such.

``ntk_trace`` (the exact quantity, on one minibatch of N samples):

    J_i      = d f_{y_i}(x_i) / d theta   (theta: every parameter of the network; f_{y_i} the logit of
                                           sample i's target class)
    ntk_trace = sqrt( trace(J J^T) / N ) = sqrt( (1/N) sum_i ||J_i||^2 )

  - per-sample gradients are exact (one backward per sample) and taken with each
    sample run through the network *alone* (a batch of one, train-mode BatchNorm
    normalising over that sample's spatial positions) -- the convention of
    GradSign's official code, with which this pass is shared
    (``_shared.sample_pass``). Ours: the alternative, each sample's logit
    back-propagated through the whole batch's train-mode computation, costs N
    backward passes of the whole batch (measured: about 100 s for a large NB201
    network at N = 64 on a loaded 2-core CPU, against a few seconds for this);
  - the target logit only, not all C outputs (the trace over the target
    entries of the NTK, as the proxy is specified here);
  - weights as initialised; batch size 64 (ours: the paper's batch size for
    NB201 could not be checked against its code).

``nasi`` (NASI's own, efficient score): the paper approximates the trace norm
through the gradient of the minibatch training loss, which needs a single
backward pass instead of N,

    nasi = || d L / d theta ||_2,   L = the batch's loss (mean cross-entropy over the minibatch),

with theta every parameter, BatchNorm in train mode over the whole batch (as in
a training step), one forward and one backward pass shared
with grad_norm, snip, plain, grasp, jacob_cov, epe_nas and naswot
(``_shared.train_pass``'s ``param_grads``). It differs from ``ntk_trace`` in
three ways: it differentiates the loss rather than the target logit, takes the
norm of the batch-mean gradient rather than the root mean of per-sample squared
norms (by Jensen's inequality a lower estimate of it, up to the loss's factor
dL/df), and runs BatchNorm over the whole batch. NASI's search objective adds a
penalty, M - mu * max(0, M - nu), that caps the trace at a hyper-parameter nu
(too large a trace makes gradient descent at the chosen learning rate diverge);
nu and mu are search settings whose values we could not take from the official
code, and as a ranking proxy with no cap (nu = infinity) the penalty vanishes, so
``nasi`` is M itself. Batch size 64 (ours, as for ``ntk_trace``).
"""

from __future__ import annotations

import math

import torch

from ..errors import ModelError
from . import _shared
from .base import ScoringContext, register_proxy

BATCH_SIZE = 64
"""The batch size both proxies are run at (our choice; see the module docstring)."""

_shared.declare("nasi", "param_grads")
_shared.declare("ntk_trace", "sample_logit_norms")


def _require_parameters(ctx: ScoringContext) -> None:
    if not _shared.all_parameters(ctx.model):
        raise ModelError(f"{ctx.proxy} differentiates with respect to the model's parameters, but "
                         f"{type(ctx.model).__name__} has none")


@register_proxy("ntk_trace", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="reaching")
def ntk_trace(ctx: ScoringContext) -> float:
    """sqrt(trace(J J^T)/N), J the per-sample gradients of each sample's target logit (all parameters)."""
    _require_parameters(ctx)
    norms = _shared.sample_pass(ctx, "sample_logit_norms").logit_norms
    return math.sqrt(float(norms.mean()))


@register_proxy("nasi", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="reaching")
def nasi(ctx: ScoringContext) -> float:
    """NASI's trace-norm approximation: the L2 norm of the minibatch loss gradient over all parameters."""
    _require_parameters(ctx)
    grads = _shared.train_pass(ctx, "param_grads").param_grads
    total = torch.zeros((), dtype=torch.float64)
    for g in grads:
        total = total + g.double().pow(2).sum().cpu()
    return math.sqrt(float(total))
