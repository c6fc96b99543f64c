"""``az_nas``: AZ-NAS's four components, combined over a population by the sum of log-ranks.

Lee & Ham (CVPR 2024), "AZ-NAS: Assembling Zero-Cost Proxies for Network
Architecture Search". Followed: the official repository cvlab-yonsei/AZ-NAS at
commit 5e6683a2cfa5c6d0dc34a1317a842497ba7eae47, NAS-Bench-201 code:
``NB201/ZeroShotProxy/compute_az_nas_score.py`` (the components),
``NB201/custom/tss_model.py`` (``extract_cell_features``: which features) and
``NB201/tss_general.ipynb`` (protocol and aggregation).

Protocol (as the official NB201 run)
------------------------------------
* A private copy of the network is re-initialised (``init_model(...,
  'kaiming_norm_fanin')``): every ``nn.Conv2d`` / ``nn.Linear`` weight ~
  N(0, 2 / fan_in) (Kaiming normal, fan-in, ReLU gain), their biases 0; every
  affine ``nn.BatchNorm2d`` / ``nn.GroupNorm`` weight 1 and bias 0. The
  caller's weights are not used.
* BatchNorm in train mode (``model.train()``).
* Inputs are Gaussian, N(0, 1), of the minibatch's shape: ``az_nas`` is not in
  the notebook's ``real_input_metrics``, so the official run feeds
  ``torch.randn(batch_size, 3, 32, 32)``. The batch's pixels and labels are not
  used, only its shape, dtype and device.
* Batch size 64 (``configs/nas-benchmark/algos/weight-sharing.config``,
  ``batch_size`` 64): run the benchmark with ``--batch-size 64``.
* One forward pass, no repeats (the official code has none).

Random draws come from a generator seeded with the scoring seed, in this order:
the weights of the Conv2d/Linear modules in ``model.modules()`` order (by
``nn.init.kaiming_normal_``), then the inputs (``torch.randn``), then the
backward signals of the trainability term, pair by pair from the last pair to the
first (``torch.bernoulli`` of 0.5, mapped to +-1), as the official loop runs.

Features (which blocks)
-----------------------
The official code reads the stem output and the output of each of NB201's 17
cells (15 searched cells and the 2 residual reduction blocks, residual included),
18 feature maps f_0..f_17. Here a *block* is a module that holds a
:class:`~zc_proxies.BlockProbe` as a direct child, and the features are the input
of the first block called and the output of every block, in call order. On
NAS-Bench-201 (:mod:`zc_proxies.spaces.nb201.model`: a probe in each ``Cell`` and
``ReductionBlock``) this is exactly the official list: the stem output and the 17
``cells`` outputs. A model whose probes sit directly in the top module, or whose
probed blocks nest, is refused (:class:`~zc_proxies.errors.ModelError`): its
blocks cannot be told apart. Feature maps are (N, C, H, W); an (N, C) one reads
as H = W = 1.

Components (all higher is better)
---------------------------------
For a feature map f with B*H*W positions of C channels, X the (B*H*W, C) matrix
of its positions minus their mean, Sigma = X^T X / (B*H*W), s its eigenvalues and
p = s / sum(s), the isotropy is E(f) = sum_c -p_c log(p_c + 1e-8).

* ``expressivity`` = sum_l E(f_l);
* ``progressivity`` = min_l (E(f_l) - E(f_{l-1}));
* ``trainability`` = mean over l = L..1 of t_l: with g_out a Rademacher (+-1)
  tensor of f_l's shape and g_in = d<f_l, g_out>/d f_{l-1} (autograd), t_l = -inf
  when g_in equals g_out exactly (a block that is the identity for gradients);
  else g_in is pixel-unshuffled to f_l's resolution when the block downsamples,
  M = G_in^T G_out / (B*H_l*W_l) with G the (positions, channels) matrices, sigma
  the largest singular value of M, and t_l = -sigma - 1/(sigma + 1e-6) + 2 (a
  block output that does not depend on the previous feature at all has a zero
  Jacobian: g_in = 0, sigma = 0; the official code would stop with an autograd
  error there, which cannot happen on NAS-Bench-201, where even the ``none`` op
  keeps its input in the graph);
* ``complexity`` = FLOPs of one sample's forward pass (the notebook ranks the
  NB201 API's FLOPs, which :func:`~zc_proxies.proxies.flops.count_flops` equals on
  NAS-Bench-201; larger FLOPs rank higher).

The official code maps a NaN component to -inf (NaN arises for an all-constant
feature map, e.g. a cell whose output is zero: 0/0 in p), and -inf ranks last.
Components must be finite here, so -inf is stored as :data:`WORST` (-1e30), below
every value the formulas give on a working network: the isotropies lie in
[0, log C], so expressivity >= 0 and progressivity >= -log C, and a finite
trainability at or below -1e30 (a block gain sigma of 1e30) raises
:class:`~zc_proxies.errors.NonFiniteScoreError` instead. So WORST ranks exactly
where -inf ranks (last, ties sharing their mean rank), and stays small enough for
the scatter plots' symlog axes. A network whose features or gradients are
themselves NaN or infinite (a broken network, not a degenerate architecture)
raises :class:`~zc_proxies.errors.NonFiniteScoreError` too.

Aggregation (``log_rank_sum``, the notebook's cell 8)
----------------------------------------------------
Over the n architectures reported, each component is ranked with
``scipy.stats.rankdata`` (average ranks for ties, 1 = smallest = worst since all
four are higher-is-better) and the score is sum_k log(rank_k / n); the largest
sum is the best architecture.

Numerics: the covariance, eigenvalues and singular values are computed in float64
from the network's float32 features and gradients (the official code stays in
float32; float64 only removes rounding noise, such as slightly negative
eigenvalues of a rank-deficient covariance).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError, NonFiniteScoreError
from ..probes import BlockProbe
from . import _shared
from .base import ScoringContext, register_proxy
from .flops import count_flops

#: Stand-in for the official -inf (a component that ranks last); see the module docstring.
WORST = -1e30

#: The official batch size on NAS-Bench-201 (weight-sharing.config).
BATCH_SIZE = 64

COMPONENTS = ("expressivity", "progressivity", "trainability", "complexity")


def kaiming_fanin_reinit(net: nn.Module, gen: torch.Generator) -> None:
    """AZ-NAS's ``kaiming_norm_fanin`` initialisation, in place, drawing from ``gen`` in module order."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _shared.in_logical_order(m.weight, lambda w: nn.init.kaiming_normal_(
                    w, mode="fan_in", nonlinearity="relu", generator=gen))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def probed_blocks(net: nn.Module, proxy: str = "az_nas") -> list[nn.Module]:
    """The modules that hold a BlockProbe as a direct child (each once), or a ModelError."""
    blocks: list[nn.Module] = []
    for module in net.modules():
        if any(isinstance(child, BlockProbe) for child in module.children()):
            if module is net:
                raise ModelError(f"{proxy} measures the output of each block, but {type(net).__name__} holds a "
                                 "zc_proxies.BlockProbe directly, not inside a block module; put each block in "
                                 "its own module with the probe inside it")
            blocks.append(module)
    if not blocks:
        raise ModelError(f"{proxy} measures the output of each block, but {type(net).__name__} contains no "
                         "zc_proxies.BlockProbe; put one inside each block's module")
    ids = {id(b) for b in blocks}
    for b in blocks:
        if any(id(m) in ids for m in b.modules() if m is not b):
            raise ModelError(f"{proxy}: probed blocks nest ({type(b).__name__} contains another probed block), "
                             "so the sequence of block outputs is not defined")
    return blocks


def block_features(net: nn.Module, x: torch.Tensor, proxy: str = "az_nas") -> list[torch.Tensor]:
    """[input of the first block called, output of each block call...], still attached to the graph."""
    blocks = probed_blocks(net, proxy)
    first: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def before(_m: nn.Module, args: tuple) -> None:
        if not first and not outputs:
            if not args or not isinstance(args[0], torch.Tensor):
                raise ModelError(f"{proxy}: the first block's input is not a tensor")
            first.append(args[0])

    def after(m: nn.Module, _args: tuple, out: object) -> None:
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"{proxy}: block {type(m).__name__} returned {type(out).__name__}, not a tensor")
        outputs.append(out)

    handles = [b.register_forward_pre_hook(before) for b in blocks]
    handles += [b.register_forward_hook(after) for b in blocks]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    if not outputs:
        raise ModelError(f"{proxy}: none of the probed blocks was called in the forward pass")
    feats = first + outputs
    for f in feats:
        if f.dim() not in (2, 4) or f.shape[0] != x.shape[0]:
            raise ModelError(f"{proxy}: a block feature has shape {tuple(f.shape)}; expected (N, C, H, W) or (N, C)")
    return feats


def _positions(f: torch.Tensor) -> torch.Tensor:
    """(B*H*W, C) rows: each position of each sample, channels as columns."""
    return f.reshape(f.shape[0], f.shape[1], -1).permute(0, 2, 1).reshape(-1, f.shape[1])


def isotropy(f: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance over positions (NaN for a constant map)."""
    x = _positions(f.detach()).double()
    x = x - x.mean(dim=0, keepdim=True)
    sigma = x.T @ x / x.shape[0]
    s = torch.linalg.eigvalsh(sigma)
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


def _as_maps(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, None, None] if t.dim() == 2 else t


def block_trainability(f_in: torch.Tensor, f_out: torch.Tensor, g_out: torch.Tensor, proxy: str = "az_nas") -> float:
    """t_l for one block: -inf for a gradient-identity block, else -sigma - 1/(sigma + 1e-6) + 2."""
    (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=g_out, retain_graph=True, allow_unused=True)
    if g_in is None:  # f_out does not depend on f_in: the Jacobian is zero
        g_in = torch.zeros_like(f_in)
    if not bool(torch.isfinite(g_in).all()):
        raise NonFiniteScoreError(f"{proxy}: the network's gradients contain NaN or infinite values")
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return -math.inf
    g_in, g_out = _as_maps(g_in), _as_maps(g_out)
    (hi, wi), (ho, wo) = g_in.shape[-2:], g_out.shape[-2:]
    if (hi, wi) != (ho, wo):
        if ho > hi or hi % ho or wi % wo or hi // ho != wi // wo:
            raise ModelError(f"{proxy}: a block maps {hi}x{wi} features to {ho}x{wo}; the trainability term "
                             "handles only an equal resolution or an integer downsampling (pixel unshuffle)")
        g_in = F.pixel_unshuffle(g_in, hi // ho)
    rows = g_out.shape[0] * ho * wo
    mat = _positions(g_in).double().T @ _positions(g_out).double() / rows
    sigma = float(torch.linalg.svdvals(mat).max())
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0


def _finite_or_raise(tensors: list[torch.Tensor], what: str) -> None:
    for t in tensors:
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteScoreError(f"az_nas: the network's {what} contain NaN or infinite values")


def _official(value: float) -> float:
    """The official NaN -> -inf mapping, with -inf stored as WORST."""
    return WORST if math.isnan(value) or value == -math.inf else value


@register_proxy("az_nas", needs_labels=False, needs_grad=True, bn_mode="train", version="1",
                components=COMPONENTS, aggregate="log_rank_sum")
def az_nas(ctx: ScoringContext) -> dict[str, float]:
    """AZ-NAS: expressivity, progressivity, trainability, complexity; sum of log-ranks over the population."""
    shape, device, dtype = ctx.inputs.shape, ctx.inputs.device, ctx.inputs.dtype
    net = copy.deepcopy(ctx.model)
    net.eval()
    complexity = count_flops(net, tuple(shape[1:]), device=device, dtype=dtype) / 1e6
    gen = ctx.generator()
    kaiming_fanin_reinit(net, gen)
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
    x = torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_(True)
    with torch.enable_grad():
        feats = block_features(net, x)
        _finite_or_raise(feats, "block features")
        scores = [isotropy(f) for f in feats]
        expressivity = float(sum(scores))
        diffs = [b - a for a, b in zip(scores[:-1], scores[1:])]
        progressivity = math.nan if any(math.isnan(d) for d in diffs) else min(diffs)
        terms = []
        for i in reversed(range(1, len(feats))):
            f_in, f_out = feats[i - 1], feats[i]
            g_out = (torch.bernoulli(torch.full(f_out.shape, 0.5, dtype=f_out.dtype, device=f_out.device), generator=gen) - 0.5) * 2
            terms.append(block_trainability(f_in, f_out, g_out))
    trainability = sum(terms) / len(terms)
    if WORST >= trainability > -math.inf:
        raise NonFiniteScoreError(f"az_nas: trainability {trainability:g} is at or below the stand-in for -inf "
                                  f"({WORST:g}): the network's block gradients explode")
    return {"expressivity": _official(expressivity), "progressivity": _official(progressivity),
            "trainability": _official(trainability), "complexity": complexity}
