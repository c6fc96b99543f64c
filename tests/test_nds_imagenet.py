"""The NDS ImageNet cell network: every record's params and flops, built networks, probes, aux head.

The records are the official NDS ImageNet sweeps under ``$ZCBENCH_DATA/nds/``
(read, never copied). pycls's ``NetworkImageNet`` (``pycls/models/nas/nas.py``)
is the network they were trained with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from test_nds_fixtures import AMOEBA_A, DARTS_V2, NASNET_A, PNASNET, count
from torch import nn

from zc_proxies import BlockProbe, score
from zc_proxies.errors import ArchError
from zc_proxies.runs.seeding import rng
from zc_proxies.spaces.nds.bench import read_nds_json
from zc_proxies.spaces.nds.genotype import NDSArch, parse_arch, parse_genotype
from zc_proxies.spaces.nds.model import (
    AuxiliaryHeadImageNet,
    NDSNetwork,
    aux_head_param_count,
    build_network,
    flops_count,
    param_count,
)
from zc_proxies.spaces.nds.ops import OPS, VOCABULARIES, make_op, op_flops

# file -> (family, records)
FILES = {
    "DARTS_in.json": ("DARTS", 121),
    "ENAS_in.json": ("ENAS", 117),
    "NASNet_in.json": ("NASNet", 122),
    "PNAS_in.json": ("PNAS", 119),
    "Amoeba_in.json": ("Amoeba", 124),
    "DARTS_fix-w-d_in.json": ("DARTS", 499),
    "DARTS_lr-wd_in.json": ("DARTS", 515),
}
PER_FILE_BUILT = 3  # networks built (on the meta device) per file

_CACHE: dict[str, list[tuple[Mapping[str, Any], NDSArch]]] = {}


def _records(data_root, name: str) -> list[tuple[Mapping[str, Any], NDSArch]]:
    """(raw record, parsed architecture) pairs of one file, read once per session."""
    if name not in _CACHE:
        path = data_root / "nds" / name
        if not path.is_file():
            pytest.fail(f"{path} is missing: the NDS ImageNet records live under $ZCBENCH_DATA/nds/")
        family = FILES[name][0]
        _CACHE[name] = [(r, parse_arch(r["net"], VOCABULARIES[family], family)) for r in read_nds_json(path)]
    return _CACHE[name]


def _sample(data_root, name: str) -> list[tuple[Mapping[str, Any], NDSArch]]:
    records = _records(data_root, name)
    picks = rng(0, "sample").choice(len(records), size=PER_FILE_BUILT, replace=False)
    return [records[int(i)] for i in picks]


def _meta_net(arch: NDSArch, **kw) -> NDSNetwork:
    with torch.device("meta"):
        return build_network(arch, imagenet=True, **kw)


# -- an independent FLOPs counter: the NDS rule applied to a module's forward pass -------------
def _out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1  # dilation ignored, as the NDS counts do


def _rule_hook(counter: list[int]):
    """A forward hook adding each module's FLOPs by the NDS rule to ``counter[0]``."""

    def hook(m, inputs, _output):
        x = inputs[0]
        if isinstance(m, nn.Conv2d):
            h = _out(x.shape[2], m.kernel_size[0], m.stride[0], m.padding[0])
            counter[0] += m.weight.numel() * h * _out(x.shape[3], m.kernel_size[1], m.stride[1], m.padding[1])
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            k, s, p = m.kernel_size, m.stride, m.padding
            counter[0] += k * k * x.shape[1] * _out(x.shape[2], k, s, p) * _out(x.shape[3], k, s, p)
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.ReLU)):
            counter[0] += x.numel()
        elif isinstance(m, nn.Linear):
            counter[0] += m.in_features * m.out_features + m.out_features

    return hook


def rule_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs by the NDS rule of the modules ``model`` runs on ``x`` (in eval mode, no grad)."""
    counter = [0]
    handles = [m.register_forward_hook(_rule_hook(counter)) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return counter[0]


def hook_flops(model: nn.Module, size: int = 224) -> int:
    """FLOPs of a meta-device ``model`` on one ``size`` px image."""
    return rule_flops(model, torch.zeros(1, 3, size, size, device="meta"))


# -- (1) params and (3) flops of every record, closed form ---------------------------------------
def _mismatches(records, counter, field: str) -> list[tuple[int, int, int]]:
    """(index, stored, computed) of the records whose ``field`` differs from ``counter(arch)``."""
    out = []
    for i, (rec, arch) in enumerate(records):
        computed = counter(arch)
        if computed != rec[field]:
            out.append((i, rec[field], computed))
    return out


@pytest.mark.parametrize("name", list(FILES))
def test_params_of_every_record(data_root, name):
    records = _records(data_root, name)
    assert len(records) == FILES[name][1]
    bad = _mismatches(records, lambda arch: param_count(arch, 1000, imagenet=True), "params")
    assert not bad, f"{len(bad)} of {len(records)} records: (index, stored, built) {bad[:5]}"


@pytest.mark.parametrize("name", list(FILES))
def test_flops_of_every_record(data_root, name):
    records = _records(data_root, name)
    bad = _mismatches(records, lambda arch: flops_count(arch, 1000, imagenet=True), "flops")
    assert not bad, f"{len(bad)} of {len(records)} records: (index, stored, counted) {bad[:5]}"


def test_the_sweeps_cover_every_op_of_each_vocabulary(data_root):
    """The record checks exercise every op of the five vocabularies (so every op's count is checked)."""
    for family, vocabulary in VOCABULARIES.items():
        used = set()
        for name, (fam, _) in FILES.items():
            if fam == family:
                for _, arch in _records(data_root, name):
                    used |= arch.genotype.ops
        assert used == set(vocabulary), (family, set(vocabulary) - used)


# -- (2) built networks have the stored count; (3) their FLOPs by the rule are the stored ones ------
@pytest.mark.parametrize("name", list(FILES))
def test_built_networks_match_their_records(data_root, name):
    for rec, arch in _sample(data_root, name):
        net = _meta_net(arch)
        assert count(net) == param_count(arch, imagenet=True) == rec["params"]
        assert hook_flops(net) == flops_count(arch, imagenet=True) == rec["flops"]


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_flops_equal_the_rule_on_the_built_op(name, stride):
    op = make_op(name, 6, stride)
    for size in ((8, 8), (7, 7), (9, 6)):
        assert rule_flops(op, torch.zeros(1, 6, *size)) == op_flops(name, 6, stride, size), (name, stride, size)


# -- the structure -----------------------------------------------------------------------------
def test_imagenet_structure_and_spatial_sizes():
    torch.manual_seed(0)
    arch = NDSArch(parse_genotype(DARTS_V2), 16, 8)
    net = build_network(arch, imagenet=True).eval()
    assert net.imagenet and not hasattr(net, "stem")
    assert [type(m).__name__ for m in net.stem0] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert [type(m).__name__ for m in net.stem1] == ["ReLU", "Conv2d", "BatchNorm2d"]
    assert (net.stem0[0].out_channels, net.stem0[3].out_channels, net.stem1[1].out_channels) == (8, 16, 16)
    assert all(conv.stride == (2, 2) for conv in (net.stem0[0], net.stem0[3], net.stem1[1]))
    assert type(net.cells[0].preprocess0).__name__ == "FactorizedReduce"  # reduction_prev at the start
    assert [c.reduction for c in net.cells] == [i in (2, 5) for i in range(8)]
    assert net.classifier.out_features == 1000
    outputs = []
    handles = [c.probe.register_forward_hook(lambda m, i, o: outputs.append(o)) for c in net.cells]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        s0, s1 = net.stems(x)
        logits = net(x)
    for h in handles:
        h.remove()
    assert s0.shape[1:] == (16, 56, 56) and s1.shape[1:] == (16, 28, 28)
    assert [o.shape[-1] for o in outputs] == [28, 28, 14, 14, 14, 7, 7, 7]
    assert [o.shape[1] for o in outputs] == [4 * 16 * (1 if i < 2 else 2 if i < 5 else 4) for i in range(8)]
    # the adaptive pool is the original AvgPool2d(7) at 224 px
    pooled = nn.AvgPool2d(7)(outputs[-1]).flatten(1)
    assert torch.allclose(net.classifier(pooled), logits, atol=1e-5)


def test_cifar_network_is_unchanged_by_the_variant():
    arch = NDSArch(parse_genotype(DARTS_V2), 36, 20)
    with torch.device("meta"):
        net = build_network(arch)
    assert not net.imagenet and hasattr(net, "stem") and not hasattr(net, "stem0")
    assert count(net) == param_count(arch) == 3_349_342 and net.classifier.out_features == 10


# -- (4) a real small ImageNet network: forward, fisher_potential, one probe per cell ------------
def test_small_imagenet_network_scores_with_one_probe_per_cell():
    torch.manual_seed(0)
    arch = NDSArch(parse_genotype(NASNET_A, VOCABULARIES["NASNet"], "NASNet"), 8, 5)
    net = build_network(arch, imagenet=True)
    probes = [m for m in net.modules() if isinstance(m, BlockProbe)]
    assert len(probes) == len(net.cells) == 5
    x, y = torch.randn(2, 3, 112, 112), torch.tensor([3, 999])
    assert net(x).shape == (2, 1000)
    s = score(net, (x, y), "fisher_potential")
    assert s == s and s > 0
    assert count(net) == param_count(arch, imagenet=True)


# -- (5) the auxiliary head -----------------------------------------------------------------------
@pytest.mark.parametrize("genotype,family", [(DARTS_V2, "DARTS"), (PNASNET, "PNAS"), (AMOEBA_A, "Amoeba")])
def test_aux_head_adds_exactly_its_parameters(genotype, family):
    g = parse_genotype(genotype, VOCABULARIES[family], family)
    for width, depth in ((32, 10), (16, 3)):
        with_aux, without = NDSArch(g, width, depth, True), NDSArch(g, width, depth, False)
        net_aux, net = _meta_net(with_aux), _meta_net(without)
        head = net_aux.auxiliary_head
        assert isinstance(head, AuxiliaryHeadImageNet) and net.auxiliary_head is None
        c_aux = net_aux.cells[2 * depth // 3].out_channels
        assert count(net_aux) - count(net) == count(head) == aux_head_param_count(c_aux, 1000, imagenet=True)
        assert param_count(with_aux, imagenet=True) - param_count(without, imagenet=True) == count(head)
        assert count(head) == c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 768 * 1000 + 1000  # no BN after the 768 conv
        assert not any(isinstance(m, nn.BatchNorm2d) and m.num_features == 768 for m in head.modules())
        # evaluation-mode FLOPs: the head does not run, so it is not counted
        assert flops_count(with_aux, imagenet=True) == flops_count(without, imagenet=True) == hook_flops(net_aux)


def test_aux_logits_at_224_px():
    torch.manual_seed(0)
    net = build_network(NDSArch(parse_genotype(DARTS_V2), 8, 5, True), 7, imagenet=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits, aux_logits = net(x, return_aux=True)
        assert torch.equal(logits, net(x))
    assert logits.shape == aux_logits.shape == (1, 7)


def test_bad_width():
    with pytest.raises(ArchError, match="width >= 2"):
        build_network(NDSArch(parse_genotype(DARTS_V2), 1, 3), imagenet=True)
