"""``vkdnw`` and ``vkdnw_agg``: Variance of Knowledge of Deep Network Weights (Tybl & Neumann, CVPR 2025).

VKDNW scores a network by how evenly the spectrum of its Fisher information
matrix (FIM) is spread at initialisation: the entropy of the normalised deciles
of the FIM's eigenvalues.

Source followed
---------------
The official repository https://github.com/ondratybl/VKDNW:

* the score: ``NB201/ZeroShotProxy/compute_vkdnw_score.py`` at commit
  ``6901b65fc68c89c163e8e5d9ba0410926f36870e`` (HEAD, 2025-06-10; the file last
  changed in ``2b6743335853bc24a366c0623b4ca22a6d89f106``, which only removed
  statistics the paper does not use);
* the protocol (``NB201/tss_general_.py``: batch size, random inputs, 128 layers)
  and the rankings (``NB201/tss_utils.py``, ``get_scores``; and
  ``NB201/paper_preparation.ipynb``, section "Ablation: add components", which
  its first cell names as the source of the published VKDNW_single and
  VKDNW_agg numbers) at commit ``beb332b4ef2da64bbb29be42f37071722b6472bf``, the
  last one before those files were removed from the tree.

This is our own code written from those files; none of it is copied.

The FIM and the score (``vkdnw``)
---------------------------------
On a private copy of the network:

1. re-initialise it as the official ``init_model(..., 'kaiming_norm_fanin')``
   (the package's :func:`~zc_proxies.proxies.az_nas.kaiming_fanin_reinit`, the
   same initialisation): Conv2d and Linear weights ~ N(0, 2 / fan_in), their
   biases 0; BatchNorm2d and GroupNorm affine weights 1, biases 0; and BatchNorm
   running statistics reset (mean 0, variance 1), as on the freshly built
   networks the official runs score;
2. draw Gaussian inputs x ~ N(0, 1) of the minibatch's shape (the official
   NB201 runs pass no data to VKDNW, ``trainloader=None``; the batch's pixels and
   labels are not used, only its shape);
3. put the copy in eval mode (the official ``get_fisher`` calls ``model.eval()``;
   with the reset running statistics every BatchNorm is the identity up to
   ``1 / sqrt(1 + eps)`` times its affine map, and samples do not interact);
4. theta = the first element (flat index 0) of each of the first ``K = 128``
   parameter tensors in ``named_parameters()`` order (``params_grad_len=128``;
   one weight per tensor, its first: the code of the published runs took flat
   index 0, as HEAD's ``p=1`` does; a network with fewer tensors uses all of
   them); ``P = min(128, number of tensors)`` scalars;
5. per sample n, the exact Jacobian J_n = d z_n / d theta (C x P) of the logits
   z_n of that sample alone. In eval mode the samples do not interact, so one
   forward pass of the batch and one backward pass per class, with respect to
   activations only, give every sample's gradient at each layer's output, and
   the derivative with respect to an element of the layer's weight follows in
   closed form from it and the layer's input
   (:mod:`~zc_proxies.proxies.element_jacobian`, checked on the way; about 3x
   faster than the per-sample route on NAS-Bench-201). Where those closed forms
   do not apply (a layer without one, samples that interact, a weight used
   outside its layer), the per-sample route: ``torch.func``'s ``vmap`` over
   samples of ``jacrev`` of a ``functional_call`` of the network on that one
   sample, with theta entering as a perturbation of those elements. The last
   class's row of J_n is not computed (column C - 1 of L_n below is zero);
6. p_n = (1 - alpha) softmax(z_n) + alpha / C with alpha = 0.05 (the official
   smoothing, so that every class has probability > 0), and L_n the lower
   triangular factor of the multinomial covariance
   Sigma_n = diag(p_n) - p_n p_n^T = L_n L_n^T (the closed form of Tanabe &
   Sagae, 1992; its last column is 0):

       d_k = sqrt(p_k q_k / q_{k-1}),   q_k = sum_{j > k} p_j,   q_{-1} = sum_j p_j,
       L[k, k] = d_k,   L[i, k] = -p_i d_k / q_k  (i > k, k < C - 1),   L[., C - 1] = 0;

7. the P x P matrix the official code decomposes (``get_fisher`` with
   ``use_logits=False``), in float64:

       F = 1/N sum_n (L_n J_n)^T (L_n J_n);

   note that this is J^T L^T L J, whereas the FIM of the softmax likelihood is
   J^T Sigma J = J^T L L^T J; we follow the code, which produced the published
   numbers;
8. lambda = the eigenvalues of F (absolute values, i.e. its singular values, as
   the official ``torch.svd(F).S``); their deciles
   q_i = quantile(lambda, i / 10), i = 1..9 (linear interpolation, as
   ``torch.quantile``); t_i = q_i / (sum_j |q_j| + 1e-10) and

       VKDNW = - sum_i t_i log(t_i + 1e-10);

9. aleph = the number of parameter tensors of the network
   (``len(list(model.named_parameters()))``, the official ``vkdnw_dim``, "number
   of trainable layers").

The paper's single-network ranking, VKDNW_single, is the dense rank of the pair
(aleph, VKDNW) in lexicographic order (``get_scores``: the tuple ranked with
``method='dense'``). As one float per network that order is

    vkdnw = aleph + VKDNW / ln(10)

(VKDNW <= ln 9 < ln 10, so the integer part is aleph and the fraction orders
networks with equal aleph by VKDNW): ranking networks by ``vkdnw`` is ranking
them by VKDNW_single. Higher is better.

The aggregated form (``vkdnw_agg``)
-----------------------------------
VKDNW_agg (``flops_expressivity_trainability_jacov_vkdnw`` in the notebook, and
``vkdnw_comb_rank`` in ``get_scores``) combines five rankings over the
population; it is a population proxy whose function returns six components per
network, all higher-is-better:

``dim``, ``entropy``
    aleph and VKDNW as above (the same draws as ``vkdnw``, so equal values).
``flops``
    MFLOPs of one sample's forward pass, by the package's
    :func:`~zc_proxies.proxies.flops.count_flops` (the NASLib counting rules,
    equal to NAS-Bench-201's published FLOPs, which the official code reads
    from the benchmark's API).
``expressivity``, ``trainability``
    AZ-NAS's (Lee & Ham, CVPR 2024), which the official pipeline computes with
    ``NB201/ZeroShotProxy/compute_az_nas_score.py`` on a network re-initialised
    the same way, in train mode, on Gaussian inputs. They are computed here by the
    package's :mod:`~zc_proxies.proxies.az_nas` (its block features, isotropy and
    block trainability; see that module for the formulas and the blocks it
    reads) on the same re-initialised copy in train mode with the same Gaussian
    inputs. The draws (weights, inputs, then the Rademacher signals, last block
    first) are those ``az_nas`` makes with the same seed, so these two values
    equal ``az_nas``'s components of the same name. Undefined values (-inf in
    the official code: a constant feature map, an identity block) are stored as
    :data:`~zc_proxies.proxies.az_nas.WORST`, which ranks last as -inf does.
``jacov``
    The package's ``jacob_cov`` computation (its shared pass and
    :func:`~zc_proxies.proxies.jacob_cov.jacobian_score`) on the same
    re-initialised copy in train mode, on the minibatch's real images (the
    official pipeline runs jacov on real data after the same Kaiming
    re-initialisation; so this value differs from the ``jacob_cov`` proxy, which
    scores the network as given). An undefined jacov (NaN: the outputs do not
    depend on the inputs) is stored as WORST; the aggregation then gives it the
    population's smallest defined jacov, as the official notebook fills a
    missing jacov with the minimum.

The aggregation ``vkdnw_log_rank_sum`` (registered here) is the official
combination: log of the dense rank of (dim, entropy) in lexicographic order plus
the sum over flops, expressivity, trainability and jacov of log(rank) (ranks 1
for the worst, ties sharing their mean rank, as pandas' ``rank()``), a WORST
jacov first replaced by the smallest other jacov of the population.

Protocol choices and differences
--------------------------------
* Batch size: the minibatch's (the published CIFAR runs used 64).
* Precision: the model's dtype for the forward and backward passes (float32 in
  the official runs), float64 from the Jacobians on (F, its eigenvalues, the
  AZ-NAS covariances and singular values).
* alpha is 0.05 exactly (the official code computes 1 - alpha and alpha / C in
  float16, so its smoothed probabilities sum to about 1 + 2e-4).
* ``vkdnw_agg`` needs the blocks ``az_nas`` reads (modules holding a
  :class:`~zc_proxies.BlockProbe`, as the NAS-Bench-201 cells do); ``vkdnw``
  needs only a model that returns logits (N, C), C >= 2, and that
  ``torch.func`` can trace one sample at a time.
* A network whose FIM is zero has VKDNW = 0 (all deciles 0), as in the official
  code.
* Random draws come from the scoring generator, in this order: the weights (in
  ``model.modules()`` order, by ``az_nas``'s Kaiming re-initialisation), the
  inputs, then (``vkdnw_agg`` only) the Rademacher signals.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import BatchError, ModelError, NonFiniteScoreError
from . import _shared
from .az_nas import WORST, block_features, block_trainability, isotropy, kaiming_fanin_reinit
from .base import ScoringContext, register_proxy
from .element_jacobian import element_jacobians
from .flops import count_flops
from .jacob_cov import jacobian_score
from .population import ranks, register_aggregation

MAX_TENSORS = 128
"""Parameter tensors whose first element enters the FIM (official ``params_grad_len``)."""
SMOOTHING = 0.05
"""alpha: the weight of the uniform distribution mixed into the softmax probabilities."""
DECILES = tuple(i / 10 for i in range(1, 10))
ENTROPY_EPS = 1e-10
SINGLE_SCALE = math.log(10.0)
"""vkdnw = aleph + VKDNW / SINGLE_SCALE; VKDNW <= ln 9 < SINGLE_SCALE keeps the order lexicographic."""
CHUNK = 16
"""Samples per vmap chunk: bounds the memory of the per-sample Jacobians."""


# -- the re-initialised copy and its inputs --------------------------------------------------------------------


def kaiming_reinit(net: nn.Module, gen: torch.Generator) -> None:
    """The official 'kaiming_norm_fanin' initialisation (``az_nas``'s) in place, and fresh BatchNorm statistics."""
    kaiming_fanin_reinit(net, gen)
    for m in net.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            m.reset_running_stats()


def _gaussian_inputs(ctx: ScoringContext, gen: torch.Generator) -> torch.Tensor:
    inputs = ctx.inputs
    if not inputs.is_floating_point():
        raise BatchError(f"{ctx.proxy} draws Gaussian inputs of the batch's shape and dtype, but the inputs are "
                         f"{inputs.dtype}; it needs floating-point inputs (N, ...)")
    return torch.randn(inputs.shape, generator=gen, device=inputs.device, dtype=inputs.dtype)


def _fresh_copy(ctx: ScoringContext) -> tuple[nn.Module, torch.Tensor, torch.Generator]:
    """A Kaiming re-initialised private copy, Gaussian inputs of the batch's shape, and the generator."""
    net = copy.deepcopy(ctx.model)
    gen = ctx.generator()
    kaiming_reinit(net, gen)
    return net, _gaussian_inputs(ctx, gen), gen


# -- the FIM and VKDNW -----------------------------------------------------------------------------------------


def logit_jacobians(net: nn.Module, x: torch.Tensor, names: list[str],
                    proxy: str = "vkdnw") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Jacobians (N, C, P) of the logits w.r.t. element 0 of parameters ``names``, and the logits (N, C).

    Exact, by ``vmap`` over samples of ``jacrev``: each sample runs alone
    through a ``functional_call`` of ``net`` whose parameters ``names`` have
    their first element shifted by delta (P scalars); the Jacobian is taken at
    delta = 0.
    """
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}
    hot = {}
    for k in names:
        h = torch.zeros(params[k].shape, dtype=params[k].dtype, device=params[k].device)  # logical order
        h.view(-1)[0] = 1.0
        hot[k] = h

    def logits(delta: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shifted = dict(params)
        for i, k in enumerate(names):
            shifted[k] = params[k] + delta[i] * hot[k]
        out = functional_call(net, (shifted, buffers), (sample.unsqueeze(0),))
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"{proxy} needs the model to return logits (N, C); for one sample it returned {got}")
        out = out.squeeze(0)
        return out, out

    delta = torch.zeros(len(names), dtype=x.dtype, device=x.device)
    try:
        with torch.enable_grad():
            jac, out = vmap(jacrev(logits, has_aux=True), in_dims=(None, 0), chunk_size=CHUNK)(delta, x)
    except ModelError:
        raise
    except RuntimeError as exc:  # what torch.func cannot trace is in the caller's model
        raise ModelError(f"{proxy} computes per-sample gradients with torch.func (vmap, jacrev, functional_call), "
                         f"which failed on this model: {exc}") from exc
    return jac.detach(), out.detach()


def smoothed_probabilities(logits: torch.Tensor, alpha: float = SMOOTHING) -> torch.Tensor:
    """(1 - alpha) softmax(logits) + alpha / C, in float64."""
    c = logits.shape[-1]
    return (1.0 - alpha) * torch.softmax(logits.double(), dim=-1) + alpha / c


def multinomial_cholesky(p: torch.Tensor) -> torch.Tensor:
    """Lower-triangular L (..., C, C) with L L^T = diag(p) - p p^T (Tanabe & Sagae's closed form; last column 0)."""
    p = p.double()
    c = p.shape[-1]
    tail = p.flip(-1).cumsum(-1).flip(-1)  # tail[k] = sum_{j >= k} p_j
    q = torch.cat([tail[..., 1:], torch.zeros_like(p[..., :1])], dim=-1)  # q_k = sum_{j > k} p_j
    q_prev = tail  # q_{k-1} = sum_{j >= k} p_j
    d = torch.sqrt(p * q / q_prev)
    safe_q = torch.where(q > 0, q, torch.ones_like(q))
    below = -p.unsqueeze(-1) * (d / safe_q).unsqueeze(-2)  # [i, k] = -p_i d_k / q_k
    strictly_lower = torch.tril(torch.ones(c, c, dtype=torch.bool, device=p.device), diagonal=-1)
    lower = torch.where(strictly_lower, below, torch.zeros_like(below))
    return lower + torch.diag_embed(d)


def fisher_matrix(jac: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """F = 1/N sum_n (L_n J_n)^T (L_n J_n), in float64 (the official ``get_fisher``)."""
    a = multinomial_cholesky(smoothed_probabilities(logits)) @ jac.double()
    return torch.einsum("ncp,ncq->pq", a, a) / jac.shape[0]


def decile_entropy(eigenvalues: torch.Tensor) -> float:
    """-sum t log(t + 1e-10), t = deciles / (sum |deciles| + 1e-10)."""
    lam = eigenvalues.double()
    q = torch.quantile(lam, torch.tensor(DECILES, dtype=lam.dtype, device=lam.device))
    t = q / (q.abs().sum() + ENTROPY_EPS)
    return float(-(t * torch.log(t + ENTROPY_EPS)).sum())


def fim_terms(net: nn.Module, x: torch.Tensor, proxy: str = "vkdnw") -> tuple[int, float]:
    """(aleph, VKDNW) of ``net`` (already initialised, switched to eval mode here) on inputs ``x``."""
    names = [k for k, _ in net.named_parameters()]
    if not names:
        raise ModelError(f"{proxy} needs a model with parameters; {type(net).__name__} has none")
    net.eval()
    # L_n's last column is exactly zero, so the last class's row of J_n never enters F
    fast = element_jacobians(net, x, names[:MAX_TENSORS], skip_last=True)
    jac, logits = fast if fast is not None else logit_jacobians(net, x, names[:MAX_TENSORS], proxy)
    if logits.shape[-1] < 2:
        raise ModelError(f"{proxy} needs at least 2 outputs (the classes of a softmax); the model has "
                         f"{logits.shape[-1]}")
    fim = fisher_matrix(jac, logits)
    lam = torch.linalg.eigvalsh(fim).abs()  # = the singular values of the symmetric F
    return len(names), decile_entropy(lam)


#: Where ``vkdnw`` and ``vkdnw_agg`` scored in one call leave (aleph, VKDNW) for each other.
_FIM_KEY = "vkdnw_fim_terms"


def shared_fim_terms(ctx: ScoringContext, net: nn.Module, x: torch.Tensor) -> tuple[int, float]:
    """:func:`fim_terms` of the re-initialised copy ``net``, computed once per scoring call.

    Both proxies draw the same copy and inputs from the same seed, and the
    working copy's own BatchNorm mode does not enter (the copy is put in eval
    mode), so the second of them reads the first one's result from the call's
    cache. ``net`` is left in eval mode either way.
    """
    net.eval()
    if _FIM_KEY not in ctx.cache:
        ctx.cache[_FIM_KEY] = fim_terms(net, x, ctx.proxy)
    return ctx.cache[_FIM_KEY]


# bn_mode "train" though the FIM is taken in eval mode: the proxy scores a re-initialised copy that it puts in
# eval mode itself, so the working copy's mode changes nothing, and "train" shares vkdnw_agg's working copy
# and cache (one FIM for both when they are scored together)
@register_proxy("vkdnw", needs_labels=False, needs_grad=True, bn_mode="train", version="1")
def vkdnw(ctx: ScoringContext) -> float:
    """VKDNW_single: aleph (parameter tensors) + entropy of the FIM eigenvalue deciles / ln 10."""
    net, x, _gen = _fresh_copy(ctx)
    dim, entropy = shared_fim_terms(ctx, net, x)
    return dim + entropy / SINGLE_SCALE


# -- AZ-NAS's expressivity and trainability (the package's az_nas) ---------------------------------------------


def az_terms(net: nn.Module, x: torch.Tensor, gen: torch.Generator, proxy: str = "vkdnw_agg") -> tuple[float, float]:
    """AZ-NAS's expressivity and trainability of ``net`` (switched to train mode here) on ``x``, as ``az_nas``."""
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        feats = block_features(net, x.detach().clone().requires_grad_(True), proxy)
        if not all(bool(torch.isfinite(f).all()) for f in feats):
            raise NonFiniteScoreError(f"{proxy}: the network's block features contain NaN or infinite values")
        expressivity = float(sum(isotropy(f) for f in feats))
        terms = []
        for i in reversed(range(1, len(feats))):
            g_out = (torch.bernoulli(torch.full(feats[i].shape, 0.5, dtype=feats[i].dtype, device=feats[i].device),
                                     generator=gen) - 0.5) * 2
            terms.append(block_trainability(feats[i - 1], feats[i], g_out, proxy))
    trainability = sum(terms) / len(terms) if terms else math.nan
    if WORST >= trainability > -math.inf:
        raise NonFiniteScoreError(f"{proxy}: trainability {trainability:g} is at or below the stand-in for -inf "
                                  f"({WORST:g}): the network's block gradients explode")
    return _worst_if_undefined(expressivity), _worst_if_undefined(trainability)


def _worst_if_undefined(value: float) -> float:
    """NaN or -inf (the official code's undefined values, which rank last) as WORST."""
    return WORST if math.isnan(value) or value == -math.inf else value


# -- the aggregated form -----------------------------------------------------------------------------------------

AGG_COMPONENTS = ("dim", "entropy", "flops", "expressivity", "trainability", "jacov")


@register_aggregation("vkdnw_log_rank_sum")
def vkdnw_log_rank_sum(oriented: np.ndarray) -> np.ndarray:
    """VKDNW_agg: log dense rank of (dim, entropy) lexicographically + sum of log ranks of the other columns.

    ``oriented`` holds the components in :data:`AGG_COMPONENTS` order (all
    higher-is-better); ranks are 1 for the worst. A WORST jacov (undefined)
    takes the smallest defined jacov of the population first.
    """
    n = oriented.shape[0]
    if n == 0:
        return np.zeros(0)
    oriented = oriented.copy()
    jacov = oriented[:, 5]
    missing = jacov <= WORST
    if missing.any() and not missing.all():  # the notebook fills a missing jacov with the population's minimum
        jacov[missing] = jacov[~missing].min()
    _pairs, inverse = np.unique(oriented[:, :2], axis=0, return_inverse=True)  # rows sorted lexicographically
    dense = np.asarray(inverse).reshape(-1) + 1.0
    return np.log(dense) + np.log(ranks(oriented[:, 2:])).sum(axis=1)


@register_proxy("vkdnw_agg", needs_labels=False, needs_grad=True, bn_mode="train", version="1",
                components=AGG_COMPONENTS, aggregate="vkdnw_log_rank_sum")
def vkdnw_agg(ctx: ScoringContext) -> dict[str, float]:
    """VKDNW_agg's components: aleph, VKDNW, MFLOPs, AZ-NAS expressivity and trainability, jacov."""
    net, x, gen = _fresh_copy(ctx)
    dim, entropy = shared_fim_terms(ctx, net, x)  # eval mode, fresh running statistics
    mflops = count_flops(net, tuple(x.shape[1:]), device=x.device, dtype=x.dtype) / 1e6
    expr, train = az_terms(net, x, gen, ctx.proxy)  # train mode
    real = ScoringContext(model=net, batch=ctx.batch, seed=ctx.seed, cache={}, proxy=ctx.proxy)
    jacov = _worst_if_undefined(jacobian_score(_shared.train_pass(real, "input_jacobian").input_jacobian))
    return {"dim": float(dim), "entropy": entropy, "flops": mflops, "expressivity": expr,
            "trainability": train, "jacov": jacov}
