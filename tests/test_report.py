"""Correlation tables from store rows: counts, sign, footnotes, and the CSV / Markdown / LaTeX / PNG writers."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from accuracy_space import AccuracyOnlySpace
from scipy import stats as sps

from zc_proxies.errors import UnknownNameError
from zc_proxies.proxies import register_proxy
from zc_proxies.proxies.base import PROXIES
from zc_proxies.report import (
    ReportContext,
    scatter_plot,
    summarise,
    to_csv,
    to_latex,
    to_markdown,
    to_text,
    write_reports,
)

ACC = {i: 60.0 + (i * 7) % 13 for i in range(12)}


class AccSpace(AccuracyOnlySpace):
    """Only accuracies matter here."""

    name = "acc-only"
    size = 12

    def accuracy(self, index, dataset, split):
        self.check_dataset(dataset)
        self.check_split(split)
        return ACC[index] + (1.0 if split == "test" else 0.0) * (index % 2)


if "neg_test_proxy" not in PROXIES:
    @register_proxy("neg_test_proxy", needs_labels=False, needs_grad=False, higher_is_better=False, version="7")
    def _neg(ctx):  # pragma: no cover - never scored here
        return 0.0


def rows_for(proxy, values, statuses=None):
    statuses = statuses or {}
    out = []
    for i, v in values.items():
        st = statuses.get(i, "ok")
        out.append({"index": i, "proxy": proxy, "seed": 0, "status": st, "score": v if st == "ok" else None,
                    "proxy_version": "1" if proxy == "fisher" else "7", "seconds": 0.5})
    return out


SCORES = {i: float(np.sin(i) + 0.1 * ACC[i]) for i in range(12)}


def context(stand_in=None):
    return ReportContext(spec="acc-only-cifar10", space="acc-only", dataset="cifar10", num_classes=10, batch_size=64,
                         seed=0, augment=True, data_source="cifar10-train" if not stand_in else "cifar10-train",
                         stand_in_for=stand_in, source_note="the note from the source",
                         targets=(("val", "cifar10"), ("test", "cifar10")), n_resamples=50)


def make_table():
    rows = rows_for("fisher", SCORES, {3: "nan", 5: "error"}) + rows_for("neg_test_proxy", SCORES)
    rows.append({"index": 0, "proxy": "fisher", "seed": 1, "status": "ok", "score": -99.0, "proxy_version": "1"})
    return rows, summarise(rows, AccSpace(), {"val": "cifar10", "test": "cifar10"}, ["fisher", "neg_test_proxy"],
                           seed=0, indices=list(range(12)), n_resamples=50)


def test_summarise_counts_and_values():
    _, table = make_table()
    assert [(r.proxy, r.split) for r in table] == [("fisher", "val"), ("fisher", "test"),
                                                   ("neg_test_proxy", "val"), ("neg_test_proxy", "test")]
    fv = table[0]
    keep = [i for i in range(12) if i not in (3, 5)]
    want = sps.spearmanr([SCORES[i] for i in keep], [ACC[i] for i in keep]).statistic
    assert fv.spearman.statistic == pytest.approx(want)
    assert (fv.spearman.n, fv.spearman.n_nan, fv.spearman.n_error, fv.n_missing) == (10, 1, 1, 0)
    assert fv.kendall.statistic == pytest.approx(sps.kendalltau([SCORES[i] for i in keep],
                                                                [ACC[i] for i in keep]).statistic)
    neg = table[2]  # same scores, lower is better: the sign flips
    full = sps.spearmanr(list(SCORES.values()), [ACC[i] for i in range(12)]).statistic
    assert neg.spearman.statistic == pytest.approx(-full) and not neg.higher_is_better
    assert neg.proxy_version == "7" and fv.median_seconds == 0.5


def test_missing_rows_are_counted():
    rows = rows_for("fisher", {i: SCORES[i] for i in range(6)})
    table = summarise(rows, AccSpace(), {"val": "cifar10"}, ["fisher"], seed=0, indices=list(range(8)),
                      n_resamples=10)
    assert table[0].n_missing == 2 and table[0].spearman.n == 6
    assert "2 (architecture, proxy) scores are not in the store yet" in to_markdown(table, context())


def test_unknown_split_or_dataset_target_is_an_error():
    rows = rows_for("fisher", SCORES)
    with pytest.raises(UnknownNameError, match="has no split 'vall'; did you mean 'val'"):
        summarise(rows, AccSpace(), {"vall": "cifar10"}, ["fisher"], seed=0, n_resamples=5)
    with pytest.raises(UnknownNameError, match="has no dataset 'cifar11'; did you mean 'cifar10'"):
        summarise(rows, AccSpace(), {"val": "cifar11"}, ["fisher"], seed=0, n_resamples=5)


def test_formats_and_footnotes(tmp_path):
    rows, table = make_table()
    ctx = context(stand_in="cifar100-train")
    md = to_markdown(table, ctx)
    assert md.splitlines()[0].startswith("| proxy | target | n | NaN | failed | Spearman")
    assert "| fisher | val (cifar10) | 10 | 1 | 1 |" in md
    assert "STAND-IN DATA: cifar10-train images stand in for cifar100-train" in md
    assert "lower-is-better proxies negated: neg_test_proxy" in md
    text = to_text(table, ctx)
    assert "STAND-IN" in text and "fisher" in text
    parsed = list(csv.DictReader(io.StringIO(to_csv(table, ctx))))
    assert len(parsed) == 4 and parsed[0]["n"] == "10" and parsed[0]["n_nan"] == "1"
    assert float(parsed[0]["spearman"]) == pytest.approx(table[0].spearman.statistic)
    assert parsed[0]["stand_in_for"] == "cifar100-train"
    tex = to_latex(table, ctx)
    assert r"neg\_test\_proxy" in tex and r"\toprule" in tex and "neg_test_proxy" not in tex
    paths = write_reports(tmp_path, table, ctx)
    assert sorted(p.suffix for p in paths.values()) == [".csv", ".md", ".tex"]
    png = scatter_plot(tmp_path / "s.png", rows, AccSpace(), ctx, table, ["fisher", "neg_test_proxy"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_archs_without_a_stored_accuracy_are_left_out_and_counted():
    from zc_proxies.errors import DataError

    class Partial(AccSpace):
        def accuracy(self, index, dataset, split):
            if split == "val" and index in (1, 2):
                raise DataError(f"no val accuracy for {index}")
            return super().accuracy(index, dataset, split)

    table = summarise(rows_for("fisher", SCORES), Partial(), {"val": "cifar10", "test": "cifar10"}, ["fisher"],
                      seed=0, n_resamples=10)
    assert (table[0].spearman.n, table[0].n_no_accuracy) == (10, 2)
    assert (table[1].spearman.n, table[1].n_no_accuracy) == (12, 0)
    assert "2 scored architectures have no stored cifar10 val accuracy" in to_markdown(table, context())


def test_nan_policy_is_one_parameter_of_summarise():
    rows = rows_for("fisher", SCORES, {3: "nan", 5: "error"})
    kw = dict(seed=0, indices=list(range(12)), n_resamples=20, top_k=(25, 50))
    omit = summarise(rows, AccSpace(), {"val": "cifar10"}, ["fisher"], **kw)[0]
    default = summarise(rows, AccSpace(), {"val": "cifar10"}, ["fisher"], seed=0, indices=list(range(12)),
                        n_resamples=20)[0]
    worst = summarise(rows, AccSpace(), {"val": "cifar10"}, ["fisher"], nan_policy="worst", **kw)[0]
    assert omit.spearman == default.spearman and omit.nan_policy == "omit"
    assert (omit.spearman.n, worst.spearman.n) == (10, 12)
    assert (worst.spearman.n_nan, worst.spearman.n_error) == (1, 1)
    assert omit.indices == frozenset(range(12)) - {3, 5} and worst.indices == frozenset(range(12))
    x = [SCORES[i] if i not in (3, 5) else -1e9 for i in range(12)]
    assert worst.spearman.statistic == pytest.approx(sps.spearmanr(x, [ACC[i] for i in range(12)]).statistic)
    assert [k for k, _ in worst.top_k] == [25.0, 50.0]
    assert "ranked last" in to_markdown([worst], context()) and "(--nan-policy omit)" in to_markdown([omit], context())
    assert "fewer than 30 architectures for fisher (n=10)" in to_markdown([omit], context())
