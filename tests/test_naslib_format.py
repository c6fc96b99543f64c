"""NAS-Bench-Suite-Zero (NASLib) score files in and out: keys, names, value transforms, CLI round trip."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from zc_proxies import get_space
from zc_proxies.cli import main
from zc_proxies.errors import DataError
from zc_proxies.naslib_format import (
    SENTINEL,
    from_naslib,
    naslib_value,
    our_value,
    to_naslib,
)
from zc_proxies.runs.store import ResultStore, read_store
from zc_proxies.spaces.nb201.naslib import from_naslib_key as nb201_from_naslib
from zc_proxies.spaces.nb201.naslib import to_naslib_key as nb201_to_naslib

ARCH = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def test_nb201_keys_match_every_published_pair(data_root):
    """NASLib's op tuples and the official strings, as paired in the published file (9,445 archs)."""
    ref = pd.read_csv(data_root / "nb201" / "reference_scores" / "zc_suite_zero_cifar10.csv.gz")
    for arch, key in zip(ref["arch"], ref["naslib_op_tuple"]):
        assert nb201_from_naslib(key) == arch
        assert nb201_to_naslib(arch) == key


def test_one_key_by_hand():
    # NASLib ids: 0 skip, 1 none, 2 conv3x3, 3 conv1x1, 4 pool; edges (1,2) (1,3) (1,4) (2,3) (2,4) (3,4)
    assert nb201_to_naslib(ARCH) == "(4, 3, 3, 0, 0, 0)"
    assert nb201_from_naslib((1, 2, 3, 4, 0, 2)) == \
        "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_3x3~2|"
    with pytest.raises(DataError, match="6 op ids"):
        nb201_from_naslib("(0, 1, 5, 0, 0, 0)")


def test_value_transforms():
    assert naslib_value("synflow", math.exp(42.0), "ok") == pytest.approx(42.0)
    assert naslib_value("synflow", 0.0, "ok") == 0.0
    assert naslib_value("snip", 3.5, "ok") == 3.5
    assert naslib_value("jacob_cov", None, "nan") == SENTINEL
    assert naslib_value("snip", float("inf"), "ok") == SENTINEL
    assert our_value("synflow", 42.0) == (pytest.approx(math.exp(42.0)), "ok")
    assert our_value("jacob_cov", -1e8) == (None, "nan")
    assert our_value("snip", 0.25) == (0.25, "ok")


def rows_for(seed: int = 0) -> list[dict]:
    out = []
    for arch, base in ((ARCH, 1.0), ("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|", 2.0)):
        for proxy, value, status in (("jacob_cov", -60.0 * base, "ok"), ("naswot", 700.0 + base, "ok"),
                                     ("synflow", math.exp(40.0 + base), "ok"), ("snip", None, "nan")):
            out.append({"space": "nb201", "dataset": "imagenet16-120", "index": 0, "arch": arch, "proxy": proxy,
                        "seed": seed, "score": value, "seconds": 0.5, "status": status})
    return out


def test_layout_names_and_round_trip():
    out = to_naslib(rows_for(), accuracy=lambda row: 33.0)
    assert list(out) == ["ImageNet16-120"]
    entry = out["ImageNet16-120"]["(4, 3, 3, 0, 0, 0)"]
    assert set(entry) == {"jacov", "nwot", "synflow", "snip", "val_accuracy"}
    assert entry["jacov"] == {"score": -60.0, "time": 0.5}
    assert entry["synflow"]["score"] == pytest.approx(41.0)
    assert entry["snip"]["score"] == SENTINEL
    assert entry["val_accuracy"] == 33.0
    back = from_naslib(json.loads(json.dumps(out)), "nb201", index_of=lambda arch: 0)
    by_key = {(r["arch"], r["proxy"]): r for r in back}
    for r in rows_for():
        b = by_key[(r["arch"], r["proxy"])]
        assert b["dataset"] == "imagenet16-120" and b["status"] == r["status"]
        assert b["proxy_version"] == "naslib" and b["seed"] == -1
        if r["score"] is None:
            assert b["score"] is None
        else:
            assert b["score"] == pytest.approx(r["score"], rel=1e-12)


def test_two_seeds_are_refused_and_records_need_a_dataset():
    with pytest.raises(DataError, match="one seed at a time"):
        to_naslib(rows_for(0) + rows_for(1))
    records = [{"idx": "3", "arch": "(4, 3, 3, 0, 0, 0)", "zen": {"score": 5.0, "time": 0.1}, "val_accuracy": 80.0}]
    with pytest.raises(DataError, match="--dataset"):
        from_naslib(records, "nb201")
    (row,) = from_naslib(records, "nb201", datasets=["cifar10"])
    assert (row["arch"], row["proxy"], row["score"], row["dataset"]) == (ARCH, "zen", 5.0, "cifar10")


def test_malformed_files_are_named():
    with pytest.raises(DataError, match="score"):
        from_naslib({"cifar10": {"(4, 3, 3, 0, 0, 0)": {"snip": 3.0}}}, "nb201")
    with pytest.raises(DataError, match="dict of architectures"):
        from_naslib({"cifar10": [1, 2]}, "nb201")
    with pytest.raises(DataError, match="not a tuple"):
        from_naslib({"cifar10": {"garbage": {"snip": {"score": 1, "time": 0}}}}, "nb201")


def test_cli_import_then_export_reproduces_the_file(tmp_path, data_root, capsys):
    space = get_space("nb201", data_root)
    original = {
        "cifar10": {
            "(4, 3, 3, 0, 0, 0)": {"jacov": {"score": -133.8, "time": 1.5}, "synflow": {"score": 46.36, "time": 0.2},
                                   "nwot": {"score": 738.3, "time": 0.3}, "val_accuracy": 81.9},
            "(2, 2, 0, 4, 2, 0)": {"jacov": {"score": -1e8, "time": 1.1}, "synflow": {"score": 83.04, "time": 0.2},
                                   "nwot": {"score": 782.5, "time": 0.3}, "val_accuracy": 90.4},
        }
    }
    src = tmp_path / "zc_nasbench201.json"
    src.write_text(json.dumps(original))
    assert main(["import", str(src), "--space", "nb201", "--out", str(tmp_path / "imp"), "--data", str(data_root)]) == 0
    header, rows = read_store(tmp_path / "imp" / "scores.jsonl")
    assert header["settings"]["dataset"] == "cifar10" and len(rows) == 6
    jac = {r["arch"]: r for r in rows if r["proxy"] == "jacob_cov"}
    assert jac[ARCH]["index"] == space.index_of(ARCH) and jac[ARCH]["score"] == -133.8
    assert jac[nb201_from_naslib("(2, 2, 0, 4, 2, 0)")]["status"] == "nan"
    # importing again adds nothing
    assert main(["import", str(src), "--space", "nb201", "--out", str(tmp_path / "imp"), "--data", str(data_root)]) == 0
    assert len(read_store(tmp_path / "imp" / "scores.jsonl")[1]) == 6

    out = tmp_path / "export.json"
    assert main(["export", str(tmp_path / "imp" / "scores.jsonl"), "--out", str(out), "--accuracy", "none"]) == 0
    exported = json.loads(out.read_text())
    for key, entry in original["cifar10"].items():
        for proxy, cell in entry.items():
            if proxy != "val_accuracy":
                assert exported["cifar10"][key][proxy]["score"] == pytest.approx(cell["score"], rel=1e-12)
                assert exported["cifar10"][key][proxy]["time"] == cell["time"]
    # with accuracies: auto is the first default target of nb201-cifar10, as zcbench eval resolves it: 'val',
    # the cifar10-valid network's x-valid accuracy; --accuracy test is the cifar10 network's ori-test accuracy
    assert main(["export", str(tmp_path / "imp" / "scores.jsonl"), "--out", str(out), "--data", str(data_root)]) == 0
    assert "val_accuracy: nb201-cifar10 val = cifar10-valid x-valid" in capsys.readouterr().out
    exported = json.loads(out.read_text())
    assert exported["cifar10"]["(4, 3, 3, 0, 0, 0)"]["val_accuracy"] == pytest.approx(
        space.accuracy(space.index_of(ARCH), "cifar10-valid", "val"))
    assert main(["export", str(tmp_path / "imp" / "scores.jsonl"), "--out", str(out), "--data", str(data_root),
                 "--accuracy", "test"]) == 0
    exported = json.loads(out.read_text())
    assert exported["cifar10"]["(4, 3, 3, 0, 0, 0)"]["val_accuracy"] == pytest.approx(
        space.accuracy(space.index_of(ARCH), "cifar10", "test"))


def test_cli_export_needs_one_seed(tmp_path, capsys):
    store = ResultStore(tmp_path / "scores.jsonl", {"space": "nb201", "dataset": "cifar10"})
    store.append([{**r, "index": i, "dataset": "cifar10"} for i, r in enumerate(rows_for(0) + rows_for(1))])
    assert main(["export", str(tmp_path / "scores.jsonl"), "--out", str(tmp_path / "x.json"),
                 "--accuracy", "none"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "scores.jsonl"), "--out", str(tmp_path / "x.json"), "--seed", "1",
                 "--accuracy", "none"]) == 0
    assert len(json.loads((tmp_path / "x.json").read_text())["cifar10"]) == 2
