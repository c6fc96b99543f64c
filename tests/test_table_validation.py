"""Stored-result tables are validated on load: each bad row is refused with a message naming it.

For every format the loaders read (NB201 table and official ``.pth``; NB101
tables, ``.tfrecord`` and ``.h5``; NDS ``.json``) a tiny file is written with
one bad row: an accuracy of 150 or -1, an infinity, a duplicate architecture, a
malformed architecture, a wrong parameter count in a spot-checked row. The
:class:`DataError` must name the file, the row (line, record, offset or index,
and the arch) and the problem. The real tables under the data root must still
load.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_nb101_tfrecord import row, write_records
from test_nb201_pth import official_dict
from test_nb201_space import closed_form_params, product_archs
from test_nds_bench import record
from test_nds_fixtures import DARTS_V1, DARTS_V2, PC_DARTS, expected_params

from zc_proxies import get_space
from zc_proxies.errors import DataError
from zc_proxies.runs.seeding import derive_seed
from zc_proxies.spaces.nb101.bench import Cells, Runs, load_csv, load_h5_runs, runs_from_records, write_h5
from zc_proxies.spaces.nb101.tfrecord import iter_nb101_records
from zc_proxies.spaces.nb201 import NB201Network, parameter_count
from zc_proxies.spaces.nb201.bench import ACCURACY_COLUMNS, read_pth, read_table
from zc_proxies.spaces.nds import SWEEPS, NDSParamsWarning, load_nds_space
from zc_proxies.spaces.validation import SPOT_CHECK_ROWS, Rows, check_range, spot_rows


def refused(call, *parts: str) -> str:
    """Run ``call``, expect a DataError whose message contains every one of ``parts`` (literally)."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message
    return message


# -- the shared pieces ------------------------------------------------------------------------------


def test_spot_rows_are_seeded_from_the_package_seed():
    rng = np.random.default_rng(derive_seed(0, "table-check", 0))
    assert spot_rows(15_625).tolist() == sorted(rng.choice(15_625, size=SPOT_CHECK_ROWS, replace=False).tolist())
    assert spot_rows(15_625).tolist() == spot_rows(15_625).tolist()
    assert spot_rows(3).tolist() == [0, 1, 2]


def test_check_range_keeps_nan_only_where_asked():
    rows = Rows("file 'x'", lambda i: f"line {i + 2}")
    check_range([0.0, 100.0, float("nan")], rows, "acc", allow_nan=True)
    refused(lambda: check_range([1.0, float("nan")], rows, "acc"), "file 'x', line 3: acc nan is NaN")
    refused(lambda: check_range([1.0, 150.0, -3.0], rows, "acc"),
            "file 'x', line 3: acc 150 is outside [0, 100] (1 more row(s) with a bad acc after it)")


# -- NAS-Bench-201: our table --------------------------------------------------------------------------

HEADS = {"cifar10": 10, "cifar100": 100, "imagenet16": 120}


@pytest.fixture(scope="module")
def nb201_frame() -> pd.DataFrame:
    """A table in our layout: every arch (product order), true parameter counts, made-up accuracies."""
    archs = list(product_archs())
    rng = np.random.default_rng(0)
    data: dict[str, object] = {"index": np.arange(len(archs)), "arch": archs}
    for column in ACCURACY_COLUMNS.values():
        data[column] = rng.uniform(5, 95, len(archs)).round(4)
    for head, classes in HEADS.items():
        data[f"params_mb_{head}"] = [closed_form_params(a, classes) / 1e6 for a in archs]
        data[f"flops_m_{head}"] = rng.uniform(1, 200, len(archs)).round(4)
    return pd.DataFrame(data)


def write_nb201(table: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "nb201.csv"
    table.to_csv(path, index=False)
    return path


def nb201_row(table: pd.DataFrame, i: int) -> str:
    return f"line {i + 2} (index {i}, arch {table.arch[i]!r})"


def test_nb201_good_table_loads(nb201_frame, tmp_path):
    results = read_table(write_nb201(nb201_frame, tmp_path))
    assert len(results.table) == 15_625


@pytest.mark.parametrize("column, value, problem", [
    ("cifar10_test_acc", 150.0, "cifar10_test_acc 150 is outside [0, 100]"),
    ("cifar100_val_acc", -1.0, "cifar100_val_acc -1 is outside [0, 100]"),
    ("imagenet16_test_acc", float("inf"), "imagenet16_test_acc inf is not finite"),
])
def test_nb201_accuracy_out_of_range(nb201_frame, tmp_path, column, value, problem):
    table = nb201_frame.copy()
    table.loc[321, column] = value
    path = write_nb201(table, tmp_path)
    refused(lambda: read_table(path), f"NAS-Bench-201 table {str(path)!r}, {nb201_row(table, 321)}: {problem}")


def test_nb201_nan_still_means_not_recorded(nb201_frame, tmp_path):
    from zc_proxies.spaces.nb201 import NB201Space

    table = nb201_frame.copy()
    table.loc[5, "cifar10_test_acc"] = np.nan
    space = NB201Space(read_table(write_nb201(table, tmp_path)))
    refused(lambda: space.accuracy(5, "cifar10", "test"), "holds no cifar10 test accuracy for arch 5")


def test_nb201_duplicate_arch(nb201_frame, tmp_path):
    table = nb201_frame.copy()
    table.loc[900, "arch"] = table.arch[40]
    path = write_nb201(table, tmp_path)
    refused(lambda: read_table(path), f"{nb201_row(table, 900)}: duplicate arch, already listed at line 42")


def test_nb201_duplicate_index(nb201_frame, tmp_path):
    table = nb201_frame.copy()
    table.loc[77, "index"] = 76
    path = write_nb201(table, tmp_path)
    refused(lambda: read_table(path), "line 79 (index 76, arch", "duplicate index, already listed at line 78")


def test_nb201_malformed_arch(nb201_frame, tmp_path):
    table = nb201_frame.copy()
    table.loc[12, "arch"] = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|"
    path = write_nb201(table, tmp_path)
    refused(lambda: read_table(path), f"{nb201_row(table, 12)}: malformed arch (", "node 3 has 2 incoming edge(s)")


def test_nb201_non_canonical_arch(nb201_frame, tmp_path):
    table = nb201_frame.copy()
    table.loc[12, "arch"] = " " + table.arch[12]  # the parser accepts it, but lookups use the canonical form
    path = write_nb201(table, tmp_path)
    refused(lambda: read_table(path), "line 14 (index 12",
            "arch is not in its canonical form (the space's parser makes it ")


def test_nb201_wrong_params_in_a_spot_checked_row(nb201_frame, tmp_path):
    i = int(spot_rows(15_625)[1])
    table = nb201_frame.copy()
    true = closed_form_params(table.arch[i], 100)
    table.loc[i, "params_mb_cifar100"] = (true + 64) / 1e6
    path = write_nb201(table, tmp_path)
    refused(lambda: read_table(path), f"{nb201_row(table, i)}: stored parameter count (params_mb_cifar100 x 1e6) "
            f"{true + 64} differs from the {true:,} parameters of the network built for it")


def test_nb201_params_are_spot_checked_not_all_checked(nb201_frame, tmp_path):
    i = next(i for i in range(15_625) if i not in set(spot_rows(15_625).tolist()))
    table = nb201_frame.copy()
    table.loc[i, "params_mb_cifar10"] += 1e-3
    assert len(read_table(write_nb201(table, tmp_path)).table) == 15_625  # a sample: loading stays fast


@pytest.mark.parametrize("arch", [
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|none~1|skip_connect~2|",
])
@pytest.mark.parametrize("classes", [10, 100, 120])
def test_nb201_closed_form_count_is_the_built_networks(arch, classes):
    with torch.device("meta"):
        built = sum(p.numel() for p in NB201Network(arch, classes).parameters() if p.requires_grad)
    assert parameter_count(arch, classes) == built == closed_form_params(arch, classes)


# -- NAS-Bench-201: the official .pth --------------------------------------------------------------------


@pytest.fixture(scope="module")
def nb201_official() -> dict:
    return official_dict()


def write_pth(data: dict, tmp_path: Path) -> Path:
    path = tmp_path / "NAS-Bench-201-v1_0-e61699.pth"
    torch.save(data, path)
    return path


def test_pth_accuracy_150(nb201_official, tmp_path):
    data = dict(nb201_official, arch2infos=copy.deepcopy(nb201_official["arch2infos"]))
    data["arch2infos"][11]["full"]["all_results"][("cifar10", 777)]["eval_acc1es"]["ori-test@199"] = 150.0
    path = write_pth(data, tmp_path)
    refused(lambda: read_pth(path), f"NAS-Bench-201 file {str(path)!r}, arch index 11 "
            f"(arch {data['meta_archs'][11]!r}): cifar10_test_acc 150 is outside [0, 100]")


def test_pth_duplicate_and_malformed_archs(nb201_official, tmp_path):
    archs = list(nb201_official["meta_archs"])
    archs[9] = archs[4]
    path = write_pth(dict(nb201_official, meta_archs=archs), tmp_path)
    refused(lambda: read_pth(path), f"arch index 9 (arch {archs[4]!r}): duplicate arch, already listed at arch index 4")
    archs[9] = "|nor_conv_3x3~0|+|conv_5x5~0|none~1|+|none~0|none~1|none~2|"
    path = write_pth(dict(nb201_official, meta_archs=archs), tmp_path)
    refused(lambda: read_pth(path), "arch index 9 (arch '|nor_conv_3x3~0|+|conv_5x5~0|", "malformed arch (",
            "unknown op 'conv_5x5'")


# -- NAS-Bench-101: our CSV tables ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nb101_rows(data_root) -> pd.DataFrame:
    """Eight real cells (4 to 7 vertices), in hash order, re-indexed 0..7: a tiny table in our layout."""
    t = pd.read_csv(data_root / "nb101" / "nb101_all.csv.gz", dtype={"matrix": str, "hash": str}, nrows=4000)
    pick = pd.concat([t[t.num_vertices == v].head(2) for v in (4, 5, 6, 7)]).sort_values("hash")
    return pick.assign(index=np.arange(len(pick))).reset_index(drop=True)


def write_nb101(table: pd.DataFrame, tmp_path: Path, val: pd.DataFrame | None = None) -> tuple[Path, Path]:
    path, val_path = tmp_path / "nb101_all.csv", tmp_path / "nb101_val.csv"
    table.to_csv(path, index=False)
    if val is None:
        val = table[["index", "hash"]].assign(val_acc_108=0.9)
    val.to_csv(val_path, index=False)
    return path, val_path


def load_nb101(table: pd.DataFrame, tmp_path: Path, val: pd.DataFrame | None = None):
    path, val_path = write_nb101(table, tmp_path, val)
    return lambda: load_csv(path, val_path)


def nb101_row(table: pd.DataFrame, i: int) -> str:
    return f"line {i + 2} (hash {table.hash[i]})"


def test_nb101_good_table_loads(nb101_rows, tmp_path):
    results = load_nb101(nb101_rows, tmp_path)()
    assert len(results) == 8 and np.allclose(results.val_acc, 0.9)


@pytest.mark.parametrize("value, problem", [
    (1.5, "test_acc_mean 1.5 is outside [0, 1]"),     # 150 %: stored as a fraction
    (150.0, "test_acc_mean 150 is outside [0, 1]"),   # a percentage where a fraction belongs
    (-0.01, "test_acc_mean -0.01 is outside [0, 1]"),
    (float("-inf"), "test_acc_mean -inf is not finite"),
])
def test_nb101_accuracy_out_of_range(nb101_rows, tmp_path, value, problem):
    table = nb101_rows.copy()
    table.loc[3, "test_acc_mean"] = value
    refused(load_nb101(table, tmp_path), f"NAS-Bench-101 table {str(tmp_path / 'nb101_all.csv')!r}, "
            f"{nb101_row(table, 3)}: {problem}")


def test_nb101_val_table_accuracy_and_duplicates(nb101_rows, tmp_path):
    val = nb101_rows[["index", "hash"]].assign(val_acc_108=0.9)
    val.loc[1, "val_acc_108"] = 1.5
    where = f"NAS-Bench-101 validation table {str(tmp_path / 'nb101_val.csv')!r}, line 3 (index 1, hash "
    refused(load_nb101(nb101_rows, tmp_path, val), where, "val_acc_108 1.5 is outside [0, 1]")
    val.loc[1, "val_acc_108"] = np.nan  # not stored: allowed, as before
    assert np.isnan(load_nb101(nb101_rows, tmp_path, val)().val_acc[1])
    val.loc[2, ["index", "hash"]] = val.loc[1, ["index", "hash"]]
    refused(load_nb101(nb101_rows, tmp_path, val), "line 4 (index 1, hash", "duplicate index, already listed at line 3")


def test_nb101_duplicate_hash(nb101_rows, tmp_path):
    table = nb101_rows.copy()
    table.loc[4, table.columns != "index"] = table.loc[3, table.columns != "index"]
    refused(load_nb101(table, tmp_path), f"{nb101_row(table, 4)}: duplicate hash, already listed at line 5")


@pytest.mark.parametrize("column, mutate, problem", [
    ("matrix", lambda m: "1" + m[1:], "malformed arch (the adjacency matrix must be strictly upper triangular"),
    ("ops", lambda o: o.replace("input", "conv3x3-bn-relu", 1), "malformed arch (op 0 must be 'input'"),
    # drops edge 0 -> 4, vertex 4's only input: the cell still computes but is no longer pruned
    ("matrix", lambda m: m[:4] + "0" + m[5:], "arch is not in its canonical form (the space's parser makes it "),
])
def test_nb101_malformed_cell(nb101_rows, tmp_path, column, mutate, problem):
    table = nb101_rows.copy()
    i = int(np.flatnonzero(table.num_vertices == 7)[0])
    assert [table.matrix[i][7 * r + 4] for r in range(7)] == list("1000000")  # the precondition of the third case
    table.loc[i, column] = mutate(table.loc[i, column])
    assert table.loc[i, column] != nb101_rows.loc[i, column]
    refused(load_nb101(table, tmp_path), f"{nb101_row(table, i)}: {problem}")


def test_nb101_wrong_params_in_a_spot_checked_row(nb101_rows, tmp_path):
    i = int(spot_rows(8)[2])
    table = nb101_rows.copy()
    true = int(table.params[i])
    table.loc[i, "params"] = true - 10
    refused(load_nb101(table, tmp_path), f"{nb101_row(table, i)}: stored parameter count {true - 10} differs from "
            f"the {true:,} parameters of the network built for it (load-time spot check of 4 seeded rows)")


def test_nb101_wrong_hash_in_a_spot_checked_row(nb101_rows, tmp_path):
    i = int(spot_rows(8)[0])
    table = nb101_rows.copy()
    h = table.hash[i]
    table.loc[i, "hash"] = h[:-1] + ("0" if h[-1] != "0" else "1")  # keeps the hash order
    refused(load_nb101(table, tmp_path), f"{nb101_row(table, i)}: the stored hash is not the cell's own ({h})")


# -- NAS-Bench-101: the official records and their HDF5 ----------------------------------------------------


def good_rows(cells: pd.DataFrame) -> list[tuple]:
    """(hash, epochs, matrix, ops, params, final) of 2 runs of each cell, in file order."""
    return [(h, 108, m, o, int(p), (0.99, 0.9 + 0.001 * r, 0.89 + 0.001 * k, 1000.0))
            for r in range(2) for k, (h, m, o, p) in enumerate(zip(cells.hash, cells.matrix, cells.ops, cells.params))]


def read_records(path: Path) -> Runs:
    return runs_from_records(iter_nb101_records(path), str(path))


def test_records_good_file_loads(nb101_rows, tmp_path):
    path, _ = write_records(tmp_path, [row(*r) for r in good_rows(nb101_rows)])
    assert len(read_records(path).cells) == 8


@pytest.mark.parametrize("position, value, field", [
    (2, 1.5, "final_test_accuracy"), (1, float("inf"), "final_validation_accuracy"), (0, -0.2, "final_train_accuracy"),
])
def test_records_accuracy_out_of_range(nb101_rows, tmp_path, position, value, field):
    rows = good_rows(nb101_rows)
    h, e, m, o, p, final = rows[11]
    rows[11] = (h, e, m, o, p, final[:position] + (value,) + final[position + 1:])
    path, offsets = write_records(tmp_path, [row(*r) for r in rows])
    problem = f"{field} {value!r} is not finite" if value == float("inf") else f"{field} {value!r} is outside [0, 1]"
    refused(lambda: read_records(path), f"NAS-Bench-101 records {str(path)!r}, record at byte offset {offsets[11]} "
            f"(hash {h}, 108 epochs): {problem}")


def test_records_one_hash_for_two_cells(nb101_rows, tmp_path):
    rows = good_rows(nb101_rows)
    h = rows[10][0]
    rows[10] = (h, *rows[11][1:])  # the second run of cell 2 carries cell 3's matrix and ops
    path, offsets = write_records(tmp_path, [row(*r) for r in rows])
    refused(lambda: read_records(path), f"record at byte offset {offsets[10]} (hash {h}): duplicate hash for another "
            f"cell", f"than the record at byte offset {offsets[2]} gives it")


def test_records_malformed_cell(nb101_rows, tmp_path):
    rows = good_rows(nb101_rows)
    h, e, m, o, p, f = rows[7]
    bad_ops = o.replace("input", "maxpool3x3", 1)
    rows = [(h, e, m, bad_ops, p, f) if r[0] == h else r for r in rows]
    path, offsets = write_records(tmp_path, [row(*r) for r in rows])
    refused(lambda: read_records(path), f"record at byte offset {offsets[7]} (hash {h}): malformed arch (op 0 must be "
            "'input'")


def test_records_wrong_params_in_a_spot_checked_cell(nb101_rows, tmp_path):
    i = int(spot_rows(8)[3])  # the cells are in hash order already, as the space indexes them
    h, true = nb101_rows.hash[i], int(nb101_rows.params[i])
    rows = [(r[0], r[1], r[2], r[3], true + 1, r[5]) if r[0] == h else r for r in good_rows(nb101_rows)]
    path, offsets = write_records(tmp_path, [row(*r) for r in rows])
    refused(lambda: read_records(path), f"record at byte offset {offsets[i]} (hash {h}): stored parameter count "
            f"{true + 1} differs from the {true:,} parameters")


def test_h5_duplicate_hash_and_bad_accuracy(nb101_rows, tmp_path):
    good, _ = write_records(tmp_path, [row(*r) for r in good_rows(nb101_rows)])
    runs = read_records(good)
    c = runs.cells
    hashes = c.hashes.copy()
    hashes[5] = hashes[4]
    path = write_h5(Runs(Cells(hashes, c.num_vertices, c.adjacency, c.op_codes), runs.params, runs.metrics,
                         runs.source), tmp_path / "dup.h5")
    refused(lambda: load_h5_runs(path), f"NAS-Bench-101 file {str(path)!r}, cell 5 (hash {hashes[4]}): duplicate hash, "
            "already listed at cell 4")
    metrics = copy.deepcopy(runs.metrics)
    metrics[108]["final_test_accuracy"][6, 1] = 1.5
    path = write_h5(Runs(c, runs.params, metrics, runs.source), tmp_path / "acc.h5")
    refused(lambda: load_h5_runs(path), f"cell 6, 108 epochs, run 2 (hash {c.hashes[6]}): final_test_accuracy 1.5 is "
            "outside [0, 1]")


# -- NDS -------------------------------------------------------------------------------------------------


def nds_records() -> list[dict]:
    """Three good records (deep-copied: ``record`` shares the fixtures' genotype dicts, which tests mutate)."""
    return copy.deepcopy([record(DARTS_V1, 16, 8, False, expected_params(DARTS_V1, 16, 8, False)),
            record(PC_DARTS, 24, 14, True, expected_params(PC_DARTS, 24, 14, True)),
            record(DARTS_V2, 16, 8, False, expected_params(DARTS_V2, 16, 8, False))])


def write_nds(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "DARTS.json"
    path.write_text(json.dumps(records))
    return path


def test_nds_good_file_loads(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NDSParamsWarning)
        assert len(load_nds_space("nds-darts", write_nds(tmp_path, nds_records()))) == 3


@pytest.mark.parametrize("error, problem", [
    (-50.0, "accuracy (100 - final 'test_ep_top1') 150 is outside [0, 100]"),
    (101.0, "accuracy (100 - final 'test_ep_top1') -1 is outside [0, 100]"),
    (float("inf"), "accuracy (100 - final 'test_ep_top1') -inf is not finite"),
    (float("nan"), "accuracy (100 - final 'test_ep_top1') nan is NaN"),
])
def test_nds_accuracy_out_of_range(tmp_path, error, problem):
    records = nds_records()
    records[1]["test_ep_top1"][-1] = error
    path = write_nds(tmp_path, records)
    refused(lambda: load_nds_space("nds-darts", path), f"NDS file {str(path)!r}, record 1 (width 24, depth 14, aux; "
            "normal sep_conv_3x3~1 skip_connect~0 ", f"): {problem}")


def test_nds_duplicate_arch(tmp_path):
    records = nds_records()
    records.append(copy.deepcopy(records[0]))
    records[3]["net"]["drop_prob"] = 0.2  # a training setting: still the same architecture
    path = write_nds(tmp_path, records)
    refused(lambda: load_nds_space("nds-darts", path), f"NDS file {str(path)!r}, record 3 (width 16, depth 8; normal ",
            "): duplicate arch, already listed at record 0")


def test_nds_malformed_arch(tmp_path):
    records = nds_records()
    records[2]["net"]["genotype"]["reduce"][3] = ["sep_conv_3x3", 7]
    path = write_nds(tmp_path, records)
    refused(lambda: load_nds_space("nds-darts", path), f"NDS file {str(path)!r}, record 2: reduce cell, node 1 "
            "(entry 3): op 'sep_conv_3x3' takes input 7, which is not defined yet")


def test_nds_params_mismatch_keeps_its_documented_warning(tmp_path):
    records = nds_records()
    records[0]["params"] += 1
    with pytest.warns(NDSParamsWarning, match=r"1 of 3 records .*record 0 stores"):
        space = load_nds_space("nds-darts", write_nds(tmp_path, records))
    assert len(space) == 3


# -- the real tables ---------------------------------------------------------------------------------------

def test_real_tables_still_load(data_root, tmp_path):
    assert len(read_table(data_root / "nb201" / "nb201.csv.gz").table) == 15_625
    nb101 = load_csv(data_root / "nb101" / "nb101_all.csv.gz")
    assert len(nb101) == 423_624 and int(np.sum(~np.isnan(nb101.val_acc))) == 20_001
    # every NDS file here loads through its own space, every record's parameter count checked
    for sweep in SWEEPS.values():
        if (data_root / "nds" / sweep.file).is_file():
            space = get_space(sweep.space, data_root, check_params="error")
            assert len(space) >= 2 and not space.verify_params(), sweep.space
