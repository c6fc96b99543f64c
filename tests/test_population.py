"""Population proxies: components stored per architecture, the declared aggregation applied at report time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import test_evaluate  # noqa: F401  (registers the tiny-test space)
import torch
from scipy.stats import rankdata, spearmanr
from torch import nn

from zc_proxies import score
from zc_proxies.cli import main
from zc_proxies.proxies import register_proxy
from zc_proxies.proxies.base import PROXIES, Component, spec_of
from zc_proxies.proxies.population import aggregate, log_rank_sum, rank_sum, with_population_scores

NAME = "toy_pop"


def _toy(ctx) -> dict[str, float]:
    """Two components: the parameter count (higher better) and the first weight's mean (lower better)."""
    params = float(sum(p.numel() for p in ctx.model.parameters()))
    first = next(p for p in ctx.model.parameters())
    return {"size": params, "bias": float(first.detach().mean())}


@pytest.fixture(autouse=True, scope="module")
def _toy_proxy():
    register_proxy(NAME, needs_labels=False, needs_grad=False, version="1",
                   components=("size", Component("bias", higher_is_better=False)), aggregate="rank_sum")(_toy)
    yield
    PROXIES.remove(NAME)


def test_the_aggregations_by_hand():
    oriented = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 9.0]])
    assert rank_sum(oriented).tolist() == [1 + 1.5, 3 + 1.5, 2 + 3]
    assert np.allclose(log_rank_sum(oriented), [np.log(1 / 3) + np.log(1.5 / 3), np.log(1) + np.log(1.5 / 3),
                                                np.log(2 / 3) + np.log(1)])


def test_score_gives_the_components_and_a_spec_names_them():
    net = nn.Conv2d(3, 4, 3)
    out = score(net, torch.randn(2, 3, 8, 8), NAME)
    assert set(out) == {"size", "bias"} and out["size"] == 3 * 4 * 9 + 4
    assert spec_of(f"{NAME}[bias]").higher_is_better is False and spec_of(NAME).population
    with pytest.raises(Exception, match="has no component 'nope'"):
        spec_of(f"{NAME}[nope]")


def test_rows_get_population_scores_and_component_rows():
    rows = [{"proxy": NAME, "seed": 0, "index": i, "status": "ok", "score": None,
             "components": {"size": float(s), "bias": float(b)}}
            for i, (s, b) in enumerate([(10, 0.5), (30, 0.1), (20, 0.9), (40, 0.2)])]
    rows.append({"proxy": NAME, "seed": 0, "index": 9, "status": "error", "score": None, "message": "boom"})
    out, proxies, population = with_population_scores(rows, [NAME, "fisher"], seed=0)
    assert proxies == [NAME, f"{NAME}[size]", f"{NAME}[bias]", "fisher"] and population == [NAME]
    scores = {r["index"]: r["score"] for r in out if r["proxy"] == NAME}
    want = rankdata([10, 30, 20, 40]) + rankdata([-0.5, -0.1, -0.9, -0.2])
    assert [scores[i] for i in range(4)] == want.tolist() and scores[9] is None
    assert {r["index"]: r["score"] for r in out if r["proxy"] == f"{NAME}[bias]"} == {
        0: 0.5, 1: 0.1, 2: 0.9, 3: 0.2, 9: None}
    # the population is the architectures reported: another subset gives other scores
    sub, _, _ = with_population_scores(rows, [NAME], seed=0, indices=[0, 1])
    assert [r["score"] for r in sub if r["proxy"] == NAME and r["index"] in (0, 1)] == [2.0, 4.0]
    assert aggregate(spec_of(NAME), [{"size": 1.0, "bias": 0.0}]).tolist() == [2.0]


def test_eval_stores_components_and_reports_aggregate_and_components(tmp_path, data_root, capsys):
    out = tmp_path / "pop"
    argv = ["eval", "--import", "test_evaluate", "--space", "tiny-test", "--proxy", f"{NAME},params", "--archs",
            str(_archs(tmp_path)), "--out", str(out), "--data", str(data_root), "--batch-size", "8",
            "--bootstrap", "20", "--no-plot", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"{NAME}[size]" in text and f"{NAME}[bias]" in text and "Population-relative: toy_pop" in text
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()[1:]]
    mine = [r for r in rows if r["proxy"] == NAME]
    assert len(mine) == 5 and all(r["score"] is None and set(r["components"]) == {"size", "bias"} for r in mine)
    table = {(r["proxy"], r["split"]): r for r in _csv(out / "correlations.csv")}
    from test_evaluate import TinySpace

    space = TinySpace()
    idx = sorted(r["index"] for r in mine)
    agg = rankdata([r["components"]["size"] for r in sorted(mine, key=lambda r: r["index"])]) + rankdata(
        [-r["components"]["bias"] for r in sorted(mine, key=lambda r: r["index"])])
    want = spearmanr(agg, [space.accuracy(i, "cifar10", "val") for i in idx]).statistic
    assert float(table[(NAME, "val")]["spearman"]) == pytest.approx(want)
    assert main(argv) == 0  # resumes: everything is stored
    assert "5 architectures were already in the store" in capsys.readouterr().err


def _archs(tmp_path):
    path = tmp_path / "archs.txt"
    path.write_text("0\n1\n2\n3\n5\n")
    return path


def _csv(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
