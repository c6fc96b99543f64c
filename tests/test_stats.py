"""Rank correlations against hand-computed values; sign convention; NaN counting; bootstrap."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from zc_proxies.stats import (
    CorrelationResult,
    bootstrap_interval,
    correlation,
    kendall,
    spearman,
    top_k_overlap,
    top_k_regret,
)

# x ranks 1..5, y ranks (2, 1, 4, 3, 5): d = (-1, 1, -1, 1, 0), sum d^2 = 4,
# rho = 1 - 6 * 4 / (5 * 24) = 0.8. Pairs: 10, discordant (1,2) and (3,4) -> tau = (8 - 2) / 10 = 0.6.
X = [0.1, 0.2, 0.3, 0.4, 0.5]
Y = [71.0, 70.0, 80.0, 75.0, 90.0]


def test_spearman_and_kendall_match_hand_computation():
    rho = spearman(X, Y, n_resamples=50)
    tau = kendall(X, Y, n_resamples=50)
    assert rho.statistic == pytest.approx(0.8, abs=1e-12)
    assert tau.statistic == pytest.approx(0.6, abs=1e-12)
    assert (rho.n, rho.n_nan, rho.n_error) == (5, 0, 0)
    assert rho.method == "spearman" and tau.method == "kendall"
    # exact two-sided p-value of Kendall's tau = 0.6 with n = 5: P(|S| >= 6) = 2 * 4/120 + ... computed by
    # enumeration below (independent of scipy)
    from itertools import permutations
    stats = []
    for perm in permutations(range(5)):
        s = sum(np.sign(perm[j] - perm[i]) for i in range(5) for j in range(i + 1, 5))
        stats.append(abs(s))
    p_exact = sum(s >= 6 for s in stats) / len(stats)
    assert tau.pvalue == pytest.approx(p_exact, rel=1e-9)


def test_result_is_frozen_with_scipy_like_names():
    r = spearman(X, Y, n_resamples=10)
    assert isinstance(r, CorrelationResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.statistic = 0.0  # type: ignore[misc]
    for name in ("statistic", "pvalue", "n", "ci_low", "ci_high", "n_nan", "n_error"):
        assert hasattr(r, name)


def test_lower_is_better_is_negated():
    up = spearman(X, Y, n_resamples=20, seed=3)
    down = spearman(X, Y, higher_is_better=False, n_resamples=20, seed=3)
    assert down.statistic == pytest.approx(-0.8)
    assert (down.ci_low, down.ci_high) == pytest.approx((-up.ci_high, -up.ci_low))
    assert top_k_overlap([3, 2, 1], [1, 2, 3], 0.34, higher_is_better=False) == 1.0


def test_nan_scores_are_counted_not_hidden():
    scores = [0.1, float("nan"), 0.2, float("inf"), 0.3, 0.4, 0.5]
    acc = [71.0, 50.0, 70.0, 60.0, 80.0, 75.0, 90.0]
    r = spearman(scores, acc, n_nan=1, n_error=2, n_resamples=20)
    assert r.n == 5 and r.n_nan == 3 and r.n_error == 2
    assert r.statistic == pytest.approx(0.8)


def test_undefined_cases_give_nan():
    r = spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], n_resamples=10)
    assert math.isnan(r.statistic) and math.isnan(r.ci_low) and r.n == 4
    r = kendall([1.0, 2.0], [2.0, 1.0], n_resamples=10)
    assert math.isnan(r.statistic) and r.n == 2
    with pytest.raises(ValueError, match="method"):
        correlation("pearson", X, Y)
    with pytest.raises(ValueError, match="paired"):
        spearman([1.0, 2.0], [1.0])


def test_bootstrap_interval_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    a = spearman(x, y, n_resamples=300, seed=1)
    b = spearman(x, y, n_resamples=300, seed=1)
    c = spearman(x, y, n_resamples=300, seed=2)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < a.statistic < a.ci_high
    # Normal-theory check: SE of Spearman's rho ~ 1.06 / sqrt(n - 3) * (1 - rho^2) roughly; the interval
    # width should be of that order (between a third and three times it).
    width = a.ci_high - a.ci_low
    approx = 2 * 1.96 * (1 - a.statistic ** 2) / math.sqrt(200 - 3)
    assert approx / 3 < width < approx * 3


def test_bootstrap_interval_hand_case():
    # Statistic = mean of x; with every resample of a constant vector the interval collapses.
    x = np.full(10, 2.0)
    assert bootstrap_interval(x, x, lambda a, b: float(a.mean()), n_resamples=20) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_interval(x[:2], x[:2], lambda a, b: 0.0))


def test_top_k_metrics():
    scores = [5, 4, 3, 2, 1, 0, -1, -2, -3, -4]
    acc = [90, 50, 80, 40, 30, 20, 10, 5, 1, 0]
    assert top_k_overlap(scores, acc, 0.2) == 0.5           # proxy top-2 {0,1}; true top-2 {0,2}
    assert top_k_overlap(scores, acc, 0.1) == 1.0
    assert top_k_regret(scores, acc, k=1) == 0.0
    assert top_k_regret(scores[::-1], acc, k=1) == 90.0     # picks index 9 (acc 0)


def test_nan_policy_worst_ranks_nan_and_failed_last():
    from scipy import stats as sps

    scores = [0.1, float("nan"), 0.2, 0.3, 0.4, 5.0]
    acc = [71.0, 50.0, 70.0, 80.0, 75.0, 90.0]
    failed = [False, False, False, False, False, True]  # the last one raised: its 5.0 is ignored
    omit = spearman(scores, acc, failed=failed, n_resamples=20)
    worst = spearman(scores, acc, failed=failed, n_resamples=20, nan_policy="worst")
    assert (omit.n, omit.n_nan, omit.n_error, omit.nan_policy) == (4, 1, 1, "omit")
    assert omit.statistic == pytest.approx(sps.spearmanr([0.1, 0.2, 0.3, 0.4], [71, 70, 80, 75]).statistic)
    assert (worst.n, worst.n_nan, worst.n_error, worst.nan_policy) == (6, 1, 1, "worst")
    want = sps.spearmanr([0.1, -9, 0.2, 0.3, 0.4, -9], acc).statistic  # both last, tied
    assert worst.statistic == pytest.approx(want)
    down = kendall([-s for s in scores[:5]], acc[:5], higher_is_better=False, nan_policy="worst", n_resamples=5)
    assert down.statistic == pytest.approx(sps.kendalltau([0.1, -9, 0.2, 0.3, 0.4], acc[:5]).statistic)
    with pytest.raises(ValueError, match="nan_policy"):
        spearman(X, Y, nan_policy="drop")


def test_regret_and_top_k_under_each_policy():
    from zc_proxies.stats import regret

    acc = [60.0, 70.0, 80.0, 90.0]
    assert regret([1, 2, 3, 4], acc) == 0.0
    assert regret([4, 3, 2, 1], acc) == 30.0
    assert regret([1, 2, 4, 4], acc) == pytest.approx(5.0)  # tied at the top: their mean accuracy, 85
    assert regret([1, 2, 3, 4], acc, higher_is_better=False) == 30.0
    nan_best = [1, 2, 3, float("nan")]
    assert regret(nan_best, acc) == 0.0  # omit: arch 3 is out of the sample
    assert regret(nan_best, acc, nan_policy="worst") == 10.0  # worst: in the sample, never picked
    assert math.isnan(regret([float("nan")], [1.0]))
    assert regret([float("nan")] * 2, [1.0, 3.0], nan_policy="worst") == 1.0  # all tied: mean
    assert top_k_overlap(nan_best, acc, 0.25) == 1.0
    assert top_k_overlap(nan_best, acc, 0.25, nan_policy="worst") == 0.0
