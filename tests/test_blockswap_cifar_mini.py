"""benchmarks/blockswap_cifar_mini.py at a toy size: every arm trained, tabled, read back on a rerun."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from zc_proxies.errors import ConfigError, DataError
from zc_proxies.runs.store import read_store

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "blockswap_cifar_mini.py"
# A wrn-10-2 teacher and a wrn-10-1 baseline (8 blocks fewer than the real run's), tiny data, in this process.
TOY = ["--net", "wrn-10-2", "--baseline", "wrn-10-1", "--budget", "80k", "--samples", "3", "--seeds", "2",
       "--epochs", "1", "--train-images", "32", "--holdout", "16", "--test-images", "32", "--batch-size", "16",
       "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def bench():
    if "blockswap_cifar_mini" in sys.modules:
        return sys.modules["blockswap_cifar_mini"]
    spec = importlib.util.spec_from_file_location("blockswap_cifar_mini", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_toy_run_trains_every_arm_and_reads_back(bench, data_root, tmp_path, capsys):
    out = tmp_path / "bench"
    args = [*TOY, "--probe-images", "0", "--data", str(data_root), "--out", str(out)]
    assert bench.main(args) == 0
    header, rows = read_store(out / "runs.jsonl")
    assert header["key"] == ["arm", "seed"]
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted(
        [("teacher", 0)] + [(a, s) for a in ("blockswap", "scratch", "random", "wrn-16-1") for s in (0, 1)])
    assert all(r["status"] == "ok" and 0 <= r["test_err"] <= 100 and r["test_images"] == 32 for r in rows)
    by = {(r["arm"], r["seed"]): r for r in rows}
    winner = json.loads((out / "search" / "winner.json").read_text())
    for s in (0, 1):
        assert by[("blockswap", s)]["blocks"] == by[("scratch", s)]["blocks"] == winner["blocks"]
        assert by[("blockswap", s)]["distilled"] and not by[("scratch", s)]["distilled"]
        assert 78_000 <= by[("random", s)]["params"] <= 82_000  # the budget's +- 2.5% window
        assert by[("wrn-16-1", s)]["net"] == "wrn-10-1"
        assert (out / "runs" / f"blockswap-s{s}" / "model.pt").is_file()
    assert by[("random", 0)]["blocks"] != by[("random", 1)]["blocks"]  # one draw per seed

    with open(out / "blockswap_cifar_mini.csv") as fh:
        summary = {r["arm"]: r for r in csv.DictReader(fh)}
    assert list(summary) == ["blockswap", "scratch", "random", "wrn-16-1", "teacher"]
    assert summary["scratch"]["runs"] == "2" and summary["teacher"]["runs"] == "1"
    errs = [by[("scratch", s)]["test_err"] for s in (0, 1)]
    assert float(summary["scratch"]["test_err_mean"]) == pytest.approx(sum(errs) / 2)
    delta = [by[("scratch", s)]["test_err"] - by[("blockswap", s)]["test_err"] for s in (0, 1)]
    assert float(summary["scratch"]["delta_vs_a_mean"]) == pytest.approx(sum(delta) / 2)
    table = (out / "blockswap_cifar_mini.md").read_text()
    assert table.startswith("<!-- machine: ") and "(c) random in budget + AT" in table

    capsys.readouterr()
    assert bench.main(args) == 0  # a rerun reads every finished run back
    text = capsys.readouterr().out
    assert "teacher and scratch runs: 0 to run, 3 stored" in text and "distillations: 0 to run, 6 stored" in text
    assert read_store(out / "runs.jsonl")[1] == rows
    with pytest.raises(DataError, match="other settings"):  # another epoch count is another experiment
        bench.main([*args, "--epochs", "2"])


def test_estimate_only_probes_and_stores_nothing(bench, data_root, tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench.main([*TOY, "--probe-images", "16", "--estimate-only", "--data", str(data_root),
                       "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "estimate on idle cores (CPU time):" in text and "one hour allows about" in text
    assert not out.exists()


def test_options_are_checked_before_anything_runs(bench, data_root, tmp_path):
    base = ["--data", str(data_root), "--out", str(tmp_path / "x"), "--probe-images", "0"]
    for bad, match in ((["--seeds", "0"], "--seeds"), (["--seeds", "1,1"], "--seeds"),
                       (["--test-images", "some"], "--test-images"), (["--budget", "lots"], "--budget"),
                       (["--net", "resnet-34"], "WRN")):
        with pytest.raises(ConfigError, match=match):
            bench.main([*base, *bad])
    assert not (tmp_path / "x").exists()


def test_parse_seeds_and_makespan(bench):
    assert bench.parse_seeds("3") == [0, 1, 2]
    assert bench.parse_seeds("4,7") == [4, 7] and bench.parse_seeds("7,") == [7]
    assert bench.makespan([10, 3, 3, 3], 2) == 10  # the runner hands each task to the first free worker
    assert bench.makespan([3, 3, 3, 10], 2) == 13
    assert bench.makespan([5], 4) == 5 and bench.makespan([], 2) == 0
