"""NAS-Bench-201 space: arch strings, the network, parameter parity, stored results, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import zc_proxies
from zc_proxies import BlockProbe
from zc_proxies.errors import ArchError, DataError, MissingDataError, UnknownNameError
from zc_proxies.spaces.nb201 import NB201Space, format_arch, parse_arch
from zc_proxies.spaces.nb201.bench import Results, read_table

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
HEADS = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"


@pytest.fixture(scope="module")
def space(data_root):
    return zc_proxies.get_space("nb201", data_root)




def product_archs():
    """Every arch string, written out independently of the package's formatter."""
    for o in itertools.product(OPS, repeat=6):
        yield f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def closed_form_params(arch: str, num_classes: int) -> int:
    """Parameter count from the paper's layout, counted by hand (9C^2+2C per 3x3 edge, C^2+2C per 1x1)."""
    n3, n1 = arch.count("nor_conv_3x3"), arch.count("nor_conv_1x1")
    total = 3 * 9 * 16 + 2 * 16                                         # stem conv + BN
    for c in (16, 32, 64):                                              # 5 cells per stage
        total += 5 * (n3 * (9 * c * c + 2 * c) + n1 * (c * c + 2 * c))
    for c_in, c_out in ((16, 32), (32, 64)):                            # residual reduction blocks
        total += 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out + c_in * c_out
    return total + 2 * 64 + 64 * num_classes + num_classes              # last BN + classifier


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- the index and the arch strings -------------------------------------------------------------

def test_len_and_every_arch_once(space):
    assert len(space) == 15_625
    assert set(space) == set(product_archs())


def test_round_trip_every_index(space):
    assert all(space.index_of(space[i]) == i for i in range(len(space)))
    assert space.index_of(7) == 7


def test_official_indexes(space):
    # Index 0 and the best CIFAR-10 cell are fixed by the benchmark (NAS-Bench-201 paper / API docs).
    assert space[0] == "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert space.index_of(" " + space[6111] + "\n") == 6111


def test_format_parse_round_trip():
    for arch in itertools.islice(product_archs(), 0, None, 37):
        assert format_arch(parse_arch(arch)) == arch
    assert parse_arch(ALL_CONV) == ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3",
                                    "skip_connect", "nor_conv_3x3", "none")


@pytest.mark.parametrize("arch, message", [
    ("|nor_conv3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "did you mean 'nor_conv_3x3'"),
    ("|max_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'max_pool_3x3'"),
    ("|none~0|+|none~0|none~1|", "2 node(s)"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "4 node(s)"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 incoming edge"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|", "node 3 has 4 incoming edge"),
    ("|none~0|+|none~0||none~1|+|none~0|none~1|none~2|", "empty edge"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", "must start and end with '|'"),
    ("|none-0|+|none~0|none~1|+|none~0|none~1|none~2|", "exactly one '~'"),
    ("|none~0~0|+|none~0|none~1|+|none~0|none~1|none~2|", "exactly one '~'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "source index must be 0, got '1'"),
    ("|none~0|+|none~0|none~1|+|none~0|none~2|none~1|", "source index must be 1, got '2'"),
    ("", "1 node(s)"),
])
def test_malformed_arch(space, arch, message):
    with pytest.raises(ArchError) as err:
        space.index_of(arch)
    assert message in str(err.value)
    with pytest.raises(ArchError):
        space.build(arch, 10)


def test_non_string_arch(space):
    with pytest.raises(ArchError, match="arch string or an index"):
        space.index_of(3.5)
    with pytest.raises(ArchError):
        parse_arch(None)


def test_index_out_of_range(space):
    for bad in (15_625, -1):
        with pytest.raises(UnknownNameError, match="out of range"):
            space[bad]
        with pytest.raises(IndexError):
            space.accuracy(bad, "cifar10", "test")


def test_well_formed_but_absent_arch(space):
    table = space.results.table.iloc[:-1]
    partial = NB201Space(Results(table, "partial", "naslib"))
    with pytest.raises(UnknownNameError, match="well formed but not listed"):
        partial.index_of(space[len(space) - 1])


# -- stored results -----------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, split, best, argmax", [
    # NAS-Bench-201 paper, optimal accuracies (and PROVENANCE.md's argmax).
    ("cifar10-valid", "val", 91.61, 6111),
    ("cifar10", "test", 94.37, 6111),
    ("cifar100", "val", 73.49, 9930),
    ("cifar100", "test", 73.51, 9930),
    ("imagenet16-120", "val", 46.77, 10676),
    ("imagenet16-120", "test", 47.31, 857),
])
def test_accuracy_maxima_match_paper(space, dataset, split, best, argmax):
    accs = np.array([space.accuracy(i, dataset, split) for i in range(len(space))])
    assert round(float(accs.max()), 2) == best
    assert int(accs.argmax()) == argmax
    assert 0 <= accs.min() and accs.max() <= 100


def test_missing_pairs_and_names_are_refused(space):
    for dataset, split in (("cifar10", "val"), ("cifar10-valid", "test")):
        with pytest.raises(UnknownNameError) as err:
            space.accuracy(0, dataset, split)
        assert "available: cifar10-valid/val, cifar10/test" in str(err.value)
    with pytest.raises(UnknownNameError, match="did you mean 'imagenet16-120'"):
        space.accuracy(0, "imagenet16", "val")
    with pytest.raises(UnknownNameError, match="cifar10-valid, cifar10, cifar100, imagenet16-120"):
        space.params(0, "svhn")
    with pytest.raises(UnknownNameError, match="val, test"):
        space.accuracy(0, "cifar100", "valid")


def test_num_classes(space):
    assert [space.num_classes(d) for d in space.datasets] == [10, 10, 100, 120]


def test_params_and_flops_columns(space):
    # Index 0 (two 1x1 convs, one pool) counted by hand; FLOPs: PROVENANCE's exact linear fit.
    assert space.params(0, "cifar10") == closed_form_params(space[0], 10) == 129_306
    assert space.params(0, "cifar10-valid") == space.params(0, "cifar10")
    assert space.params(0, "cifar100") - space.params(0, "cifar10") == 90 * 65
    assert math.isclose(space.flops(0, "cifar10"), 7.943872 + 2 * 4.36224 + 1.29024, rel_tol=1e-9)
    assert isinstance(space.params(0, "cifar10"), int)


def test_params_table_matches_closed_form_for_all(space):
    for dataset, k in HEADS.items():
        got = [space.params(i, dataset) for i in range(len(space))]
        assert got == [closed_form_params(a, k) for a in space]


def _check_parity(space, indexes, datasets):
    wrong = []
    with torch.device("meta"):
        for i, dataset in itertools.product(indexes, datasets):
            model = space.build(int(i), space.num_classes(dataset))
            if trainable(model) != space.params(int(i), dataset):
                wrong.append((int(i), dataset, trainable(model), space.params(int(i), dataset)))
    assert not wrong, f"{len(wrong)} mismatches, e.g. {wrong[:3]}"


def test_param_parity_sample(space):
    """1,000 seeded archs; each built once, its head cycling through the three datasets."""
    sample = np.random.default_rng(201).choice(len(space), size=1000, replace=False)
    for k, dataset in enumerate(HEADS):
        _check_parity(space, sample[k::3], [dataset])


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(HEADS))
def test_param_parity_all(space, dataset):
    """Every arch with every head (about 10 minutes per head on one core)."""
    _check_parity(space, range(len(space)), [dataset])


# -- the network --------------------------------------------------------------------------------

@pytest.mark.parametrize("size, k", [(32, 10), (32, 100), (16, 120)])
def test_output_shape(space, size, k):
    torch.manual_seed(0)
    model = space.build(ALL_CONV, k)
    out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, k) and torch.isfinite(out).all()


def test_build_by_index_and_official_module_names(space):
    model = space.build(0, 10)
    assert model.arch == space[0]
    keys = set(model.state_dict())
    for key in ("stem.0.weight", "stem.1.running_mean", "cells.0.layers.1.op.1.weight",
                "cells.5.conv_a.op.1.weight", "cells.5.conv_b.op.2.bias", "cells.5.downsample.1.weight",
                "cells.11.conv_a.op.1.weight", "cells.16.layers.3.op.1.weight", "lastact.0.weight",
                "classifier.weight"):
        assert key in keys, key
    assert model.cells[5].conv_a.op[1].stride == (2, 2)
    assert model.cells[11].downsample[1].weight.shape == (64, 32, 1, 1)
    with pytest.raises(zc_proxies.ZCBenchError):
        space.build(0, 0)


def _cell(arch: str, channels: int = 4):
    from zc_proxies.spaces.nb201.model import Cell
    return Cell(parse_arch(arch), channels).eval()


def test_cell_sums_nodes():
    x = torch.randn(2, 4, 5, 5)
    skip = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    assert torch.allclose(_cell(skip)(x), 4 * x)                  # n1 = x, n2 = 2x, n3 = x + x + 2x
    assert torch.count_nonzero(_cell("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")(x)) == 0
    only_last = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert torch.equal(_cell(only_last)(x), x)


def test_avg_pool_excludes_padding():
    x = torch.rand(1, 4, 5, 5)
    arch = "|none~0|+|none~0|none~1|+|avg_pool_3x3~0|none~1|none~2|"
    corner = x[0, :, :2, :2].mean(dim=(1, 2))                       # 4 real pixels, padding not counted
    assert torch.allclose(_cell(arch)(x)[0, :, 0, 0], corner)
    assert torch.allclose(_cell(arch)(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))


def test_conv_op_is_relu_conv_bn():
    cell = _cell("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    op = cell.layers[0].op
    assert [type(m).__name__ for m in op] == ["ReLU", "Conv2d", "BatchNorm2d"]
    assert op[1].bias is None and op[2].affine and op[1].padding == (1, 1)
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(cell(x), op[2](op[1](torch.relu(x))))


def test_block_probes(space):
    model = space.build(ALL_CONV, 10)
    probes = [name for name, m in model.named_modules() if isinstance(m, BlockProbe)]
    assert len(probes) == 17
    assert {p.split(".")[1] for p in probes} == {str(i) for i in range(17)}
    assert "cells.5.probe" in probes and "cells.11.probe" in probes


def test_fisher_potential_on_network(space):
    """score() agrees with a hand computation of BlockSwap's Fisher potential at the 17 probes."""
    torch.manual_seed(1)
    model = space.build(ALL_CONV, 10)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    value = zc_proxies.score(model, (x, y), "fisher_potential")

    ref = space.build(ALL_CONV, 10)
    ref.load_state_dict(model.state_dict())
    ref.train()
    acts = []

    def keep(_module, _inputs, out):
        out.retain_grad()
        acts.append(out)

    handles = [m.register_forward_hook(keep) for m in ref.modules() if isinstance(m, BlockProbe)]
    F.cross_entropy(ref(x), y).backward()
    for h in handles:
        h.remove()
    expected = sum(0.5 * (a.detach() * a.grad).sum(dim=(2, 3)).double().pow(2).mean(0).sum() for a in acts)
    assert len(acts) == 17
    assert math.isclose(value, float(expected), rel_tol=1e-4)
    assert value > 0


# -- opening the table --------------------------------------------------------------------------

def test_default_root_from_environment(monkeypatch, data_root):
    monkeypatch.setenv("ZCBENCH_DATA", str(data_root))
    assert len(zc_proxies.get_space("nb201")) == 15_625
    monkeypatch.delenv("ZCBENCH_DATA")
    with pytest.raises(MissingDataError):
        zc_proxies.get_space("nb201")


def test_missing_table(tmp_path):
    with pytest.raises(MissingDataError) as err:
        zc_proxies.get_space("nb201", tmp_path)
    assert str(tmp_path / "nb201" / "nb201.csv.gz") in str(err.value) and "put nb201.csv.gz" in str(err.value)


def test_truncated_table(tmp_path, data_root):
    raw = (data_root / "nb201" / "nb201.csv.gz").read_bytes()
    (tmp_path / "nb201").mkdir()
    bad = tmp_path / "nb201" / "nb201.csv.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        zc_proxies.get_space("nb201", tmp_path)
    assert str(bad) in str(err.value)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_table(bad)


def test_table_missing_columns_or_rows(tmp_path, data_root):
    full = pd.read_csv(data_root / "nb201" / "nb201.csv.gz")
    path = tmp_path / "t.csv"
    full.iloc[:50].drop(columns=["cifar100_val_acc", "flops_m_cifar10"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks the column.*cifar100_val_acc, flops_m_cifar10") as err:
        zc_proxies.get_space("nb201", source=path)
    assert str(path) in str(err.value)
    full.iloc[:100].to_csv(path, index=False)
    with pytest.raises(DataError, match="lists 100 architectures"):
        read_table(path)
    broken = full.copy()
    broken.loc[3, "arch"] = broken.loc[3, "arch"].replace("~0", "~9", 1)
    broken.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"line 5 \(index 3, arch .*malformed arch .*source index must be 0, got '9'"):
        read_table(path)


def test_unknown_option(data_root):
    with pytest.raises(UnknownNameError, match="no option.*sourec"):
        zc_proxies.get_space("nb201", data_root, sourec="x.pth")
