"""Rank correlations of proxy scores with accuracy, with bootstrap intervals and honest counts.

Sign convention: every statistic here is computed on *oriented* scores,
``score`` for a proxy whose spec says ``higher_is_better`` and ``-score``
otherwise. A positive correlation therefore always means "the proxy ranks
good networks high", and numbers of different proxies read the same way.

Scores that are missing are never dropped silently: callers pass how many
architectures gave NaN (``n_nan``) or failed (``n_error``), non-finite values
in ``scores`` are counted into ``n_nan`` here, and every result carries
``n`` (the pairs actually correlated) beside those counts.

NaN policy (``nan_policy``, one place for every table): ``"omit"`` (the
default) leaves architectures whose score is NaN/inf or failed out of the
correlation; ``"worst"`` gives them the worst score instead (ranked last, tied
with each other, as NAS-Bench-Suite-Zero's failure sentinel does), so every
proxy is compared on the same architectures. Pairs without a finite accuracy
are left out under both.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("spearman", "kendall")

#: What :func:`correlation` (and the top-k / regret measures) do with a NaN, infinite or failed score.
NAN_POLICIES = ("omit", "worst")


class ComparisonWarning(UserWarning):
    """A table's numbers need care to compare: proxies saw different architectures, or too few."""


class DifferentArchitecturesWarning(ComparisonWarning):
    """Proxies of one space and target were correlated on different sets of architectures."""


class SmallSampleWarning(ComparisonWarning):
    """A correlation over fewer than :data:`MIN_N` architectures: its interval says little."""


#: Below this many correlated architectures a table says that its intervals and top-k overlaps mean little.
MIN_N = 30


def check_nan_policy(nan_policy: str) -> str:
    """``nan_policy`` if it is one of :data:`NAN_POLICIES`, else a ValueError."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    return nan_policy


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
        Pairs correlated: finite accuracy and (``nan_policy="omit"``) a finite
        score; under ``"worst"`` it includes the NaN/failed ones ranked last.
    n_nan, n_error
        Architectures whose proxy gave NaN/inf, or failed: left out
        (``"omit"``) or ranked last (``"worst"``; those the caller already
        left out are counted but never ranked).
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
    nan_policy: str = "omit"


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


def _oriented(scores: Sequence[float], accuracies: Sequence[float], higher_is_better: bool, nan_policy: str,
              failed: Sequence[bool] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, keep, bad)``: the kept pairs with scores oriented (higher = predicted better) and the policy
    applied, the mask of kept pairs, and the mask of NaN/inf/failed scores (all of the input)."""
    check_nan_policy(nan_policy)
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"scores and accuracies must be 1-D and paired, got shapes {x.shape} and {y.shape}")
    fail = np.zeros(x.shape, dtype=bool) if failed is None else np.asarray(failed, dtype=bool)
    if fail.shape != x.shape:
        raise ValueError(f"failed must be paired with the scores, got shapes {fail.shape} and {x.shape}")
    bad = ~np.isfinite(x) | fail
    if nan_policy == "omit":
        keep = ~bad & np.isfinite(y)
        x = x[keep] if higher_is_better else -x[keep]
    else:  # "worst": every NaN/failed score becomes -inf after orientation, below (and tied with) nothing else
        keep = np.isfinite(y)
        x = np.where(bad, -np.inf, x if higher_is_better else -x)[keep]
    return x, y[keep], keep, bad


def correlation(method: str, scores: Sequence[float], accuracies: Sequence[float], *,
                higher_is_better: bool = True, n_nan: int = 0, n_error: int = 0,
                n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                nan_policy: str = "omit", failed: Sequence[bool] | None = None) -> CorrelationResult:
    """Rank correlation of proxy scores with accuracies (see the module note on sign, counts and NaN policy).

    Parameters
    ----------
    scores, accuracies
        Paired values; pairs with a non-finite score count into ``n_nan`` (and
        are left out, or ranked last under ``nan_policy="worst"``); pairs with
        a non-finite accuracy are left out of ``n``.
    higher_is_better
        The proxy's sign convention; False negates the scores first.
    n_nan, n_error
        Architectures already left out by the caller (status ``nan``/``error``),
        counted but never ranked.
    nan_policy
        ``"omit"`` (default) or ``"worst"``, see the module note.
    failed
        Optional mask of the pairs whose proxy failed (their score is ignored):
        they count into ``n_error`` instead of ``n_nan`` and follow ``nan_policy``.
    """
    compute = _stat_fn(method)
    x, y, keep, bad = _oriented(scores, accuracies, higher_is_better, nan_policy, failed)
    n_failed = 0 if failed is None else int(np.asarray(failed, dtype=bool).sum())
    if nan_policy == "worst":
        from scipy.stats import rankdata

        x = rankdata(x)  # ranks carry everything a rank correlation uses, and -inf ties become plain ties
    statistic, pvalue = compute(x, y)
    low, high = bootstrap_interval(x, y, lambda a, b: compute(a, b)[0], n_resamples=n_resamples,
                                   confidence=confidence, seed=seed)
    return CorrelationResult(method, statistic, pvalue, int(keep.sum()), n_nan + int(bad.sum()) - n_failed,
                             n_error + n_failed, low, high, confidence, n_resamples, seed, nan_policy)


def spearman(scores: Sequence[float], accuracies: Sequence[float], **kwargs) -> CorrelationResult:
    """Spearman's rho with a bootstrap interval; keyword arguments as :func:`correlation`."""
    return correlation("spearman", scores, accuracies, **kwargs)


def kendall(scores: Sequence[float], accuracies: Sequence[float], **kwargs) -> CorrelationResult:
    """Kendall's tau-b with a bootstrap interval; keyword arguments as :func:`correlation`."""
    return correlation("kendall", scores, accuracies, **kwargs)


def _finite_pairs(scores: Sequence[float], accuracies: Sequence[float],
                  higher_is_better: bool, nan_policy: str = "omit") -> tuple[np.ndarray, np.ndarray]:
    """The (score, accuracy) pairs kept under ``nan_policy``, scores oriented (NaN/failed as -inf under worst)."""
    x, y, _, _ = _oriented(scores, accuracies, higher_is_better, nan_policy)
    return x, y


def top_k_overlap(scores: Sequence[float], accuracies: Sequence[float], fraction: float = 0.1, *,
                  higher_is_better: bool = True, nan_policy: str = "omit") -> float:
    """Share of the truly best ``fraction`` of architectures that the proxy also puts in its best ``fraction``.

    Pairs are kept as :func:`correlation` keeps them under ``nan_policy`` (under
    ``"worst"`` a NaN score ranks last); ``k = max(1, round(fraction * n))``;
    NaN when nothing is left. Ties are broken by position (stable sort), so
    the result is deterministic.
    """
    x, y = _finite_pairs(scores, accuracies, higher_is_better, nan_policy)
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


def regret(scores: Sequence[float], accuracies: Sequence[float], *, higher_is_better: bool = True,
           nan_policy: str = "omit") -> float:
    """How much accuracy picking the proxy's best-scored architecture loses, in accuracy points.

    ``max(accuracy over the sample) - accuracy of the architecture the proxy
    scores best``, over the pairs :func:`correlation` keeps under
    ``nan_policy`` (finite accuracy; under ``"omit"`` also a finite score;
    under ``"worst"`` a NaN/failed score is never picked unless all are).
    Several architectures tied at the best score: the mean of their
    accuracies is used (the expected regret of picking one of them at
    random), never a positional choice. 0 is perfect; NaN for an empty sample.
    """
    x, y = _finite_pairs(scores, accuracies, higher_is_better, nan_policy)
    if x.size == 0:
        return math.nan
    best = x == x.max()  # all True when every score is -inf (all NaN under "worst")
    return float(y.max() - y[best].mean())
