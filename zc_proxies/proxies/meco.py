"""``meco`` and ``meco_opt``: minimum eigenvalues of channel correlations of one sample's feature maps.

Jiang, Wang & Bie (NeurIPS 2023), "MeCo: Zero-Shot NAS with One Data and Single
Forward Pass via Minimum Eigenvalue of Correlation". Followed: the official
repository HamsterMimi/MeCo at commit 0d830dd2f639f9d1ba3b5831a65df768d70fc93b,
``correlation/NAS_Bench_201.py`` (``get_score``, measures ``meco`` and
``meco_opt``), the script behind the paper's NAS-Bench-201 correlations (Spearman
0.89 on CIFAR-10). Not followed: the Zero-Cost-PT copy
``zero-cost-nas/foresight/pruners/measures/meco.py``, which ignores the batch and
feeds a Gaussian 1x3x64x64 input (the paper's NAS-Bench experiments use data).

Formula. Run the network once; for every call of every module, let ``F`` be the
first sample of its output (``output[0]``) reshaped to rows ``F.reshape(F.shape[0], -1)``
(a conv feature map ``(C, H, W)`` gives C channel rows of H*W pixels), ``P`` the
Pearson correlation matrix of those rows with NaN and inf entries set to 0 (a
constant row, such as a dead channel or a ``none`` op's zeros, is all NaN, hence
a zero row), and

    meco     = sum over module calls of  lambda_min(P)
    meco_opt = sum over module calls of  lambda_min(P[S, S]) * n / 8

where, for ``meco_opt``, S is 8 of the n rows drawn uniformly without replacement,
afresh for every module call. Higher is better.

Protocol (as the official script runs it):

* one sample: the official script loads a batch of 1 (``--batch_size 1``, a CIFAR
  training image) and reads ``output[0]``; here the network is run on the first
  sample of the batch only (``ctx.inputs[:1]``), so the run's batch size does not
  change the score;
* BatchNorm in train mode (the script never calls ``eval()``: a freshly built
  network trains), so with one sample each BatchNorm2d normalises over H x W;
* the network's own initialisation (the script's ``init_net(net, 'none', 'none')``);
* hooks on every module of ``model.named_modules()``: the root, containers
  (``nn.Sequential``, cells) and leaves alike, so a tensor returned by several
  nested modules counts once per module, and a module called twice counts twice.
  Outputs whose first sample is a vector (a Linear layer's ``(N, K)`` gives K rows
  of one value) are constant rows and add exactly 0;
* the correlation matrix and its eigenvalues in float64 (the script uses float32
  ``torch.corrcoef`` and ``torch.linalg.eig``; P is symmetric, so ``eigvalsh``
  gives the same real eigenvalues up to rounding);
* ``meco_opt`` draws S with ``torch.randperm`` from ``ctx.generator()`` (seeded
  with the scoring seed), one draw per module call with more than 8 rows, in the
  order the hooks fire (the script uses Python's unseeded ``random.sample``).

Where this differs from the official code, on purpose:

* :class:`~zc_proxies.BlockProbe` modules are not hooked: they are zcbench's
  markers for ``fisher_potential`` (identities holding nothing), not part of any
  official network, and hooking them would count each block output once more;
* ``meco_opt`` on a module call with at most 8 rows uses all of them with factor
  n / n = 1, i.e. the exact ``meco`` term (``random.sample`` raises there; with
  exactly 8 rows the official draw is a permutation, which changes nothing);
* a first-sample feature map holding NaN or inf makes the score NaN (a
  :class:`~zc_proxies.errors.NonFiniteScoreError`) instead of being zeroed away;
* outputs the official hook cannot read raise a :class:`ModelError` naming the
  module (a 0-d tensor; a first sample with a single row, e.g. a one-channel map or
  a one-output head, whose 1x1 correlation ``torch.linalg.eig`` refuses; a tuple
  whose first element is no tensor). For a tuple output the official hook reads
  the whole first element (``output[0]``), and so does this one.

The score depends on how the network is split into modules, since containers
count. zcbench's NAS-Bench-201 network follows the benchmark's ``TinyNetwork``;
the network the official script scores (``foresight.models.nasbench2``) wraps the
stem in one more module and each stage's five cells in an ``nn.Sequential``, so
its sum holds one more term for the stem output and one per stage for the last
cell's output.

Sharing: ``meco`` and ``meco_opt`` scored in one :func:`~zc_proxies.score` call
share one forward pass (cached in ``ctx.cache``); each value equals the one
computed alone. They cannot share a pass with ``swap``, which runs 16 samples on
a Gaussian re-initialised copy (see :mod:`zc_proxies.proxies.swap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import BatchError, ModelError
from ..probes import BlockProbe
from ._shared import TOGETHER, corrcoef
from .base import ScoringContext, register_proxy

#: Samples the network is run on (the paper's "one data").
SAMPLES = 1
#: Rows (channels) ``meco_opt`` samples per module call.
OPT_ROWS = 8

_CACHE = "_zc_meco_pass"
_ALL = ("meco", "meco_opt")


def min_eigenvalue(rows: torch.Tensor) -> float:
    """lambda_min of the Pearson correlation of ``rows`` (NaN and inf entries set to 0), in float64."""
    corr = corrcoef(rows)
    corr = torch.where(torch.isfinite(corr), corr, torch.zeros_like(corr))
    return float(torch.linalg.eigvalsh(corr)[0])


def first_sample_rows(module: nn.Module, output: object) -> torch.Tensor:
    """``output[0]`` as rows ``(first axis, everything else)``, as the official hook reads it.

    For a tensor output that is the first sample; for a tuple or list output it
    is the whole first element (the official hook indexes the output, whatever it is).
    """
    if isinstance(output, torch.Tensor) and output.dim() > 0:
        first = output[0]
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        first = output[0]
    else:
        got = "a 0-d tensor" if isinstance(output, torch.Tensor) else f"a {type(output).__name__}"
        raise ModelError(f"meco reads the first sample of every module's output, but {type(module).__name__} "
                         f"returned {got}")
    if first.dim() == 0 or first.shape[0] < 2:
        raise ModelError(f"meco correlates the rows (channels) of each module's output, but the first sample of "
                         f"{type(module).__name__}'s output has shape {tuple(first.shape)}: fewer than two rows "
                         "have no correlation matrix (the official code fails there too)")
    return first.detach().reshape(first.shape[0], -1)


@dataclass
class MecoPass:
    """Sums of one shared forward pass, by proxy name (NaN after a non-finite feature map); ``calls`` hooked."""

    values: dict[str, float] = field(default_factory=dict)
    calls: int = 0


def _wanted(ctx: ScoringContext, name: str) -> set[str]:
    together = set(ctx.cache.get(TOGETHER, ())) & set(_ALL)
    return together | {name}


def _run(ctx: ScoringContext, wanted: set[str]) -> MecoPass:
    model = ctx.model
    x = ctx.inputs[:SAMPLES]
    gen = ctx.generator() if "meco_opt" in wanted else None
    full = 0.0
    opt = 0.0
    finite = True
    calls = 0

    def hook(module: nn.Module, _inputs: tuple, output: object) -> None:
        nonlocal full, opt, finite, calls
        rows = first_sample_rows(module, output)
        calls += 1
        if not bool(torch.isfinite(rows).all()):
            finite = False
            return
        n = rows.shape[0]
        if "meco" in wanted:
            full = full + min_eigenvalue(rows)
        if gen is not None:
            if n > OPT_ROWS:
                picked = torch.randperm(n, generator=gen, device=gen.device)[:OPT_ROWS].to(rows.device)
                opt = opt + min_eigenvalue(rows[picked]) * n / OPT_ROWS
            else:
                opt = opt + min_eigenvalue(rows)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not isinstance(m, BlockProbe)]
    try:
        with torch.no_grad():
            model(x)
    except ValueError as exc:
        if "Expected more than 1 value per channel" in str(exc):
            raise BatchError(f"meco runs the network on one sample (the paper's protocol), but a train-mode "
                             f"BatchNorm of this network then sees one value per channel: {exc}") from exc
        raise
    finally:
        for h in handles:
            h.remove()
    result = MecoPass(calls=calls)
    for name, total in (("meco", full), ("meco_opt", opt)):
        if name in wanted:
            result.values[name] = float(total) if finite else math.nan
    return result


def meco_pass(ctx: ScoringContext, name: str) -> MecoPass:
    """The shared pass holding ``name``'s sum (computed now, with the companions' sums, if not cached)."""
    cached: MecoPass | None = ctx.cache.get(_CACHE)
    if cached is not None and name in cached.values:
        return cached
    done = set(cached.values) if cached is not None else set()
    new = _run(ctx, _wanted(ctx, name) - done)
    if cached is not None:
        new.values = {**cached.values, **new.values}
    ctx.cache[_CACHE] = new
    return new


@register_proxy("meco", needs_labels=False, needs_grad=False, bn_mode="train", version="1")
def meco(ctx: ScoringContext) -> float:
    """Sum over module calls of the minimum eigenvalue of the first sample's channel correlation (MeCo)."""
    return meco_pass(ctx, "meco").values["meco"]


@register_proxy("meco_opt", needs_labels=False, needs_grad=False, bn_mode="train", version="1")
def meco_opt(ctx: ScoringContext) -> float:
    """MeCo_opt: MeCo on 8 sampled channels per module call, rescaled by channels / 8."""
    return meco_pass(ctx, "meco_opt").values["meco_opt"]
