"""The ``nb101`` search space over our tables: lookup, accuracies, validation subset, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from zc_proxies import get_space, list_spaces
from zc_proxies.errors import ArchError, DataError, UnknownNameError

C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"


@pytest.fixture(scope="module")
def space(data_root):
    return get_space("nb101", data_root)


@pytest.fixture(scope="module")
def val_table(data_root):
    return pd.read_csv(data_root / "nb101" / "nb101_val_subset20k.csv.gz", dtype={"hash": str})


def test_registered_and_sized(space):
    assert "nb101" in list_spaces()
    assert len(space) == 423_624
    assert space.num_classes("cifar10") == 10


def test_first_cell_and_its_numbers(space, val_table):
    arch = space[0]
    assert arch["ops"] == ["input", C3, MP, C3, C3, C1, "output"]
    assert json.loads(json.dumps(arch)) == arch  # JSON-friendly
    assert space.hash_of(arch) == "00005c142e6f48ac74fdcf73e3439874" == space.arch_key(0)
    assert space.accuracy(0, "cifar10", "test") == pytest.approx(92.06063151359558)
    assert space.accuracy(0, "cifar10", "val") == pytest.approx(100 * val_table.val_acc_108[0])
    assert space.params(0, "cifar10") == 8_555_530


def test_best_cell_matches_the_published_optimum(space):
    # NAS-Bench-101's best mean test accuracy is 94.32 % (hash quoted in PROVENANCE.md)
    i = space.index_of("02e5a0247bbdcf2860b7e96f74961594")
    assert round(space.accuracy(i, "cifar10", "test"), 2) == 94.32
    assert max(space.results.test_acc) == space.results.test_acc[i]


def test_index_of_accepts_every_form(space):
    i = 123_456
    arch = space[i]
    h = space.hash_of(i)
    assert space.index_of(arch) == i
    assert space.index_of((arch["matrix"], arch["ops"])) == i
    assert space.index_of(json.dumps(arch)) == i
    assert space.index_of(h) == i and space.index_of(h.upper()) == i
    assert space.index_of(np.int64(i)) == i

    class OfficialLike:  # the official ModelSpec keeps the raw cell as original_matrix / original_ops
        original_matrix = np.array(arch["matrix"])
        original_ops = arch["ops"]

    assert space.index_of(OfficialLike()) == i


def test_unpruned_cell_finds_its_pruned_entry(space):
    # input -> conv3x3 -> output, plus a max-pool vertex that reaches nothing: pruned away
    raw = {"matrix": [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], "ops": ["input", C3, MP, "output"]}
    i = space.index_of(raw)
    assert space[i] == {"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", C3, "output"]}


def test_validation_subset(space, val_table):
    idx = space.indices_with("cifar10", "val")
    assert len(idx) == 20_001 and list(idx) == val_table["index"].tolist()
    assert space.indices_with("cifar10", "test") == range(423_624)
    vals = np.array([space.accuracy(i, "cifar10", "val") for i in idx[::500]])
    assert np.allclose(vals, 100 * val_table.val_acc_108.to_numpy()[::500])
    with pytest.raises(DataError, match="no stored 'val' accuracy.*20,001 of 423,624.*indices_with"):
        space.accuracy(20_001, "cifar10", "val")


def test_accuracies_are_percentages(space):
    acc = np.array([space.accuracy(i, "cifar10", "test") for i in range(0, len(space), 4241)])
    assert 9 < acc.min() and acc.max() < 95 and 85 < np.median(acc) < 95


def test_bad_names_and_indices(space):
    with pytest.raises(UnknownNameError, match="no dataset 'cifar100'"):
        space.accuracy(0, "cifar100", "test")
    with pytest.raises(UnknownNameError, match="no split 'valid'.*did you mean 'val'"):
        space.accuracy(0, "cifar10", "valid")
    with pytest.raises(IndexError, match="out of range"):
        space[len(space)]
    with pytest.raises(UnknownNameError, match="out of range"):
        space.params(-1, "cifar10")
    with pytest.raises(ArchError, match="32-hex-digit hash or JSON"):
        space.index_of("not a cell")
    with pytest.raises(ArchError, match="did you mean 'conv1x1-bn-relu'"):
        space.index_of({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv1x1-bn-rel", "output"]})
    with pytest.raises(UnknownNameError, match="no option"):
        get_space("nb101", None, sourc="x")


def test_build_by_index_and_by_cell(space):
    a = space.build(5, 10, device="meta")
    b = space.build(space[5], 10, device="meta")
    count = sum(p.numel() for p in a.parameters())
    assert count == sum(p.numel() for p in b.parameters()) == space.params(5, "cifar10")
    torch.manual_seed(0)
    net = space.build(space.index_of({"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"]}), 10)
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_missing_tables_are_reported(tmp_path):
    with pytest.raises(DataError, match="no NAS-Bench-101 table"):
        get_space("nb101", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        get_space("nb101", source=tmp_path / "nasbench_only108.tfrecord")
