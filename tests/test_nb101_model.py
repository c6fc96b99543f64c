"""The NAS-Bench-101 network: channel rule, forward pass, init, and parameter parity with the table."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from zc_proxies import BlockProbe, score
from zc_proxies.spaces.nb101.model import NB101Network, build_network, cell_layers, parameter_count, vertex_channels
from zc_proxies.spaces.nb101.spec import canonical_cell, make_cell

C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)




@pytest.fixture(scope="module")
def table(data_root):
    return pd.read_csv(data_root / "nb101" / "nb101_all.csv.gz", dtype={"matrix": str},
                       usecols=["index", "num_vertices", "matrix", "ops", "params"])


# -- channel rule (hand-worked examples of the official compute_vertex_channels) -----------------


def test_output_channels_split_with_remainder_to_the_earliest():
    # 1, 2, 3 all feed the output: 128 = 43 + 43 + 42
    m = [[0, 1, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert vertex_channels(128, 128, m) == [128, 43, 43, 42, 128]


def test_vertex_not_feeding_output_takes_max_of_successors():
    # 2, 3, 4 feed the output (43, 43, 42); 1 feeds only 2 and 4, so it takes max(43, 42)
    m = np.zeros((6, 6), dtype=int)
    for a, b in [(0, 1), (1, 2), (1, 4), (2, 5), (3, 5), (4, 5), (0, 3)]:
        m[a, b] = 1
    assert vertex_channels(64, 128, m.tolist()) == [64, 43, 43, 43, 42, 128]
    m[1, 2] = 0  # now 1 feeds 4 only: it takes 42
    m[0, 2] = 1
    assert vertex_channels(64, 128, m.tolist()) == [64, 42, 43, 43, 42, 128]


def test_two_vertex_cell_is_one_projection():
    cell = canonical_cell(([[0, 1], [0, 0]], ["input", "output"]))
    assert [(c.name, c.in_channels, c.out_channels, c.kernel) for c in cell_layers(cell, 128, 256)] == [
        ("proj1", 128, 256, 1)]
    # hand count: stem 3*3*3*128 + 2*128, per cell in*out + 2*out, dense 512*10 + 10
    cells = [(128, 128)] * 3 + [(128, 256), (256, 256), (256, 256), (256, 512), (512, 512), (512, 512)]
    expected = 3 * 3 * 3 * 128 + 256 + sum(a * b + 2 * b for a, b in cells) + 512 * 10 + 10
    assert expected == 882_570
    assert parameter_count(cell) == expected == _count(build_network(cell, 10, device="meta"))


def test_inception_cell_parameters():
    # official trainable_parameters of the README's Inception-like cell (PROVENANCE.md)
    matrix = [[0, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0],
              [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]
    cell = canonical_cell((matrix, ["input", C1, C3, C3, C3, MP, "output"]))
    assert _count(build_network(cell, 10, device="meta")) == 2_694_282


# -- forward pass ------------------------------------------------------------------------------


def _truncating_cell():
    # 1 (43 channels) feeds 3 (42 channels): the official code drops the extra channel;
    # the input also feeds the output directly (a projection added to the concatenation)
    m = [[0, 1, 1, 0, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    return canonical_cell((m, ["input", C3, MP, C1, "output"]))


@pytest.mark.parametrize("cell", [
    canonical_cell(([[0, 1], [0, 0]], ["input", "output"])),
    _truncating_cell(),
])
def test_forward_shapes_probes_and_fisher(cell):
    torch.manual_seed(0)
    net = build_network(cell, num_classes=7)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 5])
    out = net(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert sum(isinstance(m, BlockProbe) for m in net.modules()) == 9
    assert math.isfinite(score(net, (x, y), "fisher_potential")) and score(net, (x, y), "fisher") > 0


def test_truncation_is_exercised():
    cell = _truncating_cell()
    assert vertex_channels(128, 128, cell.matrix) == [128, 43, 43, 42, 128]
    assert cell.matrix[1][3] == 1


def test_odd_input_size_downsamples_like_tf_same_padding():
    net = build_network(canonical_cell(([[0, 1], [0, 0]], ["input", "output"])))
    shapes = []
    net.layers[-1].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    net(torch.randn(1, 3, 9, 9))
    assert shapes[0][-2:] == (3, 3)  # 9 -> 5 -> 3, as TF's 'same' 2x2/2 pooling gives


def test_official_initialisation_and_bn_settings():
    torch.manual_seed(0)
    net = build_network(canonical_cell(([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"])))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    fan_in = big.weight[0].numel()
    w = big.weight.detach()
    assert w.std().item() == pytest.approx(math.sqrt(1 / fan_in), rel=0.02)  # variance scaling, fan-in
    assert w.abs().max().item() <= 2 * math.sqrt(1 / fan_in) / 0.8796256610342398 + 1e-6  # truncated at 2 sd
    assert all(m.bias is None for m in convs)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.momentum == pytest.approx(0.003) and m.affine for m in bns)
    limit = math.sqrt(6 / (512 + 10))  # Glorot uniform
    assert net.classifier.weight.abs().max().item() <= limit and net.classifier.weight.std().item() > limit / 3
    assert torch.count_nonzero(net.classifier.bias) == 0


def test_meta_build_holds_no_memory():
    net = build_network(canonical_cell(([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"])),
                        device="meta")
    assert all(p.is_meta for p in net.parameters())


# -- parameter parity with the stored table ---------------------------------------------------------


def _cells(table, rows):
    return [(int(i), make_cell(table.matrix.values[i], table.ops.values[i])) for i in rows]


def test_parameter_parity_seeded_sample(table):
    """20,000 cells through cell_layers (what build instantiates); 100 of them built on the meta device."""
    rows = np.random.default_rng(7).choice(len(table), 20_000, replace=False)
    cells = _cells(table, rows)
    bad = [i for i, c in cells if parameter_count(c) != table.params.values[i]]
    assert not bad, f"{len(bad)} parameter mismatches, e.g. index {bad[:5]}"
    bad = [i for i, c in cells[:100] if _count(build_network(c, 10, device="meta")) != table.params.values[i]]
    assert not bad, f"built networks differ from the table at index {bad[:5]}"


def test_every_vertex_count_is_built_correctly(table):
    # one cell per vertex count (2..7); the smallest built for real on the CPU, the others on meta
    for v in range(2, 8):
        i = int(np.flatnonzero(table.num_vertices.values == v)[0])
        net = NB101Network(make_cell(table.matrix.values[i], table.ops.values[i]), 10,
                           device=None if v == 2 else "meta")
        assert _count(net) == table.params.values[i], f"index {i} ({v} vertices)"


@pytest.mark.slow
def test_parameter_parity_every_arch_from_layout(table):
    """All 423,624 cells through cell_layers (a few minutes); the meta-device build of all is below."""
    bad = [int(i) for i, m, o in zip(table["index"], table.matrix.values, table.ops.values)
           if parameter_count(make_cell(m, o)) != table.params.values[i]]
    assert not bad, f"{len(bad)} parameter mismatches, e.g. index {bad[:5]}"


def _meta_counts(args):
    rows, matrices, ops = args
    torch.set_num_threads(1)
    return [(r, _count(build_network(make_cell(m, o), 10, device="meta"))) for r, m, o in zip(rows, matrices, ops)]


@pytest.mark.slow
def test_parameter_parity_every_arch_built_on_meta(table):
    """Builds all 423,624 networks on the meta device (two processes) and counts their parameters.

    Module construction dominates: 20-100 ms per network depending on the
    machine's load, so this takes one to several hours on 2 cores.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    start = time.perf_counter()
    n = len(table)
    assert n == 423_624
    chunks = [np.arange(k, min(k + 5000, n)) for k in range(0, n, 5000)]
    jobs = [(c, table.matrix.values[c], table.ops.values[c]) for c in chunks]
    bad = []
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        for results in pool.map(_meta_counts, jobs):
            bad += [int(r) for r, count in results if count != table.params.values[r]]
    print(f"built {n} networks on meta in {time.perf_counter() - start:.0f} s")
    assert not bad, f"{len(bad)} parameter mismatches, e.g. index {bad[:5]}"


def test_the_pooled_features_are_a_module_zen_can_read(data_root):
    """Global pooling is an nn.AdaptiveAvgPool2d, so proxies that read the features before it (zen) work."""
    from zc_proxies import get_space

    space = get_space("nb101", data_root)
    torch.manual_seed(0)
    net = space.build(space[5])
    assert isinstance(net.pool, nn.AdaptiveAvgPool2d)
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(net(x), net.classifier(net.layers(x).mean(dim=(2, 3))), atol=1e-6)
    assert score(net, x, "zen", seed=1) > 0
