"""``gradsign``: how much the per-sample gradients agree in sign (Zhang & Jia, ICLR 2022).

"GradSign: Model Performance Inference with Theoretical Insights". Followed: the
official repository cmu-catalyst/GradSign at commit
26412be8000a19c1a1147b2bb9399a7d1003eaf1, ``zero-cost-nas-code/foresight/pruners/measures/grad_conflict.py``
(the measure behind the paper's Spearman numbers on NAS-Bench-201, run by
``zero-cost-nas-code/nasbench2_pred.py``; ``naswot-code/gradsign.py`` has the same loop).

With g_i = d loss_i / dW the gradient of sample i's own cross-entropy,

    gradsign = sum over the entries w of every Conv2d/Linear weight of | sum over samples i of sign(g_i[w]) |

Protocol, as the official code does it:

* per-sample gradients: every sample is run through the network *alone*
  (``net(inputs[[i]])``, a batch of one) and its loss back-propagated, so a
  train-mode BatchNorm normalises over that one sample's spatial positions;
  sign(0) = 0 (an unused weight adds nothing);
* BatchNorm in train mode (the measure is registered with ``bn=True`` on a freshly
  built, hence train-mode, network), weights as initialised;
* only the weights of nn.Conv2d and nn.Linear (no biases, no BatchNorm
  parameters), as ``get_flattened_metric`` collects them;
* the absolute column sums are added up (``np.nansum``, the "sum" results the
  paper's NB201 table comes from; the NASWOT-codebase copy averages instead,
  which ranks identically);
* one minibatch of 128 images (``--batch_size 128``, one batch of random
  training images): the benchmark runs this proxy at batch size 128.

A NaN or infinite gradient makes the score NaN (an error from :func:`~zc_proxies.score`)
rather than being skipped by ``nansum``. The per-sample passes are shared with
``ntk_trace`` when both are scored together (see ``_shared.sample_pass``).
"""

from __future__ import annotations

from . import _shared
from .base import ScoringContext, register_proxy

BATCH_SIZE = 128
"""The minibatch size of the official NB201 runs."""

_shared.declare("gradsign", "sample_grad_signs")


@register_proxy("gradsign", needs_labels=True, needs_grad=True, bn_mode="train", version="1",
                network="live")
def gradsign(ctx: ScoringContext) -> float:
    """Sum over Conv2d/Linear weights of |sum over samples of sign(per-sample loss gradient)|."""
    _shared.require_weight_layers(ctx.model, "gradsign")
    shared = _shared.sample_pass(ctx, "sample_grad_signs")
    if not shared.signs_finite:
        return float("nan")
    return _shared.layer_sum(s.abs() for s in shared.grad_signs)
