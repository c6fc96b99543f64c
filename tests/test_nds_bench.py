"""The official NDS JSON reader and the registered nds-* spaces, on small files in the official layout."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from test_nds_fixtures import (
    AMOEBA_A,
    DARTS_V1,
    DARTS_V2,
    ENAS_CELL,
    NASNET_A,
    PC_DARTS,
    PDARTS,
    PNASNET,
    count,
    expected_params,
)

from zc_proxies import get_space, list_spaces
from zc_proxies.errors import ArchError, DataError, MissingDataError, UnknownNameError, ZCBenchError
from zc_proxies.spaces.nds import NDSParamsWarning, ParamMismatch, read_nds_json

SPACES = {"nds-darts": "DARTS", "nds-enas": "ENAS", "nds-nasnet": "NASNet", "nds-pnas": "PNAS", "nds-amoeba": "Amoeba"}


def record(genotype: dict, width: int, depth: int, aux: bool, params: int, errors=(31.5, 12.25, 6.5)) -> dict:
    """One model record in the layout of the NDS release (training logs shortened)."""
    epochs = len(errors)
    return {
        "job_id": 1234,
        "rng_seed": 1,
        "net": {"genotype": genotype, "width": width, "depth": depth, "aux": aux, "drop_prob": 0.0},
        "optim": {"base_lr": 0.1, "wd": 0.0005, "max_ep": epochs, "lr_policy": "cos"},
        "params": params,
        "flops": 98_765_432,
        "act_mem": 1.5,
        "exp_mem": 2.5,
        "min_test_top1": min(errors),
        "test_ep_top1": list(errors),
        "train_ep_top1": [e - 1 for e in errors],
        "train_ep_loss": [1.0 / (i + 1) for i in range(epochs)],
        "train_it_loss": [2.3, 1.1, 0.6],
        "train_it_top1": [90.0, 40.0, 20.0],
        "prec_time": {"train_fw_bw": 0.05, "test_fw": 0.01},
        "iter_time": 0.06,
    }


# Stored params: published counts for the C=36, 20-cell networks (see test_nds_model.py for
# the sources), the independent formula of test_nds_fixtures for the others.
DARTS_RECORDS = [
    record(DARTS_V2, 36, 20, False, 3_349_342, errors=(40.0, 10.0, 2.76)),
    record(PDARTS, 36, 20, True, 3_910_224, errors=(40.0, 9.0, 2.5)),
    record(DARTS_V1, 16, 8, False, expected_params(DARTS_V1, 16, 8, False)),
    record(PC_DARTS, 24, 14, True, expected_params(PC_DARTS, 24, 14, True), errors=(50.0, 7.75)),
    # stores the count WITH the auxiliary head although the record has none: must be reported
    # (record 1's architecture without aux: a distinct architecture, since a repeated one is refused)
    record(PDARTS, 36, 20, False, 3_910_224),
]
BAD = 4

OTHER_RECORDS = {
    "ENAS": [record(ENAS_CELL, 16, 8, False, expected_params(ENAS_CELL, 16, 8, False)),
             record(ENAS_CELL, 32, 5, True, expected_params(ENAS_CELL, 32, 5, True))],
    "NASNet": [record(NASNET_A, 24, 11, False, expected_params(NASNET_A, 24, 11, False)),
               record(NASNET_A, 16, 20, True, expected_params(NASNET_A, 16, 20, True))],
    "PNAS": [record(PNASNET, 16, 8, True, expected_params(PNASNET, 16, 8, True)),
             record(PNASNET, 8, 3, False, expected_params(PNASNET, 8, 3, False))],
    "Amoeba": [record(AMOEBA_A, 36, 20, False, expected_params(AMOEBA_A, 36, 20, False)),
               record(AMOEBA_A, 12, 4, True, expected_params(AMOEBA_A, 12, 4, True))],
}


def write(root: Path, family: str, data, subdir: str = "nds") -> Path:
    path = root / subdir / f"{family}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def meta_count(space, i: int) -> int:
    with torch.device("meta"):
        return count(space.build(space[i], space.num_classes("cifar10")))


@pytest.fixture
def darts(tmp_path):
    write(tmp_path, "DARTS", DARTS_RECORDS)
    with pytest.warns(NDSParamsWarning, match=r"1 of 5 records .*record 4 stores 3,910,224 but builds 3,433,798"):
        space = get_space("nds-darts", tmp_path)
    return space


def test_spaces_are_registered():
    assert set(SPACES) <= set(list_spaces("nds-*"))


def test_reads_records_in_the_official_list_layout(darts):
    assert len(darts) == 5
    for i, rec in enumerate(DARTS_RECORDS):
        assert darts.accuracy(i, "cifar10", "test") == pytest.approx(100 - rec["test_ep_top1"][-1])
        assert darts.params(i, "cifar10") == rec["params"]
        assert darts.flops(i) == 98_765_432
        assert darts[i]["genotype"] == rec["net"]["genotype"]
        assert (darts[i]["width"], darts[i]["depth"], darts[i]["aux"]) == (
            rec["net"]["width"], rec["net"]["depth"], rec["net"]["aux"])
    assert darts.accuracy(0, "cifar10", "test") == pytest.approx(97.24)
    assert darts.num_classes("cifar10") == 10
    assert json.loads(json.dumps(darts[0])) == darts[0]  # JSON-serialisable architecture


def test_every_record_params_equals_its_built_network_and_the_bad_one_is_reported(darts):
    built = [meta_count(darts, i) for i in range(len(darts))]
    for i in range(len(darts)):
        if i == BAD:
            assert darts.params(i) != built[i]
        else:
            assert darts.params(i) == built[i], i
    assert built[0] == 3_349_342 and built[1] == darts.params(BAD) == 3_910_224 and built[BAD] == 3_433_798
    assert darts.verify_params() == [ParamMismatch(BAD, 3_910_224, 3_433_798)]


@pytest.mark.parametrize("name", sorted(SPACES))
def test_each_space_reads_its_file(tmp_path, name):
    family = SPACES[name]
    records = DARTS_RECORDS[:BAD] if family == "DARTS" else OTHER_RECORDS[family]
    write(tmp_path, family, records)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NDSParamsWarning)
        space = get_space(name, tmp_path)
    assert len(space) == len(records) and space.verify_params() == []
    for i, rec in enumerate(records):
        assert space.params(i) == meta_count(space, i) == rec["params"]
        assert space.index_of(space[i]) == i
        assert space.index_of(rec["net"]) == i  # a raw net config works too
        assert space.index_of(space.arch_key(space[i])) == i  # and the key's JSON text
    model = space.build(space[len(records) - 1], 10).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_top_mid_layout(tmp_path):
    write(tmp_path, "PNAS", {"top": OTHER_RECORDS["PNAS"][:1], "mid": OTHER_RECORDS["PNAS"][1:]})
    space = get_space("nds-pnas", tmp_path)
    assert len(space) == 2
    assert space[0]["width"] == 16 and space[1]["width"] == 8  # top first, then mid
    assert len(read_nds_json(tmp_path / "nds" / "PNAS.json")) == 2


def test_check_params_modes(tmp_path):
    path = write(tmp_path, "DARTS", DARTS_RECORDS)
    with pytest.raises(DataError, match=r"1 of 5 records .*verify_params"):
        get_space("nds-darts", tmp_path, check_params="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space = get_space("nds-darts", None, source=path, check_params="ignore")
    assert [m.index for m in space.verify_params()] == [BAD]
    with pytest.raises(UnknownNameError, match="check_params"):
        get_space("nds-darts", tmp_path, check_params="loud")


def test_source_option_and_nds_data_subfolder(tmp_path):
    path = write(tmp_path / "elsewhere", "whatever", OTHER_RECORDS["ENAS"], subdir="x")
    assert len(get_space("nds-enas", None, source=path)) == 2
    write(tmp_path / "root", "ENAS", OTHER_RECORDS["ENAS"], subdir="nds/nds_data")  # as data.zip unpacks
    assert len(get_space("nds-enas", tmp_path / "root")) == 2


def test_missing_file_says_what_to_put_where(tmp_path):
    with pytest.raises(MissingDataError) as info:
        get_space("nds-nasnet", tmp_path)
    msg = str(info.value)
    assert "NASNet.json" in msg and str(tmp_path / "nds" / "NASNet.json") in msg
    assert "data.zip" in msg and "facebookresearch/nds" in msg and "source=" in msg
    with pytest.raises(MissingDataError, match=r"source .*is not a file"):
        get_space("nds-nasnet", None, source=tmp_path / "nope.json")


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "nds" / "DARTS.json"
    path.parent.mkdir()
    path.write_text(json.dumps(DARTS_RECORDS[:2])[:-40])  # truncated
    with pytest.raises(DataError, match=r"DARTS\.json.* is not valid JSON"):
        get_space("nds-darts", tmp_path)
    path.write_text(json.dumps({"records": []}))
    with pytest.raises(DataError, match=r"DARTS\.json.*'top' and 'mid'"):
        get_space("nds-darts", tmp_path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("test_ep_top1"), r"record 1: missing 'test_ep_top1'"),
        (lambda r: r.update(test_ep_top1=[]), r"record 1: 'test_ep_top1' must be a non-empty list"),
        (lambda r: r.update(test_ep_top1=[10, "x"]), r"record 1: final 'test_ep_top1'"),
        (lambda r: r.update(params="3M"), r"record 1: 'params' must be a number"),
        (lambda r: r["net"].pop("genotype"), r"record 1: 'net' has no 'genotype'"),
        (lambda r: r["net"]["genotype"]["normal"].__setitem__(0, ["sep_conv_9x9", 0]),
         r"record 1: normal cell, node 0 \(entry 0\): unknown op 'sep_conv_9x9'"),
        (lambda r: r["net"]["genotype"]["normal"].__setitem__(0, ["sep_conv_3x3", 3]),
         r"record 1: .*takes input 3, which is not defined yet"),
        (lambda r: r["net"]["genotype"].update(normal_concat=[2, 3, 9]),
         r"record 1: normal_concat names state 9, which does not exist"),
    ],
)
def test_malformed_records_name_file_and_record(tmp_path, mutate, message):
    records = json.loads(json.dumps(DARTS_RECORDS[2:4]))
    mutate(records[1])
    write(tmp_path, "DARTS", records)
    with pytest.raises(DataError, match=r"DARTS\.json'?, " + message):
        get_space("nds-darts", tmp_path)


def test_op_outside_the_space_vocabulary_is_refused(tmp_path):
    write(tmp_path, "ENAS", [record(DARTS_V2, 16, 8, False, expected_params(DARTS_V2, 16, 8, False))])
    with pytest.raises(DataError, match=r"record 0: .*'dil_conv_3x3' is not in the vocabulary of the ENAS space"):
        get_space("nds-enas", tmp_path)


def test_an_imagenet_sweep_is_refused_by_the_cifar_space_naming_its_own(tmp_path):
    path = write(tmp_path, "DARTS_in", {"top": DARTS_RECORDS[2:3], "mid": []})
    with pytest.raises(DataError, match=r"is an NDS ImageNet file, but space 'nds-darts' builds cifar10 networks; "
                                        r"open it as 'nds-darts-imagenet'"):
        get_space("nds-darts", None, source=path)


def test_bad_queries(darts):
    with pytest.raises(IndexError):
        darts[5]
    with pytest.raises(ZCBenchError, match=r"out of range \(0\.\.4\)"):
        darts.accuracy(-1, "cifar10", "test")
    with pytest.raises(UnknownNameError, match="cifar100"):
        darts.accuracy(0, "cifar100", "test")
    with pytest.raises(UnknownNameError, match="val"):
        darts.accuracy(0, "cifar10", "val")
    with pytest.raises(ArchError, match="not in the vocabulary"):
        darts.build({"genotype": NASNET_A, "width": 16, "depth": 8}, 10)
    other = dict(darts[2], width=18)
    with pytest.raises(UnknownNameError, match="not among the 5 records"):
        darts.index_of(other)
    assert darts.index_of(darts[BAD]) == BAD and darts.index_of(darts[1]) == 1  # aux tells them apart
