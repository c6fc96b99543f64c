"""``te_nas``: TE-NAS's NTK condition number and number of linear regions, combined by the sum of ranks.

Chen, Gong & Wang (ICLR 2021), "Neural Architecture Search on ImageNet in Four
GPU Hours: A Theoretically Inspired Perspective".

Followed
--------
* The official repository VITA-Group/TENAS at commit
  9df78ffd98573035375b12e19b9007578cc4155d: ``lib/procedures/ntk.py``
  (``get_ntk_n``: how the NTK and its condition number are formed),
  ``lib/procedures/linear_region_counter.py`` (``LinearRegionCount`` /
  ``Linear_Region_Collector``: which activations, how regions are counted),
  ``prune_tenas.py`` and ``prune_launch.py`` (settings).
* TENAS itself never scores a single architecture: it prunes a supernet, ranking
  the *relative change* of both measures when one operator is removed, measured on
  two reduced supernets (C = 3, one cell per stage, for the NTK; C = 1, a single
  cell without stem on 3x3 one-channel crops, for the regions). The
  per-architecture form used here is the one of AZ-NAS's port
  (cvlab-yonsei/AZ-NAS at commit 5e6683a2cfa5c6d0dc34a1317a842497ba7eae47,
  ``NB201/ZeroShotProxy/compute_te_nas_score.py`` with ``NB201/tss_general.ipynb``,
  the code behind AZ-NAS's per-architecture TE-NAS comparison on NAS-Bench-201,
  itself ported from TENAS through ZenNAS): both measures on the architecture's
  own network, as it was initialised, once.

Components
----------
``ntk_cond`` (lower is better), as ``get_ntk_n(..., train_mode=True, num_batch=1)``:
  one forward pass of the minibatch's images with BatchNorm in train mode (the
  samples interact through the batch statistics, as in the official code); for
  each sample i, g_i = the gradient of the sum of its logits with respect to
  every parameter whose qualified name contains ``"weight"`` (convolution, linear
  and BatchNorm scale weights; not biases), concatenated; NTK = G G^T (N x N);
  ntk_cond = lambda_max / lambda_min of its eigenvalues. As the official
  ``np.nan_to_num(..., nan=100000.0)``, a NaN ratio (an all-zero NTK, 0/0) is
  stored as 1e5. A singular NTK has an infinite condition number: singular here
  means lambda_min <= lambda_max * N * eps(float64), numpy's ``matrix_rank``
  tolerance (e.g. a network whose output does not depend on its input: all rows
  of G equal). The official code would divide by a rounding-noise eigenvalue
  (possibly negative, which would rank such a network best) or map an exact +inf
  to the largest float; here it is stored as :data:`INF_COND` (1e30), above every
  condition number the tolerance lets through (below 1 / (N eps) < 5e15), so it
  ranks where the official +inf ranks (last).
``linear_regions`` (higher is better), as ``Linear_Region_Collector`` with
  ``sample_batch=1`` in the per-architecture port: a forward pass without
  gradients (BatchNorm in train mode) of N Gaussian inputs, N(0, 1), of the
  minibatch's shape (the port's ``torch.randn(input_size)``; drawn from a
  generator seeded with the scoring seed); the outputs of every ``nn.ReLU``
  module whose input is 4-D, as 0/1 codes (``sign`` of the output), concatenated
  per sample; the count is the number of distinct codes among the N samples
  (the official ``sum_i 1 / #{j: code_j = code_i}``, computed exactly as a count).

On full-size NAS-Bench-201 networks (0.18 to 0.61 million ReLU units per sample)
every sample has its own code, so ``linear_regions`` equals N for practically
every architecture and its ranks tie; the ranking then rests on ``ntk_cond``. That
is a property of the per-architecture port, kept here for faithfulness (TENAS's
own count, on a one-channel single-cell network fed 3x3 crops, does vary between
operators).

Protocol
--------
* Weights: the network as given (TENAS's ``init_model`` calls with
  ``'kaiming_normal_fanout'`` / ``'kaiming_normal_fanin'`` match none of its
  branches, so the official runs use PyTorch's default initialisation; the port
  does not re-initialise either). The benchmark builds NB201 networks with
  PyTorch's default initialisation, as TENAS's.
* Batch size 72: ``prune_launch.py`` runs TENAS on NAS-Bench-201 with
  ``--batch_size 72`` (the NTK batch; the argparse default of 16 is overridden);
  run the benchmark with ``--batch-size 72``. (AZ-NAS's per-architecture runs use
  their loader's 64.)
* No repeats: TENAS's ``--repeat 3`` averages the relative changes between two
  supernets over three batches; the per-architecture port, followed here, measures
  once. The NTK uses the minibatch's real images (TENAS and the port), the regions
  use Gaussian inputs (the port).

Aggregation (``rank_sum``, the notebook's ``te_nas`` branch)
------------------------------------------------------------
Over the n architectures reported: rank(-ntk_cond) + rank(linear_regions), with
``scipy.stats.rankdata`` average ranks (1 = worst); the largest sum is best.
(TENAS's pruning ranks use dense ranks of rounded relative changes; those belong
to its operator pruning, not to a population of architectures.)

Numerics: per-sample gradients in the network's dtype; the NTK and its
eigenvalues in float64 (the official code uses float32). A network whose outputs
or gradients are NaN or infinite raises
:class:`~zc_proxies.errors.NonFiniteScoreError`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError, NonFiniteScoreError
from ._shared import model_output, on_relu_maps
from .base import Component, ScoringContext, register_proxy

#: TENAS's NAS-Bench-201 NTK batch size (prune_launch.py).
BATCH_SIZE = 72

#: The official stand-in for a NaN condition number (np.nan_to_num(..., nan=100000.0)).
NAN_COND = 100000.0

#: Stored for an infinite condition number (a singular NTK); see the module docstring.
INF_COND = 1e30


def ntk_weights(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters TENAS differentiates: those whose qualified name contains ``"weight"``."""
    return [(name, p) for name, p in net.named_parameters() if "weight" in name]


def per_sample_gradients(net: nn.Module, x: torch.Tensor, proxy: str = "te_nas") -> torch.Tensor:
    """(N, P): row i is d(sum of sample i's outputs)/d(weights), from one train-mode forward pass of the batch."""
    weights = ntk_weights(net)
    if not weights:
        raise ModelError(f"{proxy} differentiates the parameters named '*weight*', but {type(net).__name__} has none")
    params = [p for _, p in weights]
    for p in params:
        p.requires_grad_(True)  # the working copy's flags are restored after the proxy
    with torch.enable_grad():
        out = model_output(net(x), proxy)
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteScoreError(f"{proxy}: the network's outputs contain NaN or infinite values")
        sums = out.reshape(out.shape[0], -1).sum(dim=1)
        rows = []
        for i in range(out.shape[0]):
            grads = torch.autograd.grad(sums[i], params, retain_graph=i + 1 < out.shape[0], allow_unused=True)
            # a weight the output does not reach has no gradient (None): its zeros change no NTK entry
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                   for g, p in zip(grads, params)]))
    return torch.stack(rows)


def ntk_condition_number(grads: torch.Tensor, proxy: str = "te_nas") -> float:
    """lambda_max / lambda_min of G G^T, with the official NaN -> 1e5 and a singular NTK -> INF_COND."""
    if not bool(torch.isfinite(grads).all()):
        raise NonFiniteScoreError(f"{proxy}: the per-sample gradients contain NaN or infinite values")
    g = grads.double()
    ntk = g @ g.T
    eig = torch.linalg.eigvalsh(ntk)  # ascending
    lo, hi = float(eig[0]), float(eig[-1])
    if hi == 0.0:  # an all-zero NTK: 0/0
        return NAN_COND
    if lo <= hi * ntk.shape[0] * torch.finfo(torch.float64).eps:  # singular at float64 precision
        return INF_COND
    return hi / lo


def relu_codes(net: nn.Module, x: torch.Tensor, proxy: str = "te_nas") -> torch.Tensor:
    """(N, units) 0/1 codes of the outputs of every nn.ReLU with a 4-D input, from a no-grad forward pass."""
    codes: list[torch.Tensor] = []

    on_relu_maps(net, x, lambda output: codes.append((output > 0).reshape(output.shape[0], -1)))
    if not codes:
        raise ModelError(f"{proxy} counts linear regions from the activation pattern of nn.ReLU modules on "
                         f"(N, C, H, W) maps, but {type(net).__name__} called none")
    return torch.cat(codes, dim=1)


def count_regions(codes: torch.Tensor) -> int:
    """The number of distinct rows of ``codes`` (TENAS's sum over samples of 1 / multiplicity)."""
    return int(torch.unique(codes, dim=0).shape[0])


@register_proxy("te_nas", needs_labels=False, needs_grad=True, bn_mode="train", version="1",
                components=(Component("ntk_cond", higher_is_better=False), "linear_regions"),
                aggregate="rank_sum")
def te_nas(ctx: ScoringContext) -> dict[str, float]:
    """TE-NAS: NTK condition number (lower better) and linear regions (higher better); sum of ranks."""
    x = ctx.inputs
    cond = ntk_condition_number(per_sample_gradients(ctx.model, x.detach()))
    gauss = torch.randn(x.shape, generator=ctx.generator(), device=x.device, dtype=x.dtype)
    regions = count_regions(relu_codes(ctx.model, gauss))
    return {"ntk_cond": cond, "linear_regions": float(regions)}
