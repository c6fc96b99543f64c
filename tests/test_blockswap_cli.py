"""``zcbench blockswap search|params`` end to end."""

from __future__ import annotations

import json

import pytest

from zc_proxies.blockswap import Configuration
from zc_proxies.cli import main


def test_search_writes_the_winner_and_every_candidate(data_root, tmp_path, capsys):
    out, store = tmp_path / "best.json", tmp_path / "cands.jsonl"
    argv = ["blockswap", "search", "--net", "wrn-16-1", "--budget", "100k", "--samples", "3", "--seed", "1",
            "--batch-size", "8", "--data", str(data_root), "--out", str(out), "--store", str(store)]
    assert main(argv) == 0
    best = json.loads(out.read_text())
    assert {"blocks", "params", "score", "seed", "net", "num_classes"} <= set(best)
    rows = [json.loads(line) for line in store.read_text().splitlines()[1:]]  # after the settings header
    assert len(rows) == 3
    assert best["score"] == max(r["score"] for r in rows)
    assert 97_500 <= best["params"] <= 102_500
    cfg = Configuration.load(out)  # the winner file is a configuration file
    assert cfg.params == best["params"] and list(cfg.blocks) == best["blocks"]
    assert "best of 3 candidates" in capsys.readouterr().out

    assert main(argv) == 0  # rerun: everything comes from the store
    assert len(store.read_text().splitlines()) == 4
    assert json.loads(out.read_text())["blocks"] == best["blocks"]


def test_impossible_budget_is_a_clear_error(data_root, tmp_path, capsys):
    argv = ["blockswap", "search", "--net", "wrn-40-2", "--budget", "10k", "--data", str(data_root),
            "--out", str(tmp_path / "b.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "feasible range is 146,538" in err and "2,243,546" in err
    assert not (tmp_path / "b.json").exists()


def test_unknown_network_and_bad_budget(data_root, tmp_path, capsys):
    assert main(["blockswap", "search", "--net", "wrn40-2x", "--budget", "800k",
                 "--out", str(tmp_path / "b.json")]) == 2
    assert "unknown network" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["blockswap", "search", "--budget", "lots", "--out", str(tmp_path / "b.json")])
    assert "cannot read the budget 'lots'" in capsys.readouterr().err


def test_params_command(tmp_path, capsys):
    assert main(["blockswap", "params", "--net", "wrn-40-2"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["params"] == 2_243_546
    bad = tmp_path / "bad.json"
    bad.write_text('{"net": "wrn-16-1", "blocks": ["S"]}')
    assert main(["blockswap", "params", "--config", str(bad)]) == 2
    assert "has 6 blocks" in capsys.readouterr().err


def test_search_with_two_workers_stores_the_rows_of_one(data_root, tmp_path, capsys):
    def run(workers: int) -> list[dict]:
        store = tmp_path / f"w{workers}.jsonl"
        assert main(["blockswap", "search", "--net", "wrn-16-1", "--budget", "100k", "--samples", "4", "--seed", "2",
                     "--batch-size", "8", "--data", str(data_root), "--out", str(tmp_path / f"best{workers}.json"),
                     "--store", str(store), "--workers", str(workers), "--no-progress"]) == 0
        rows = [json.loads(line) for line in store.read_text().splitlines()[1:]]
        return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=lambda r: r["index"])

    assert run(2) == run(1)
    assert json.loads((tmp_path / "best1.json").read_text())["blocks"] == \
        json.loads((tmp_path / "best2.json").read_text())["blocks"]
    assert "on 2 worker(s)" in capsys.readouterr().out
