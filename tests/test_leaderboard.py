"""``zcbench report``: one leaderboard across result stores, checked against scipy and by hand.

A tiny registered space (``lb-test``, 40 architectures, accuracies by formula)
and stores written here, the way ``zcbench eval`` (``open_store``) and
``zcbench import`` write theirs.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import warnings

import numpy as np
import pytest
from accuracy_space import AccuracyOnlySpace
from scipy import stats as sps

from zc_proxies.commands import report as report_command
from zc_proxies.errors import DataError, guarded
from zc_proxies.leaderboard import build_leaderboard, parse_top_k, to_csv, to_latex, to_markdown, write_leaderboard
from zc_proxies.proxies import register_proxy
from zc_proxies.proxies.base import PROXIES
from zc_proxies.runs.store import SEEDING, ResultStore
from zc_proxies.spaces import SPACES, register_space
from zc_proxies.stats import DifferentArchitecturesWarning, SmallSampleWarning

N = 40
SPACE = "lb-test"
SPEC = "lb-test-cifar10"


def val_acc(i: int) -> float:
    return 50.0 + 0.5 * i  # best: arch 39 (69.5)


def tst_acc(i: int) -> float:
    return 60.0 + 0.5 * ((i * 7) % N)  # another order than val


class LbSpace(AccuracyOnlySpace):
    name = SPACE
    size = N

    def accuracy(self, index, dataset, split):
        self.check_dataset(dataset)
        self.check_split(split)
        return val_acc(index) if split == "val" else tst_acc(index)


if SPACE not in SPACES:
    register_space(SPACE, datasets=("cifar10",))(lambda data_root, **options: LbSpace())

@pytest.fixture(autouse=True, scope="module")
def _lb_neg_proxy():
    """A lower-is-better proxy for this module only (registered at import, it would join other modules' lists)."""
    register_proxy("lb_neg", needs_labels=False, needs_grad=False, higher_is_better=False, version="3")(
        lambda ctx: 0.0)
    yield
    PROXIES.remove("lb_neg")


def settings(batch_size=64, **kw):
    """Like :func:`zc_proxies.runs.evaluation.store_settings`."""
    base = {"space": SPACE, "dataset": "cifar10", "num_classes": 10, "batch_size": batch_size, "augment": True,
            "sampling": "uniform", "seeding": SEEDING, "data_source": "cifar10-train", "stand_in_for": None,
            "transform": "centre crop"}
    base.update(kw)
    return base


def imported_settings():
    """Like :func:`zc_proxies.runs.interchange.import_settings`: NASLib does not record the minibatch."""
    return {"space": SPACE, "dataset": "cifar10", "num_classes": 10, "batch_size": None, "augment": None,
            "data_source": "naslib-import", "stand_in_for": None}


def row(i, proxy, score, status="ok", seed=0, version="1"):
    return {"space": SPACE, "dataset": "cifar10", "index": i, "arch": f"a{i}", "proxy": proxy,
            "proxy_version": version, "seed": seed, "status": status, "seconds": 0.01,
            "score": score if status == "ok" else None, "message": None if status == "ok" else "boom"}


# fisher: perfect on val; snip: reversed; grad_norm: archs 37-39 tied at the top; lb_neg (lower is better):
# perfect but NaN on arch 39 (the best) and failed on arch 38.
SCORES = {
    "fisher": {i: float(i) for i in range(N)},
    "snip": {i: float(-i) for i in range(N)},
    "grad_norm": {i: float(min(i, 37)) for i in range(N)},
    "lb_neg": {i: float(39 - i) for i in range(N)},
}
STATUS = {("lb_neg", 39): "nan", ("lb_neg", 38): "error"}


def all_rows(indices=range(N), seed=0, version="1", proxies=tuple(SCORES)):
    return [row(i, p, SCORES[p][i], STATUS.get((p, i), "ok"), seed, "3" if p == "lb_neg" else version)
            for i in indices for p in proxies]


def write(path, rows, sets=None, key=("index", "proxy", "seed"), info=None):
    info = {"spec": SPEC, "targets": {"val": "cifar10", "test": "cifar10"}, **(info or {})}
    with ResultStore(path, sets or settings(), key=key, info=info) as store:
        store.append(rows)
    return path


def board_of(paths, **kw):
    kw.setdefault("n_resamples", 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_leaderboard([str(p) for p in paths], **kw)


def by(board, proxy, split, run=None):
    for b in board.blocks:
        if b.split == split and (run is None or b.run.label == run):
            for rank, r in enumerate(b.rows, start=1):
                if r.proxy == proxy:
                    return rank, r
    raise KeyError((proxy, split, run))


def oriented(proxy, indices, worst=False):
    """Independent orientation: lower-is-better negated; NaN/failed -> a value below every other one."""
    sign = -1.0 if proxy == "lb_neg" else 1.0
    out = []
    for i in indices:
        bad = STATUS.get((proxy, i)) is not None
        out.append(-1e9 if bad else sign * SCORES[proxy][i])
    return np.array(out) if worst else np.array([v for v, i in zip(out, indices) if STATUS.get((proxy, i)) is None])


# -- values ---------------------------------------------------------------------------------------------------
def test_values_equal_scipy_and_rows_are_sorted_by_abs_rho(tmp_path):
    board = board_of([write(tmp_path / "scores.jsonl", all_rows())], top_k="5,10,20")
    assert [b.title for b in board.blocks] == [f"{SPEC}: val (cifar10)", f"{SPEC}: test (cifar10)"]
    for block in board.blocks:
        acc = val_acc if block.split == "val" else tst_acc
        for r in block.rows:
            kept = [i for i in range(N) if STATUS.get((r.proxy, i)) is None]
            x, y = oriented(r.proxy, kept), [acc(i) for i in kept]
            assert r.spearman.statistic == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
            assert r.kendall.statistic == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
            assert r.spearman.pvalue == pytest.approx(sps.spearmanr(x, y).pvalue, rel=1e-9, abs=1e-300)
            assert r.spearman.n == len(kept) and r.spearman.ci_low <= r.spearman.ci_high
        rhos = [abs(r.spearman.statistic) for r in block.rows]
        assert rhos == sorted(rhos, reverse=True)
    # reversed snip has rho -1, |rho| 1: it shares the top of the val block with the perfect ones
    assert by(board, "snip", "val")[1].spearman.statistic == pytest.approx(-1.0)
    assert by(board, "snip", "val")[0] <= 3
    _, neg = by(board, "lb_neg", "val")
    assert (neg.spearman.n, neg.spearman.n_nan, neg.spearman.n_error) == (38, 1, 1)
    assert neg.spearman.statistic == pytest.approx(1.0) and not neg.higher_is_better


def test_top_k_and_regret_by_hand(tmp_path):
    board = board_of([write(tmp_path / "scores.jsonl", all_rows())], top_k="5,10,20")
    assert board.top_k == (5.0, 10.0, 20.0)
    # val accuracies 50 + 0.5 i: best arch 39 (69.5). n = 40: k = 2, 4, 8 architectures.
    _, fisher = by(board, "fisher", "val")
    assert dict(fisher.top_k) == {5.0: 1.0, 10.0: 1.0, 20.0: 1.0} and fisher.regret == 0.0
    _, snip = by(board, "snip", "val")  # picks arch 0 (50.0)
    assert dict(snip.top_k) == {5.0: 0.0, 10.0: 0.0, 20.0: 0.0} and snip.regret == pytest.approx(19.5)
    _, tied = by(board, "grad_norm", "val")
    # 37, 38, 39 tied at the top: regret counts their mean accuracy, 69.5 - (68.5 + 69 + 69.5) / 3 = 0.5;
    # top-5% (k = 2) breaks the tie by index: proxy {37, 38} vs truth {39, 38} -> 1/2
    assert tied.regret == pytest.approx(0.5)
    assert dict(tied.top_k)[5.0] == 0.5 and dict(tied.top_k)[10.0] == 1.0
    _, neg = by(board, "lb_neg", "val")  # omit: archs 38, 39 not in the sample: its best is 37 and it picks 37
    assert neg.regret == 0.0 and dict(neg.top_k)[5.0] == 1.0  # n = 38: k = round(1.9) = 2


def test_nan_policy_worst_ranks_nan_last_and_omit_warns_of_different_sets(tmp_path):
    path = write(tmp_path / "scores.jsonl", all_rows())
    with pytest.warns(DifferentArchitecturesWarning) as caught:
        omit = build_leaderboard([str(path)], n_resamples=20, nan_policy="omit")
    assert sorted(str(w.message).split(":")[1].strip() for w in caught) == ["test (cifar10)", "val (cifar10)"]
    assert all("correlated on different architecture sets (n from 38 to 40, 38 architectures common" in
               str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DifferentArchitecturesWarning)  # every proxy on the same 40
        worst = build_leaderboard([str(path)], n_resamples=20, nan_policy="worst")
    assert any("different architecture sets" in n for n in omit.notes())
    assert not any("different architecture sets" in n for n in worst.notes())
    assert any("given the worst score (ranked last" in n for n in worst.notes())
    assert any("left out because the proxy gave NaN/inf or raised (--nan-policy omit)" in n for n in omit.notes())
    _, o = by(omit, "lb_neg", "val")
    _, w = by(worst, "lb_neg", "val")
    assert (o.spearman.n, w.spearman.n) == (38, 40)
    assert (w.spearman.n_nan, w.spearman.n_error, w.nan_policy, w.spearman.nan_policy) == (1, 1, "worst", "worst")
    x = oriented("lb_neg", range(N), worst=True)
    for split, acc in (("val", val_acc), ("test", tst_acc)):
        _, w = by(worst, "lb_neg", split)
        y = [acc(i) for i in range(N)]
        assert w.spearman.statistic == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
        assert w.kendall.statistic == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
    _, w = by(worst, "lb_neg", "val")
    assert w.spearman.statistic < 1.0 == o.spearman.statistic
    # worst: the best arch (39, NaN) is in the sample but never picked: picks 37 -> regret 69.5 - 68.5
    assert w.regret == pytest.approx(1.0)
    assert dict(w.top_k)[5.0] == 0.0 and dict(w.top_k)[10.0] == 0.5  # proxy {37,36,(35,34)} vs truth {39,38,..}
    # proxies without NaN are the same under both policies
    assert by(worst, "fisher", "test")[1].spearman.statistic == by(omit, "fisher", "test")[1].spearman.statistic
    assert "NaN policy: worst" in to_markdown(worst) and "NaN policy: omit" in to_markdown(omit)


def test_fewer_than_30_architectures_warn(tmp_path):
    path = write(tmp_path / "scores.jsonl", all_rows(range(10), proxies=("fisher", "snip")))
    with pytest.warns(SmallSampleWarning, match=r"fewer than 30 architectures for fisher \(n=10\), snip \(n=10\)"):
        board = build_leaderboard([str(path)], n_resamples=10)
    assert any("intervals and top-k overlaps of so few architectures mean little" in n for n in board.notes())
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallSampleWarning)
        build_leaderboard([str(write(tmp_path / "big" / "scores.jsonl", all_rows(proxies=("fisher",))))],
                          n_resamples=10)


# -- grouping -------------------------------------------------------------------------------------------------
def test_shards_are_pooled_and_other_settings_stay_apart(tmp_path):
    rows = all_rows(proxies=("fisher", "snip"))
    half = len(rows) // 2
    write(tmp_path / "run" / "scores.shard-000-of-002.jsonl", rows[:half], info={"shard": [0, 2]})
    write(tmp_path / "run" / "scores.shard-001-of-002.jsonl", rows[half:], info={"shard": [1, 2]})
    write(tmp_path / "big" / "scores.jsonl", all_rows(proxies=("fisher",)), sets=settings(256))
    board = board_of([tmp_path])  # folders are searched recursively
    assert sorted(r.label for r in board.runs) == [f"{SPEC} [batch 256]", f"{SPEC} [batch 64]"]
    assert sorted(len(r.experiment.stores) for r in board.runs) == [1, 2]
    assert by(board, "fisher", "val", f"{SPEC} [batch 64]")[1].spearman.n == N  # both shards, pooled
    assert by(board, "snip", "val", f"{SPEC} [batch 64]")[1].spearman.n == N
    assert by(board, "fisher", "val", f"{SPEC} [batch 256]")[1].spearman.n == N
    assert any("2 stores pooled" in n for n in board.notes())
    # half the shards: a note says so
    lone = board_of([tmp_path / "run" / "scores.shard-000-of-002.jsonl"])
    assert any("incomplete: shard 1 of 2 of the run missing" in n for n in lone.notes())


def test_stores_of_one_experiment_with_different_results_are_refused(tmp_path):
    a = write(tmp_path / "a" / "scores.jsonl", all_rows(range(5), proxies=("fisher",)))
    bad = all_rows(range(5), proxies=("fisher",))
    bad[0]["score"] = 123.0
    b = write(tmp_path / "b" / "scores.jsonl", bad)
    with pytest.raises(DataError, match="has two different results"):
        board_of([a, b])


def test_imported_store_and_seeds(tmp_path):
    imported = write(tmp_path / "naslib" / "scores.jsonl",
                     [dict(r, batch_size=None) for r in all_rows(seed=-1, version="naslib",
                                                                 proxies=("fisher", "snip"))],
                     sets=imported_settings(), info={"imported_from": "zc_nasbench201.json"})
    own = write(tmp_path / "own" / "scores.jsonl", all_rows(proxies=("fisher",)) + all_rows(seed=1,
                                                                                           proxies=("fisher",)))
    board = board_of([imported])
    assert [r.label for r in board.runs] == [SPEC]
    assert any("scores from naslib-import, minibatch not recorded" in n for n in board.notes())
    assert by(board, "fisher", "val")[1].spearman.statistic == pytest.approx(1.0)
    both = board_of([imported, own])
    labels = [r.label for r in both.runs]
    assert len(labels) == 3 and len(set(labels)) == 3
    assert any("batch n/a" in label and "data naslib-import" in label and "seed -1" in label for label in labels)
    assert any("batch 64" in label and "seed 1" in label for label in labels)
    rows = list(csv.DictReader(io.StringIO(to_csv(both))))
    assert {r["batch_size"] for r in rows} == {"", "64"}
    one = board_of([imported, own], seed=1)
    assert [r.seed for r in one.runs] == [1] and any("no rows of --seed 1" in n for n in one.skipped)


def test_candidate_stores_are_skipped_with_a_note(tmp_path):
    write(tmp_path / "scores.jsonl", all_rows(proxies=("fisher",)))
    cands = [{"index": i, "status": "ok", "score": float(i), "blocks": [i]} for i in range(3)]
    write(tmp_path / "search" / "scores.jsonl", cands, sets={"search": "blockswap"}, key=("index",))
    board = board_of([tmp_path])
    assert len(board.runs) == 1
    assert any("BlockSwap search candidates" in s and "search" in s for s in board.skipped)
    with pytest.raises(DataError, match="none of the stores holds proxy scores"):
        board_of([tmp_path / "search"])


# -- files and the command ------------------------------------------------------------------------------------
def run_cli(argv):
    parser = argparse.ArgumentParser(prog="zcbench")
    sub = parser.add_subparsers(dest="command")
    report_command.add_parser(sub)
    args = parser.parse_args(["report", *argv])
    return guarded("zcbench report", lambda: args.func(args))


def test_command_writes_csv_markdown_latex_and_bar_charts(tmp_path, capsys):
    write(tmp_path / "runs" / "scores.jsonl", all_rows())
    write(tmp_path / "runs" / "search" / "scores.jsonl", [{"index": 0, "status": "ok", "score": 1.0}],
          sets={"search": "blockswap"}, key=("index",))
    out = tmp_path / "out"
    assert run_cli([str(tmp_path / "runs"), "--out", str(out), "--bootstrap", "20", "--top-k", "5,10,20",
                    "--nan-policy", "worst"]) == 0
    captured = capsys.readouterr()
    assert "BlockSwap search candidates" in captured.err
    assert "NaN policy: worst" in captured.out and f"== {SPEC}: val (cifar10)" in captured.out
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert len(rows) == 2 * len(SCORES)
    assert {"top5_overlap", "top10_overlap", "top20_overlap", "regret", "spearman_ci_low", "kendall_ci_high",
            "nan_policy", "rank"} <= set(rows[0])
    assert {r["nan_policy"] for r in rows} == {"worst"}
    val = [r for r in rows if r["split"] == "val"]
    assert [int(r["rank"]) for r in val] == list(range(1, len(SCORES) + 1))
    assert [abs(float(r["spearman"])) for r in val] == sorted((abs(float(r["spearman"])) for r in val), reverse=True)

    md = (out / "leaderboard.md").read_text().splitlines()
    table = [line for line in md if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in table]
    assert cells[0][:3] == ["space / target", "#", "proxy"] and cells[0][-1] == "regret"
    assert all(len(c) == len(cells[0]) for c in cells[2:]) and len(cells) == 2 + 2 * len(SCORES)
    assert any("NaN policy: worst" in line for line in md)

    tex = (out / "leaderboard.tex").read_text()
    first = tex.splitlines()[0]
    assert first.startswith("%") and "no booktabs" in tex.splitlines()[1]
    assert "\\toprule" not in tex and tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    body = tex[tex.index("\\begin{tabular}"):tex.index("\\end{tabular}")]
    ncols = len(tex.split("\\begin{tabular}{")[1].split("}")[0])
    data = [line for line in body.splitlines() if line.endswith("\\\\") and "multicolumn" not in line]
    assert len(data) == 1 + 2 * len(SCORES) and all(line.count(" & ") == ncols - 1 for line in data)
    assert "lb\\_neg" in tex and "lb_neg" not in tex

    bars = sorted(out.glob("leaderboard-bars-*.png"))
    assert len(bars) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in bars)
    assert (out / f"leaderboard-scatter-{SPEC}.png").is_file()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_command_refuses_bad_options(tmp_path, capsys):
    path = write(tmp_path / "scores.jsonl", all_rows(range(4), proxies=("fisher",)))
    assert run_cli([str(path), "--out", str(tmp_path / "o"), "--top-k", "5,abc"]) == 2
    assert "--top-k takes percents" in capsys.readouterr().err
    assert run_cli([str(path), "--out", str(tmp_path / "o"), "--top-k", "0"]) == 2
    assert "not a percent in (0, 100]" in capsys.readouterr().err
    assert run_cli([str(tmp_path / "nothing-here")]) == 2
    assert "no result store" in capsys.readouterr().err
    assert parse_top_k("5, 10,10") == (5.0, 10.0)


def test_writers_agree_with_the_table(tmp_path):
    board = board_of([write(tmp_path / "scores.jsonl", all_rows())], top_k=(10,))
    paths = write_leaderboard(tmp_path / "o", board, plot=False)
    assert sorted(paths) == ["csv", "md", "tex"]
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    for r in rows:
        rank, want = by(board, r["proxy"], r["split"])
        assert int(r["rank"]) == rank and int(r["n"]) == want.spearman.n
        assert float(r["spearman"]) == pytest.approx(want.spearman.statistic)
        assert float(r["spearman_ci_low"]) == pytest.approx(want.spearman.ci_low)
        assert float(r["top10_overlap"]) == pytest.approx(want.top10_overlap)
        assert (math.isnan(want.regret) and r["regret"] == "nan") or float(r["regret"]) == pytest.approx(want.regret)
    assert "Top-10%" in to_latex(board).replace("\\%", "%")


def test_the_targets_the_stores_record_are_correlated_pooled(tmp_path):
    rows = all_rows(proxies=("fisher",))
    only_val = write(tmp_path / "a" / "scores.jsonl", rows[:20], info={"targets": {"val": "cifar10"}})
    assert [b.split for b in board_of([only_val]).blocks] == ["val"]
    write(tmp_path / "b" / "scores.jsonl", rows[20:], info={"targets": {"test": "cifar10"}})
    board = board_of([tmp_path])
    assert len(board.runs) == 1 and [b.split for b in board.blocks] == ["val", "test"]
    assert [b.rows[0].spearman.n for b in board.blocks] == [N, N]
