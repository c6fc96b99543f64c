"""Named accuracy targets per space (``--target``, ``export --accuracy``), ``--source`` on the command line,
and what a rerun's tables cover.

Values are spot-checked against the raw files under ``$ZCBENCH_DATA``; the
official-layout files (``.pth``, ``.tfrecord``) are tiny fixtures written here
with the other tests' helpers. Nothing derived from the data is written outside
``tmp_path``.
"""

from __future__ import annotations

import csv
import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from zc_proxies.cli import main
from zc_proxies.errors import DataError, MissingDataError, UnknownNameError
from zc_proxies.runs.store import ResultStore
from zc_proxies.spaces import get_space
from zc_proxies.spaces.spec import open_spec, parse_targets, resolve_spec

FAST = ["--batch-size", "8", "--no-plot", "--bootstrap", "20", "--quiet"]
NB201_ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def store_lines(path):
    lines = path.read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


@pytest.fixture(scope="module")
def nb201(data_root):
    return get_space("nb201", data_root)


@pytest.fixture(scope="module")
def hp12(data_root):
    return pd.read_csv(data_root / "nb201" / "nb201_hp12.csv.gz")


# -- declarations and resolution ---------------------------------------------------------------------------


def test_each_space_declares_its_targets_and_defaults(nb201, data_root):
    assert list(nb201.target_table()) == ["val", "test", "val-12ep", "test-12ep"]
    assert nb201.default_targets() == ("val", "test")
    from zc_proxies.spaces.nb101.space import NB101Space
    from zc_proxies.spaces.nds.bench import NDSSpace

    assert [t.name for t in NB101Space.targets] == ["val", "test", "val-4ep", "val-12ep", "val-36ep", "test-4ep",
                                                   "test-12ep", "test-36ep"]
    assert [t.name for t in NB101Space.targets if t.default] == ["val", "test"]
    assert [(t.name, t.default) for t in NDSSpace.targets] == [("test", True), ("test-best", False)]
    assert parse_targets(" val, test-12ep,val ") == ("val", "test-12ep") and parse_targets(None) is None


def test_default_specs_are_unchanged(nb201):
    """Without --target a spec means what it meant before targets had names."""
    assert resolve_spec("nb201-cifar10", nb201, "cifar10").targets == (("val", "cifar10-valid"), ("test", "cifar10"))
    assert resolve_spec("nb201-cifar100", nb201, "cifar100").targets == (("val", "cifar100"), ("test", "cifar100"))
    assert resolve_spec("nb201-cifar10-valid", nb201, "cifar10-valid").targets == (("val", "cifar10-valid"),)


@pytest.mark.parametrize("spec, target, dataset, column", [
    ("nb201-cifar10", "val-12ep", "cifar10-valid", "cifar10_valid_val_acc_hp12"),
    ("nb201-cifar10", "test-12ep", "cifar10", "cifar10_test_acc_hp12"),
    ("nb201-cifar100", "val-12ep", "cifar100", "cifar100_val_acc_hp12"),
    ("nb201-cifar100", "test-12ep", "cifar100", "cifar100_test_acc_hp12"),
    ("nb201-imagenet16", "val-12ep", "imagenet16-120", "imagenet16_val_acc_hp12"),
    ("nb201-imagenet16", "test-12ep", "imagenet16-120", "imagenet16_test_acc_hp12"),
])
def test_nb201_12_epoch_targets_read_the_hp12_table(nb201, hp12, spec, target, dataset, column):
    resolved = resolve_spec(spec, nb201, spec.split("-", 1)[1], target)
    assert resolved.targets == ((target, dataset),)
    for i in (0, 1, 6111, 15624):
        assert hp12["arch"][i] == nb201[i]
        assert nb201.accuracy(i, dataset, target) == pytest.approx(hp12[column][i], abs=1e-12)
    note = nb201.target_note(target, dataset)
    assert "12-epoch schedule (hp=12" in note and "nb201_hp12.csv.gz" in note
    assert "200-epoch schedule (hp=200" in nb201.target_note(target.replace("-12ep", ""), dataset)


def test_nb201_200_epoch_targets_still_read_the_main_table(nb201, data_root):
    main_table = pd.read_csv(data_root / "nb201" / "nb201.csv.gz", nrows=3)
    assert nb201.accuracy(2, "cifar10-valid", "val") == pytest.approx(main_table["cifar10_valid_val_acc"][2])
    assert nb201.accuracy(2, "cifar10", "test") == pytest.approx(main_table["cifar10_test_acc"][2])
    # the 12-epoch network is a weaker one: the maxima differ (PROVENANCE: 89.16 vs 94.37)
    assert round(max(nb201.accuracy(i, "cifar10", "test-12ep") for i in range(len(nb201))), 2) == 89.16


def test_unknown_and_unstored_targets_are_one_clear_line(nb201):
    with pytest.raises(UnknownNameError) as err:
        resolve_spec("nb201-cifar10", nb201, "cifar10", "test-12")
    text = str(err.value)
    assert "space 'nb201' has no target 'test-12'; did you mean 'test-12ep'" in text
    assert "val-12ep (12-epoch validation accuracy" in text and "\n" not in text
    with pytest.raises(UnknownNameError, match="target 'test' .* is not stored for dataset 'cifar10-valid' "
                                               r"\(its targets: val, val-12ep\)"):
        resolve_spec("nb201-cifar10-valid", nb201, "cifar10-valid", "test")


def test_nb201_without_the_12_epoch_table_refuses_those_targets(tmp_path, data_root):
    root = tmp_path / "root"
    (root / "nb201").mkdir(parents=True)
    (root / "nb201" / "nb201.csv.gz").symlink_to(data_root / "nb201" / "nb201.csv.gz")  # no nb201_hp12.csv.gz
    space, spec = open_spec("nb201-cifar10", root)
    assert spec.targets == (("val", "cifar10-valid"), ("test", "cifar10"))  # the defaults need no 12-epoch table
    with pytest.raises(MissingDataError) as err:
        open_spec("nb201-cifar10", root, "test-12ep")
    assert "target 'test-12ep'" in str(err.value) and str(root / "nb201" / "nb201_hp12.csv.gz") in str(err.value)
    assert main(["eval", "--space", "nb201-cifar10", "--target", "val,test-12ep", "--data", str(root), "--out",
                 str(tmp_path / "out"), "--sample", "2"] + FAST) == 2
    assert not (tmp_path / "out" / "scores.jsonl").exists()


# -- NAS-Bench-101 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nb101_tables(tmp_path_factory, data_root):
    """The first 40 cells of our two tables (in hash order, so the validation subset covers them)."""
    root = tmp_path_factory.mktemp("nb101root")
    (root / "nb101").mkdir()
    all_rows = pd.read_csv(data_root / "nb101" / "nb101_all.csv.gz", nrows=40, dtype={"matrix": str, "hash": str})
    val_rows = pd.read_csv(data_root / "nb101" / "nb101_val_subset20k.csv.gz", nrows=40, dtype={"hash": str})
    all_rows.to_csv(root / "nb101" / "nb101_all.csv.gz", index=False)
    val_rows.iloc[::2].to_csv(root / "nb101" / "nb101_val_subset20k.csv.gz", index=False)  # every other cell
    return root, all_rows, val_rows.iloc[::2]


@pytest.mark.parametrize("target, column", [("val", "val_acc_108"), ("val-4ep", "val_acc_4"),
                                            ("val-12ep", "val_acc_12"), ("val-36ep", "val_acc_36")])
def test_nb101_csv_validation_targets(nb101_tables, target, column):
    root, _, val_rows = nb101_tables
    space, spec = open_spec("nb101-cifar10", root, target)
    assert spec.targets == ((target, "cifar10"),)
    assert list(space.indices_with("cifar10", target)) == val_rows["index"].tolist()
    for _, r in val_rows.head(4).iterrows():
        assert space.accuracy(int(r["index"]), "cifar10", target) == pytest.approx(100 * r[column], abs=1e-9)
    assert "one training run" in space.target_note(target, "cifar10")


def test_nb101_csv_test_target_and_missing_budgets(nb101_tables):
    root, all_rows, _ = nb101_tables
    space, spec = open_spec("nb101-cifar10", root)
    assert spec.targets == (("val", "cifar10"), ("test", "cifar10"))
    assert space.accuracy(7, "cifar10", "test") == pytest.approx(100 * all_rows["test_acc_mean"][7])
    assert "mean of the 3 training runs" in space.target_note("test", "cifar10")
    with pytest.raises(MissingDataError, match="test accuracy at 108 epochs only.*nasbench_full.tfrecord"):
        open_spec("nb101-cifar10", root, "test-12ep")


@pytest.fixture()
def nb101_records(tmp_path, data_root):
    """3 runs of 4 cells at 108 epochs and 2 runs of 2 of them at 36 epochs, official record layout."""
    from test_nb101_tfrecord import row, write_records

    t = pd.read_csv(data_root / "nb101" / "nb101_all.csv.gz", dtype={"matrix": str, "hash": str}, nrows=30)
    cells = list(zip(t.hash, t.matrix, t.ops, t.params))[::7][:4]
    rows = [row(h, 108, m, o, int(p), (0.99, 0.90 + 0.01 * k + 0.001 * r, 0.89 + 0.01 * k, 100.0))
            for r in range(3) for k, (h, m, o, p) in enumerate(cells)]
    rows += [row(h, 36, m, o, int(p), (0.9, 0.70 + 0.01 * k + 0.002 * r, 0.60 + 0.01 * k + 0.004 * r, 30.0))
             for r in range(2) for k, (h, m, o, p) in enumerate(cells[:2])]
    return write_records(tmp_path, rows)[0], cells


def test_nb101_record_file_targets(nb101_records):
    path, cells = nb101_records
    space = get_space("nb101", source=path)
    spec = resolve_spec("nb101-cifar10", space, "cifar10", "val-36ep,test-36ep,test")
    assert spec.targets == (("val-36ep", "cifar10"), ("test-36ep", "cifar10"), ("test", "cifar10"))
    for k in range(2):
        i = space.index_of(cells[k][0])
        assert space.accuracy(i, "cifar10", "val-36ep") == pytest.approx(100 * (0.70 + 0.01 * k + 0.001))
        assert space.accuracy(i, "cifar10", "test-36ep") == pytest.approx(100 * (0.60 + 0.01 * k + 0.002))
    assert sorted(space.indices_with("cifar10", "test-36ep")) == sorted(space.index_of(c[0]) for c in cells[:2])
    assert "36-epoch test accuracy, mean of 0-2 training run(s)" in space.target_note("test-36ep", "cifar10")
    with pytest.raises(MissingDataError, match="holds runs of 36, 108 epochs only.*nasbench_full.tfrecord"):
        resolve_spec("nb101-cifar10", space, "cifar10", "val-4ep")


# -- NDS -----------------------------------------------------------------------------------------------------


def test_nds_test_best_is_the_best_epoch(data_root):
    raw = json.loads((data_root / "nds" / "DARTS_in.json").read_text())
    space, spec = open_spec("nds-darts-imagenet", data_root, "test-best")
    assert spec.targets == (("test-best", "imagenet"),)
    for i in (0, 5, 120):
        errors = raw[i]["test_ep_top1"]
        assert space.accuracy(i, "imagenet", "test-best") == pytest.approx(100 - min(errors))
        assert space.accuracy(i, "imagenet", "test-best") == pytest.approx(100 - raw[i]["min_test_top1"])
        assert space.accuracy(i, "imagenet", "test") == pytest.approx(100 - errors[-1])
        assert space.accuracy(i, "imagenet", "test-best") >= space.accuracy(i, "imagenet", "test")
    assert "100 - min(test_ep_top1) of DARTS_in.json" in space.target_note("test-best", "imagenet")
    assert open_spec("nds-darts-imagenet", data_root)[1].targets == (("test", "imagenet"),)  # the default
    with pytest.raises(UnknownNameError, match="has no target 'val'.*test \\(.*test-best"):
        open_spec("nds-darts-imagenet", data_root, "val")


def test_nds_test_best_of_a_rerun_set_is_the_mean_of_the_reruns_best(data_root):
    raw = json.loads((data_root / "nds" / "ResNet_reruns.json").read_text())
    space = get_space("nds-resnet-cifar10", data_root)
    records = raw["top"] + raw["mid"]
    key = space.arch_key(records[0]["net"])
    mine = [100 - min(r["test_ep_top1"]) for r in records if space.arch_key(r["net"]) == key]
    assert len(mine) == 100
    assert space.accuracy(space.index_of(records[0]["net"]), "cifar10", "test-best") == pytest.approx(np.mean(mine))


# -- the command line ----------------------------------------------------------------------------------------


def test_eval_target_test_12ep_end_to_end_then_merge_and_export(tmp_path, data_root, nb201, hp12, capsys):
    from scipy.stats import spearmanr

    out = tmp_path / "run"
    args = ["eval", "--space", "nb201-cifar10", "--target", "test-12ep", "--sample", "3", "--data", str(data_root),
            "--out", str(out)] + FAST
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "targets test-12ep" in printed.err and "test-12ep (cifar10)" in printed.out
    assert "12-epoch schedule (hp=12" in printed.out
    header, rows = store_lines(out / "scores.jsonl")
    # targets are a report concern: the settings are those of a plain run
    assert "target" not in json.dumps(header["settings"]) and "results_source" not in header["info"]
    assert header["info"]["targets"] == {"test-12ep": "cifar10"}
    table = read_csv(out / "correlations.csv")
    assert [(r["split"], r["target"], r["n"]) for r in table] == [("test-12ep", "cifar10", "3")]
    want = spearmanr([r["score"] for r in rows], [hp12["cifar10_test_acc_hp12"][r["index"]] for r in rows]).statistic
    assert float(table[0]["spearman"]) == pytest.approx(want)

    # merge and export use the same names
    assert main(["merge", str(out), "--out", str(tmp_path / "merged"), "--data", str(data_root), "--target",
                 "val-12ep,test", "--bootstrap", "20", "--no-plot"]) == 0
    capsys.readouterr()
    merged = read_csv(tmp_path / "merged" / "correlations.csv")
    assert [(r["split"], r["target"]) for r in merged] == [("val-12ep", "cifar10-valid"), ("test", "cifar10")]
    exported = tmp_path / "zc.json"
    assert main(["export", str(out), "--out", str(exported), "--data", str(data_root), "--accuracy",
                 "test-12ep"]) == 0
    assert "val_accuracy: nb201-cifar10 test-12ep = cifar10 ori-test" in capsys.readouterr().out
    body = json.loads(exported.read_text())["cifar10"]
    from zc_proxies.spaces.nb201.naslib import to_naslib_key

    for r in rows:
        assert body[to_naslib_key(r["arch"])]["val_accuracy"] == pytest.approx(
            hp12["cifar10_test_acc_hp12"][r["index"]])
    # a target the space lacks: exit 2, one line, nothing written
    assert main(["export", str(out), "--out", str(tmp_path / "bad.json"), "--data", str(data_root), "--accuracy",
                 "val-4ep"]) == 2
    err = capsys.readouterr().err
    assert "has no target 'val-4ep'" in err and "Traceback" not in err and not (tmp_path / "bad.json").exists()


def test_export_nds_test_best_and_val_refused(tmp_path, data_root, capsys):
    raw = json.loads((data_root / "nds" / "DARTS_in.json").read_text())
    space = get_space("nds-darts-imagenet", data_root)
    path = tmp_path / "nds" / "scores.jsonl"
    with ResultStore(path, {"space": "nds-darts-imagenet", "dataset": "imagenet"},
                     info={"spec": "nds-darts-imagenet"}) as store:
        store.append([{"space": "nds-darts-imagenet", "dataset": "imagenet", "index": i, "arch": space[i],
                       "proxy": "fisher", "proxy_version": "1", "seed": 0, "score": float(i), "seconds": 0.1,
                       "status": "ok"} for i in (0, 3, 9)])
    out = tmp_path / "nds.json"
    assert main(["export", str(path), "--out", str(out), "--data", str(data_root), "--accuracy", "test-best"]) == 0
    body = json.loads(out.read_text())["imagenet"]
    assert sorted(e["val_accuracy"] for e in body.values()) == pytest.approx(
        sorted(100 - min(raw[i]["test_ep_top1"]) for i in (0, 3, 9)))
    assert main(["export", str(path), "--out", str(out), "--data", str(data_root)]) == 0  # auto: the default, test
    body = json.loads(out.read_text())["imagenet"]
    assert sorted(e["val_accuracy"] for e in body.values()) == pytest.approx(
        sorted(100 - raw[i]["test_ep_top1"][-1] for i in (0, 3, 9)))
    capsys.readouterr()
    refused = tmp_path / "val.json"
    assert main(["export", str(path), "--out", str(refused), "--data", str(data_root), "--accuracy", "val"]) == 2
    err = capsys.readouterr().err
    assert "space 'nds-darts-imagenet' has no target 'val'" in err and "test-best" in err
    assert len(err.strip().splitlines()) == 1 and not refused.exists()


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
    """The tiny official-layout NAS-Bench-201 file of test_nb201_pth (shuffled index order, 3 archs evaluated)."""
    from test_nb201_pth import official_dict

    data = official_dict()
    path = tmp_path_factory.mktemp("pth") / "NAS-Bench-201-v1_0-e61699.pth"
    torch.save(data, path, _use_new_zipfile_serialization=False)
    return data, path


def test_eval_source_reads_the_official_file_in_plan_and_workers(tmp_path, data_root, pth, capsys):
    from nas_201_api import NASBench201API

    data, path = pth
    out = tmp_path / "src"
    assert main(["eval", "--space", "nb201-cifar10", "--source", str(path), "--target", "test,test-12ep",
                 "--sample", "3", "--workers", "2", "--data", str(data_root), "--out", str(out)] + FAST) == 0
    printed = capsys.readouterr()
    assert f"(results from {path})" in printed.err
    header, rows = store_lines(out / "scores.jsonl")
    assert header["info"]["results_source"] == str(path)
    assert "results_source" not in header["settings"] and "source" not in header["settings"]
    # the sample is the file's three evaluated archs, in the file's (shuffled) index order
    assert sorted(r["index"] for r in rows) == [11, 4242, 15000]
    assert all(r["arch"] == data["meta_archs"][r["index"]] and r["status"] == "ok" for r in rows)
    assert [(r["split"], r["n"]) for r in read_csv(out / "correlations.csv")] == [("test", "3"), ("test-12ep", "3")]
    # the 12-epoch target comes from the file's 'less' (hp=12) results, as the official API reads them
    api = NASBench201API(data, verbose=False)
    space = get_space("nb201", source=path)
    for i in (11, 15000):
        info = api.get_more_info(i, "cifar10", iepoch=None, hp="12", is_random=False)
        assert space.accuracy(i, "cifar10", "test-12ep") == pytest.approx(info["test-accuracy"], abs=1e-12)
    assert "'less' results of NAS-Bench-201-v1_0-e61699.pth" in space.target_note("test-12ep", "cifar10")

    # the same --out with the default tables: index 11 is another arch there, so the run is refused
    assert main(["eval", "--space", "nb201-cifar10", "--sample", "3", "--data", str(data_root),
                 "--out", str(out)] + FAST) == 2
    err = capsys.readouterr().err
    assert "is another architecture in the default tables" in err and f"pass --source {path}" in err
    assert store_lines(out / "scores.jsonl")[1] == rows


def test_eval_source_missing_or_bad_is_one_line_before_anything_is_stored(tmp_path, data_root, capsys):
    for source, message in ((tmp_path / "absent.pth", "is not a file"), (tmp_path, "is not a file")):
        assert main(["eval", "--space", "nb201-cifar10", "--source", str(source), "--sample", "2",
                     "--data", str(data_root), "--out", str(tmp_path / "out")] + FAST) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "cut.pth"
    bad.write_bytes(b"not a torch file")
    assert main(["eval", "--space", "nb201-cifar10", "--source", str(bad), "--sample", "2",
                 "--data", str(data_root), "--out", str(tmp_path / "out")] + FAST) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "scores.jsonl").exists()


def test_rerun_with_a_smaller_sample_reports_the_whole_store(tmp_path, data_root, capsys):
    out = tmp_path / "grow"
    base = ["eval", "--space", "nb201-cifar10", "--seed", "3", "--data", str(data_root), "--out", str(out)] + FAST
    assert main(base + ["--sample", "5"]) == 0
    capsys.readouterr()
    first = read_csv(out / "correlations.csv")
    assert first[0]["n"] == "5"
    assert main(base + ["--sample", "2"]) == 0
    printed = capsys.readouterr().out
    _, rows = store_lines(out / "scores.jsonl")
    stored = {r["index"] for r in rows}
    assert len(stored) >= 5
    table = read_csv(out / "correlations.csv")
    assert {r["n"] for r in table} == {str(len(stored))}  # every stored architecture, not the 2 asked for
    assert (f"The tables cover every architecture stored in scores.jsonl for seed 3: {len(stored)}, of which this "
            "run requested 2.") in printed
    assert "of which this run requested 2" in (out / "correlations.md").read_text()
    # a run that asks for everything stored has no such footnote
    archs = tmp_path / "archs.txt"
    archs.write_text("\n".join(map(str, sorted(stored))) + "\n")
    assert main(base + ["--archs", str(archs)]) == 0
    assert "of which this run requested" not in capsys.readouterr().out
    assert read_csv(out / "correlations.csv")[0]["n"] == str(len(stored))
    # a proxy scored on fewer of them: every proxy is correlated on the same architectures, the others named
    two = tmp_path / "two.txt"
    two.write_text("\n".join(map(str, sorted(stored)[:2])) + "\n")
    assert main(base + ["--archs", str(two), "--proxy", "fisher,grad_norm"]) == 0
    assert (f"this run requested 2 ({len(stored) - 2} more stored architectures lack a score of one of these "
            "proxies") in capsys.readouterr().out
    assert {(r["proxy"], r["n"]) for r in read_csv(out / "correlations.csv")} == {("fisher", "2"), ("grad_norm", "2")}


def test_nb201_hp12_table_that_disagrees_is_refused(tmp_path, data_root):
    root = tmp_path / "root"
    (root / "nb201").mkdir(parents=True)
    (root / "nb201" / "nb201.csv.gz").symlink_to(data_root / "nb201" / "nb201.csv.gz")
    table = pd.read_csv(data_root / "nb201" / "nb201_hp12.csv.gz")
    table.loc[[4, 5], "arch"] = table.loc[[5, 4], "arch"].to_numpy()
    with gzip.open(root / "nb201" / "nb201_hp12.csv.gz", "wt") as fh:
        table.to_csv(fh, index=False)
    space = get_space("nb201", root)
    assert math.isfinite(space.accuracy(4, "cifar10", "test"))  # the main table is untouched
    with pytest.raises(DataError, match=r"line 6 \(index 4\): arch .* is not the arch .* \(2 row\(s\) disagree\)"):
        space.accuracy(4, "cifar10", "test-12ep")
