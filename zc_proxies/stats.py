"""Rank correlations of proxy scores with accuracy, with bootstrap intervals and honest counts.

Sign convention: every statistic here is computed on *oriented* scores,
``score`` for a proxy whose spec says ``higher_is_better`` and ``-score``
otherwise. A positive correlation therefore always means "the proxy ranks
good networks high", and numbers of different proxies read the same way.

Scores that are missing are never dropped silently: callers pass how many
architectures gave NaN (``n_nan``) or failed (``n_error``), non-finite values
in ``scores`` are counted into ``n_nan`` here, and every result carries
``n`` (the pairs actually correlated) beside those counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("spearman", "kendall")


@dataclass(frozen=True)
class CorrelationResult:
    """One rank correlation, named like scipy's results plus what was counted.

    Attributes
    ----------
    method
        ``"spearman"`` or ``"kendall"`` (Kendall's tau-b).
    statistic, pvalue
        As scipy returns them for the oriented scores (NaN when undefined:
        fewer than 3 pairs, or a constant input).
    n
        Pairs correlated (finite score and accuracy).
    n_nan, n_error
        Architectures left out because the proxy gave NaN/inf, or failed.
    ci_low, ci_high
        Percentile bootstrap interval at ``confidence`` over ``n_resamples``
        resamples of the pairs (seeded by ``seed``).
    """

    method: str
    statistic: float
    pvalue: float
    n: int
    n_nan: int
    n_error: int
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    n_resamples: int = 1000
    seed: int = 0


def _stat_fn(method: str) -> Callable[[np.ndarray, np.ndarray], tuple[float, float]]:
    from scipy import stats as sps  # imported here: scipy.stats takes seconds to import, the CLI starts faster

    if method == "spearman":
        fn = sps.spearmanr
    elif method == "kendall":
        fn = sps.kendalltau
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    def compute(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
            return math.nan, math.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fn(x, y)
        return float(res.statistic), float(res.pvalue)

    return compute


def bootstrap_interval(x: np.ndarray, y: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float],
                       *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(x, y)`` over resampled pairs.

    Resamples on which the statistic is undefined (all ties) are left out.
    ``(nan, nan)`` when fewer than 3 pairs or no resample is defined.
    """
    n = len(x)
    if n < 3 or n_resamples < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for b in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        values[b] = statistic(x[idx], y[idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def correlation(method: str, scores: Sequence[float], accuracies: Sequence[float], *,
                higher_is_better: bool = True, n_nan: int = 0, n_error: int = 0,
                n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> CorrelationResult:
    """Rank correlation of proxy scores with accuracies (see the module note on sign and counts).

    Parameters
    ----------
    scores, accuracies
        Paired values; pairs with a non-finite score count into ``n_nan``, pairs
        with a non-finite accuracy are left out of ``n``.
    higher_is_better
        The proxy's sign convention; False negates the scores first.
    n_nan, n_error
        Architectures already left out by the caller (status ``nan``/``error``).
    """
    compute = _stat_fn(method)
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"scores and accuracies must be 1-D and paired, got shapes {x.shape} and {y.shape}")
    bad_score = ~np.isfinite(x)
    keep = ~bad_score & np.isfinite(y)
    x, y = x[keep], y[keep]
    if not higher_is_better:
        x = -x
    statistic, pvalue = compute(x, y)
    low, high = bootstrap_interval(x, y, lambda a, b: compute(a, b)[0], n_resamples=n_resamples,
                                   confidence=confidence, seed=seed)
    return CorrelationResult(method, statistic, pvalue, int(keep.sum()), n_nan + int(bad_score.sum()), n_error,
                             low, high, confidence, n_resamples, seed)


def spearman(scores: Sequence[float], accuracies: Sequence[float], **kwargs) -> CorrelationResult:
    """Spearman's rho with a bootstrap interval; keyword arguments as :func:`correlation`."""
    return correlation("spearman", scores, accuracies, **kwargs)


def kendall(scores: Sequence[float], accuracies: Sequence[float], **kwargs) -> CorrelationResult:
    """Kendall's tau-b with a bootstrap interval; keyword arguments as :func:`correlation`."""
    return correlation("kendall", scores, accuracies, **kwargs)


def _finite_pairs(scores: Sequence[float], accuracies: Sequence[float],
                  higher_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    """The finite (score, accuracy) pairs, scores negated when lower is better."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return (x[keep] if higher_is_better else -x[keep]), y[keep]


def top_k_overlap(scores: Sequence[float], accuracies: Sequence[float], fraction: float = 0.1, *,
                  higher_is_better: bool = True) -> float:
    """Share of the truly best ``fraction`` of architectures that the proxy also puts in its best ``fraction``.

    Non-finite pairs are left out; ``k = max(1, round(fraction * n))``; NaN when nothing is left.
    Ties are broken by position (stable sort), so the result is deterministic.
    """
    x, y = _finite_pairs(scores, accuracies, higher_is_better)
    if x.size == 0:
        return math.nan
    k = max(1, int(round(fraction * x.size)))
    by_proxy = set(np.argsort(-x, kind="stable")[:k].tolist())
    by_acc = set(np.argsort(-y, kind="stable")[:k].tolist())
    return len(by_proxy & by_acc) / k


def top_k_regret(scores: Sequence[float], accuracies: Sequence[float], k: int = 1, *,
                 higher_is_better: bool = True) -> float:
    """Best accuracy overall minus the best accuracy among the proxy's top ``k`` (percentage points)."""
    x, y = _finite_pairs(scores, accuracies, higher_is_better)
    if x.size == 0:
        return math.nan
    chosen = np.argsort(-x, kind="stable")[:k]
    return float(y.max() - y[chosen].max())
