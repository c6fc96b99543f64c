"""``swap`` and ``swap_reg``: the number of distinct sample-wise activation patterns (SWAP-Score).

Peng, Song, Fayek, Ciesielski & Chang (ICLR 2024), "SWAP-NAS: Sample-Wise
Activation Patterns for Ultra-fast NAS". Followed: the official repository
pym1024/SWAP at commit f6049f7c979b0cfc9ac5a13666fedb79dfe3cce8 (its only code
commit is 8d6225609ea3cf1c08980250d9b68113c34a0474): ``src/metrics/swap.py``
(``SWAP``, ``SampleWiseActivationPatterns``, ``cal_regular_factor``),
``src/utils/utilities.py`` (``count_parameters``, ``network_weight_gaussian_init``)
and the driver ``correlation.py``. The repository holds no NAS-Bench-201 script;
its driver (DARTS networks, CIFAR-10) fixes the protocol below.

Formula. Forward-hook every ``nn.ReLU`` module (``isinstance``, so subclasses too;
ReLU6, LeakyReLU... are not ReLU subclasses and are not read) whose input is 4-D,
and take its output ``(N, C, H, W)`` flattened to ``(N, C*H*W)``; concatenate all
calls along the second axis into A, ``(N, D)``. The sample-wise activation pattern
of neuron d is the column ``sign(A[:, d])`` (0 or 1 after a ReLU), a binary vector
over the N samples. Then

    SWAP = number of distinct patterns = |{ sign(A[:, d]) : d = 1..D }|

(``torch.unique`` over the rows of the transposed sign matrix). It lies in
[1, min(D, 2**N)]; higher is better. Identical activations read by several ReLU
modules (NAS-Bench-201 feeds one node to several ReLU-conv ops) add no pattern.

``swap_reg`` multiplies by the regularisation factor of the parameter count:

    swap_reg = SWAP * exp( -(Theta - mu)**2 / sigma )

with Theta = the number of parameter elements (``named_parameters()``, names
containing "auxiliary" excluded) / 1e3, i.e. in THOUSANDS of parameters, as the
official ``count_parameters`` returns it; ``mu`` is in thousands of parameters
and ``sigma`` in thousands squared, and there is no factor 2 in the exponent.

Protocol (the official driver ``correlation.py``):

* the first 16 samples of the batch (``--input_samples 16``, CIFAR training
  images); a batch of fewer samples is used whole (the official class takes
  whatever batch it is given);
* BatchNorm in train mode (the driver never calls ``eval()``);
* the network's own weights are not used: for each of 32 repeats
  (``--repeats 32``) a private copy is re-initialised as
  ``network_weight_gaussian_init`` does (every Conv2d and Linear weight ~ N(0, 1),
  their biases 0; BatchNorm2d and GroupNorm weights 1, biases 0; nothing else
  touched), run once, and its SWAP counted; the score is the mean of the 32
  counts. The draws come, weights in ``model.modules()`` order, repeat after
  repeat, from ``ctx.generator()`` (seeded with the scoring seed); the driver
  draws them from torch's unseeded global generator;
* the patterns are read in each hook as they are produced (a later in-place
  operation cannot change them; the official hook keeps references and reads
  them after the pass, which is the same for networks without such operations).

Deviations: a NaN activation makes the score NaN (a NonFiniteScoreError; the
official ``torch.sign`` would turn it into a pattern of its own); a network in
which no ``nn.ReLU`` with a 4-D input runs is a :class:`ModelError` (the official
class returns None); a BatchNorm2d/GroupNorm without affine weights is left as
it is (the official init would fail on it).

``mu`` and ``sigma`` are constants of the search space, which the user sets: the
official code has no default (``SWAP(regular=False, mu=None, sigma=None)``; the
driver never regularises), and the values behind the paper's NAS-Bench tables
are not in the repository (nor could the paper's text be retrieved here). So no
``swap_reg`` is registered on import, rather than one with made-up constants:
``register_swap_reg("swap_reg", mu=..., sigma=...)`` registers it, with the
paper's constants for the space scored (mu in thousands of parameters, sigma in
thousands squared; the spec's version records both). As a scale, NAS-Bench-201
networks for CIFAR-10 hold 73 to 1,532 thousand parameters.

Sharing: ``swap`` and ``swap_reg`` scored in one :func:`~zc_proxies.score` call
share the 32 passes (cached in ``ctx.cache``); each value equals the one computed
alone. They cannot share a pass with ``meco``/``meco_opt``, which run one sample
through the network's own weights (see :mod:`zc_proxies.proxies.meco`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ._shared import on_relu_maps
from .base import ScoringContext, register_proxy
from .zen import gaussian_reinit

#: Samples read (the official ``--input_samples``).
SAMPLES = 16
#: Gaussian re-initialisations averaged (the official ``--repeats``).
REPEATS = 32

_CACHE = "_zc_swap_counts"
_MAX_BITS = 62  # samples packed into one int64 pattern code


def gaussian_init(net: nn.Module, gen: torch.Generator) -> None:
    """SWAP's ``network_weight_gaussian_init`` (in place, from ``gen``): Zen-NAS's scheme, running statistics kept."""
    gaussian_reinit(net, gen, reset_running_stats=False)


def pattern_count(net: nn.Module, x: torch.Tensor) -> float:
    """SWAP of ``net`` on ``x``: distinct sign patterns over the samples of all nn.ReLU outputs (NaN if any is NaN)."""
    n = x.shape[0]
    if n > _MAX_BITS:
        raise ValueError(f"pattern_count packs at most {_MAX_BITS} samples, got {n}")
    weights = (2 ** torch.arange(n, dtype=torch.int64, device=x.device)).view(n, 1)
    codes: list[torch.Tensor] = []
    nan = False

    def hook(output: torch.Tensor) -> None:
        nonlocal nan
        a = output.reshape(n, -1)
        if bool(torch.isnan(a).any()):
            nan = True
        # column d's pattern sign(a[:, d]) in {0, 1}^n, as the integer sum_i [a[i, d] > 0] 2**i
        code = ((a > 0).to(torch.int64) * weights).sum(dim=0)
        codes.append(torch.unique(code))

    on_relu_maps(net, x, hook)
    if not codes:
        raise ModelError(f"swap reads the outputs of nn.ReLU modules with 4-D inputs, but none ran in "
                         f"{type(net).__name__} (functional F.relu calls cannot be observed)")
    if nan:
        return math.nan
    return float(torch.unique(torch.cat(codes)).numel())


def swap_counts(ctx: ScoringContext) -> list[float]:
    """The SWAP of each of the :data:`REPEATS` Gaussian re-initialisations (cached for the companions)."""
    cached = ctx.cache.get(_CACHE)
    if cached is not None:
        return cached
    net = copy.deepcopy(ctx.model)
    gen = ctx.generator()
    x = ctx.inputs[:SAMPLES]
    counts = []
    for _ in range(REPEATS):
        gaussian_init(net, gen)
        counts.append(pattern_count(net, x))
    ctx.cache[_CACHE] = counts
    return counts


def parameters_k(model: nn.Module) -> float:
    """Parameter elements in thousands, as SWAP's ``count_parameters`` (names with "auxiliary" left out)."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name) / 1e3


def regular_factor(model: nn.Module, mu: float, sigma: float) -> float:
    """exp(-(Theta - mu)**2 / sigma), Theta = :func:`parameters_k`; mu in thousands, sigma in thousands squared."""
    return math.exp(-((parameters_k(model) - mu) ** 2) / sigma)


@register_proxy("swap", needs_labels=False, needs_grad=False, bn_mode="train", version="1")
def swap(ctx: ScoringContext) -> float:
    """SWAP-Score: distinct sample-wise ReLU sign patterns, mean over 32 Gaussian initialisations."""
    counts = swap_counts(ctx)
    return math.fsum(counts) / len(counts)


def swap_reg_with(mu: float, sigma: float) -> Callable[[ScoringContext], float]:
    """A proxy function: SWAP times the regularisation factor with these search-space constants."""
    mu, sigma = float(mu), float(sigma)
    if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"swap_reg needs a finite mu and a positive sigma, got mu={mu!r}, sigma={sigma!r}")

    def fn(ctx: ScoringContext) -> float:
        return swap(ctx) * regular_factor(ctx.model, mu, sigma)

    return fn


def register_swap_reg(name: str = "swap_reg", *, mu: float, sigma: float) -> Callable[[ScoringContext], float]:
    """Register ``name`` as regularised SWAP with one search space's constants (mu in thousands of parameters,
    sigma in thousands squared); the spec's version records them."""
    fn = swap_reg_with(mu, sigma)
    fn.__doc__ = f"Regularised SWAP-Score: SWAP x exp(-(params_k - {mu:g})^2 / {sigma:g})."
    return register_proxy(name, needs_labels=False, needs_grad=False, bn_mode="train",
                          version=f"1-mu{mu:g}-sigma{sigma:g}")(fn)
