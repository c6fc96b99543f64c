"""``zcbench eval`` and ``zcbench merge`` end to end on small NAS-Bench-201 samples, and their errors."""

from __future__ import annotations

import csv
import json

import pytest

from zc_proxies.cli import main
from zc_proxies.runs.layout import apply_layout
from zc_proxies.spaces import get_space
from zc_proxies.spaces.spec import resolve_spec, split_spec

FAST = ["--batch-size", "16", "--threads", "1", "--bootstrap", "50", "--quiet"]


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def store_rows(path):
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


def test_eval_end_to_end_and_resume(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    args = ["eval", "--proxy", "fisher", "--space", "nb201-cifar10", "--sample", "6", "--seed", "1",
            "--out", str(out), "--data", str(data_root)] + FAST
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "fisher  val (cifar10-valid)" in printed.out and "test (cifar10)" in printed.out
    assert "6 architectures of nb201-cifar10" in printed.err
    for name in ("scores.jsonl", "correlations.csv", "correlations.md", "correlations.tex", "scatter.png"):
        assert (out / name).is_file(), name
    rows = store_rows(out / "scores.jsonl")
    assert len(rows) == 6 and len({r["index"] for r in rows}) == 6
    assert all(r["status"] == "ok" and r["batch_size"] == 16 and r["dataset"] == "cifar10" for r in rows)
    table = read_csv(out / "correlations.csv")
    assert [(r["proxy"], r["split"], r["target"]) for r in table] == [("fisher", "val", "cifar10-valid"),
                                                                       ("fisher", "test", "cifar10")]
    assert table[0]["n"] == "6" and table[0]["n_nan"] == "0" and table[0]["n_error"] == "0"
    # The printed Spearman is the one scipy gives on the stored scores and the table's accuracies.
    from scipy.stats import spearmanr

    space = get_space("nb201", data_root)
    want = spearmanr([r["score"] for r in rows],
                     [space.accuracy(r["index"], "cifar10-valid", "val") for r in rows]).statistic
    assert float(table[0]["spearman"]) == pytest.approx(want)

    # Rerun: nothing recomputed, same table.
    before = (out / "scores.jsonl").read_bytes()
    assert main(args) == 0
    assert "6 architectures were already in the store (resumed)" in capsys.readouterr().err
    assert (out / "scores.jsonl").read_bytes() == before
    assert read_csv(out / "correlations.csv") == table

    # Other settings into the same folder: refused, naming the setting.
    bad = [a if a != "16" else "8" for a in args]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "written under other settings" in err and "batch_size: stored 16, now 8" in err


def test_several_proxies_and_shards_then_merge(tmp_path, data_root, capsys):
    base = ["eval", "--proxy", "fisher,fisher_potential", "--space", "nb201-cifar10", "--sample", "4",
            "--data", str(data_root), "--no-plot"] + FAST
    for i in range(2):
        assert main(base + ["--out", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"]) == 0
    capsys.readouterr()
    s0 = tmp_path / "s0" / "scores.shard-000-of-002.jsonl"
    assert s0.is_file() and (tmp_path / "s0" / "correlations.shard-000-of-002.csv").is_file()
    rows0 = store_rows(s0)
    assert len(rows0) == 4 and {r["proxy"] for r in rows0} == {"fisher", "fisher_potential"}
    assert all(r["n_scored_together"] == 2 for r in rows0)  # one score() call per arch
    merged = tmp_path / "merged"
    # a shard store named twice (as a folder and as a file) is read once
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), str(s0), "--out", str(merged),
                 "--data", str(data_root), "--bootstrap", "20", "--no-plot"]) == 0
    assert "2 stores -> " in (err := capsys.readouterr().err) and "8 rows (0 duplicates dropped)" in err
    table = read_csv(merged / "correlations.csv")
    assert {(r["proxy"], r["split"], r["n"]) for r in table} == {
        ("fisher", "val", "4"), ("fisher", "test", "4"), ("fisher_potential", "val", "4"),
        ("fisher_potential", "test", "4")}
    # one unsharded run gives the same scores as the shards
    assert main(base + ["--out", str(tmp_path / "whole"), "--proxy", "fisher"]) == 0
    whole = {r["index"]: r["score"] for r in store_rows(tmp_path / "whole" / "scores.jsonl")}
    sharded = {r["index"]: r["score"] for r in store_rows(merged / "scores.jsonl") if r["proxy"] == "fisher"}
    assert whole == sharded


def test_stand_in_is_announced_recorded_and_footnoted(tmp_path, data_root, capsys):
    out = tmp_path / "c100"
    assert main(["eval", "--space", "nb201-cifar100", "--sample", "3", "--out", str(out), "--data", str(data_root),
                 "--no-plot"] + FAST) == 0
    captured = capsys.readouterr()
    assert "warning: stand-in minibatch data" in captured.err and "STAND-IN DATA" in captured.out
    rows = store_rows(out / "scores.jsonl")
    assert all(r["stand_in_for"] == "cifar100-train" and r["data_source"] == "cifar10-train" for r in rows)
    assert "STAND-IN DATA: cifar10-train images stand in for cifar100-train" in (out / "correlations.md").read_text()
    assert read_csv(out / "correlations.csv")[0]["target"] == "cifar100"


def test_balanced_batch_is_used_stored_and_footnoted(tmp_path, data_root, capsys):
    import torch

    from zc_proxies import score
    from zc_proxies.data import load_cifar, minibatch

    out = tmp_path / "bal"
    args = ["eval", "--proxy", "epe_nas", "--space", "nb201-cifar10", "--sample", "3", "--balanced-batch",
            "--out", str(out), "--data", str(data_root), "--no-plot"] + FAST
    assert main(args) == 0
    assert "one class-balanced minibatch of 16" in capsys.readouterr().out
    header = json.loads((out / "scores.jsonl").read_text().splitlines()[0])
    assert header["settings"]["sampling"] == "balanced"
    assert "class-balanced minibatch" in (out / "correlations.md").read_text()
    # The stored score is epe_nas on the balanced batch of the row's seed, on the network built under that seed.
    row = store_rows(out / "scores.jsonl")[0]
    space = get_space("nb201", data_root)
    x, y = minibatch(load_cifar(data_root, 10, "train"), 16, row["arch_seed"], sampling="balanced")
    assert sorted(torch.bincount(y, minlength=10).tolist()) == [1] * 4 + [2] * 6
    torch.manual_seed(row["arch_seed"])
    model = space.build(space[row["index"]], 10)
    assert row["layout"] == "nhwc"  # NB201's CPU layout (zc_proxies.runs.layout)
    model, x = apply_layout(model, x, row["layout"])
    assert score(model, (x, y), proxy="epe_nas") == pytest.approx(row["score"], rel=1e-9)
    # The same folder without --balanced-batch is refused, naming the setting.
    assert main([a for a in args if a != "--balanced-batch"]) == 2
    assert "sampling: stored 'balanced', now 'uniform'" in capsys.readouterr().err


def test_space_spec_parsing(data_root):
    assert split_spec("nb201-cifar10", ["nb201", "nds-darts"]) == ("nb201", "cifar10")
    assert split_spec("nds-darts", ["nb201", "nds", "nds-darts"]) == ("nds-darts", None)
    space = get_space("nb201", data_root)
    spec = resolve_spec("nb201-cifar10", space, "cifar10")
    assert spec.dataset == "cifar10" and spec.target_map == {"val": "cifar10-valid", "test": "cifar10"}
    assert resolve_spec("nb201-imagenet16", space, "imagenet16").dataset == "imagenet16-120"
    assert resolve_spec("nb201-cifar100", space, "cifar100").target_map == {"val": "cifar100", "test": "cifar100"}
    assert resolve_spec("nb201-cifar10-valid", space, "cifar10-valid").target_map == {"val": "cifar10-valid"}


@pytest.mark.parametrize("argv,message", [
    (["--space", "nb202-cifar10"], "unknown space 'nb202-cifar10'; did you mean 'nb201-cifar10'"),
    (["--space", "nb201-cifar1000"], "space 'nb201' has no dataset 'cifar1000'; did you mean 'nb201-cifar100'"),
    (["--space", "nb201"], "space 'nb201' has several datasets; name one, e.g. nb201-cifar10"),
    (["--space", "nb201-cifar10", "--proxy", "fishr"], "unknown proxy 'fishr'; did you mean 'fisher'"),
    (["--space", "nb201-cifar10", "--sample", "0"], "--sample must be a positive integer, got 0"),
    (["--space", "nb201-cifar10", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--space", "nb201-cifar10", "--shard", "3/2"], "need 0 <= i < N"),
])
def test_clear_errors(tmp_path, data_root, capsys, argv, message):
    assert main(["eval", "--out", str(tmp_path), "--data", str(data_root)] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_data_root_is_named(tmp_path, capsys):
    assert main(["eval", "--space", "nb201-cifar10", "--data", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_all_proxies_on_a_user_registered_space(tmp_path, data_root, capsys):
    """--import registers a user's space (also in workers); --proxy all scores every proxy once per arch."""
    from zc_proxies.proxies import list_proxies

    archs = tmp_path / "archs.txt"
    archs.write_text("0\n3\n4\n7\n")  # 4 gives NaN, 7 cannot be built (see test_evaluate.TinySpace)
    out = tmp_path / "all"
    assert main(["eval", "--import", "test_evaluate", "--space", "tiny-test", "--proxy", "all", "--archs",
                 str(archs), "--out", str(out), "--data", str(data_root), "--batch-size", "8", "--bootstrap", "20",
                 "--quiet", "--no-plot"]) == 0
    capsys.readouterr()
    rows = store_rows(out / "scores.jsonl")
    names = list_proxies()
    assert len(rows) == 4 * len(names) and {r["proxy"] for r in rows} == set(names)
    assert all(r["status"] == "error" and "cannot be built" in r["message"] for r in rows if r["index"] == 7)
    assert any(r["status"] == "nan" for r in rows if r["index"] == 4)
    table = read_csv(out / "correlations.csv")
    from zc_proxies.proxies import get_proxy
    from zc_proxies.proxies.population import component_names

    shown = set(names) | {c for n in names for c in component_names(get_proxy(n).spec)}  # components too
    assert {r["proxy"] for r in table} == shown and len(table) == 2 * len(shown)
    for r in table:
        assert int(r["n"]) + int(r["n_nan"]) + int(r["n_error"]) == 4 and int(r["n_error"]) >= 1
