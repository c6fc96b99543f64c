"""NDS AnyNet spaces: every record's params and flops, built modules, probes, scoring, bad configs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn

from zc_proxies import BlockProbe, score
from zc_proxies.errors import ArchError
from zc_proxies.runs.seeding import rng
from zc_proxies.spaces.nds.anynet import (
    BN_FLOPS_PER_ELEMENT,
    AnyNetArch,
    AnyNetStage,
    anynet_flops,
    anynet_param_count,
    build_anynet,
    from_net,
)
from zc_proxies.spaces.nds.bench import read_nds_json

# file -> (records, ImageNet?, classes)
FILES = {
    "ResNeXt-A_in.json": (130, True, 1000),
    "ResNeXt-B_in.json": (164, True, 1000),
    "ResNet_lr-wd_in.json": (494, True, 1000),
    "Vanilla_lr-wd_in.json": (500, True, 1000),
    "ResNet_reruns.json": (200, False, 10),
    "Vanilla_reruns.json": (200, False, 10),
}

_CACHE: dict[str, list[Mapping[str, Any]]] = {}


def _records(data_root, name: str) -> list[Mapping[str, Any]]:
    if name not in _CACHE:
        path = data_root / "nds" / name
        if not path.is_file():
            pytest.fail(f"{path} is missing: the NDS AnyNet records live under $ZCBENCH_DATA/nds/")
        _CACHE[name] = read_nds_json(path)
    return _CACHE[name]


# -- (1) params of every record, closed form; (3) flops of every record, closed form -------------------------
@pytest.mark.parametrize("name", list(FILES))
def test_params_and_flops_of_every_record(data_root, name):
    count, imagenet, classes = FILES[name]
    records = _records(data_root, name)
    assert len(records) == count
    bad_params, bad_flops = [], []
    for i, rec in enumerate(records):
        arch = from_net(rec["net"], imagenet)
        if anynet_param_count(arch, classes) != rec["params"]:
            bad_params.append((i, rec["params"] - anynet_param_count(arch, classes)))
        if anynet_flops(arch, classes) != rec["flops"]:
            bad_flops.append((i, rec["flops"] - anynet_flops(arch, classes)))
    assert not bad_params, f"{name}: (record, stored - built params) {bad_params[:10]}"
    assert not bad_flops, f"{name}: (record, stored - built flops) {bad_flops[:10]}"


@pytest.mark.parametrize("name", list(FILES))
def test_canonical_form_round_trips(data_root, name):
    _, imagenet, _ = FILES[name]
    for rec in _records(data_root, name):
        arch = from_net(rec["net"], imagenet)
        assert arch.to_json() == rec["net"]
        assert from_net(arch.to_json()) == arch
        assert AnyNetArch.from_net(rec["net"]).key() == arch.key()
        assert arch.imagenet is imagenet
    archs = {from_net(r["net"]).key() for r in _records(data_root, name)}
    assert len(archs) >= 2


def test_stems_by_file(data_root):
    stems = {name: {from_net(r["net"]).stem for r in _records(data_root, name)} for name in FILES}
    assert stems["ResNeXt-A_in.json"] == stems["ResNeXt-B_in.json"] == {"deep_stem_in"}
    assert stems["ResNet_lr-wd_in.json"] == stems["Vanilla_lr-wd_in.json"] == {"res_stem_in"}
    assert stems["ResNet_reruns.json"] == stems["Vanilla_reruns.json"] == {"res_stem_cifar"}


# -- (2) the built module has exactly the closed-form count; (3) its flops, counted on the module ------------
def _sample(data_root, name: str, k: int) -> list[Mapping[str, Any]]:
    records = _records(data_root, name)
    picks = rng(0, "sample").choice(len(records), size=k, replace=False)
    return [records[int(i)] for i in picks]


def _module_flops(model: nn.Module, size: int) -> int:
    """Flops of one meta-device forward, counted per module the way the NDS records count them."""
    total = 0

    def hook(m: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += m.weight.numel() * out.shape[2] * out.shape[3]
        elif isinstance(m, nn.BatchNorm2d):
            total += BN_FLOPS_PER_ELEMENT * out[0].numel()
        elif isinstance(m, nn.Linear):
            total += m.weight.numel() + m.bias.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize("name", list(FILES))
def test_meta_module_matches_closed_forms(data_root, name):
    _, imagenet, classes = FILES[name]
    for i, rec in enumerate(_sample(data_root, name, 3)):
        arch = from_net(rec["net"], imagenet)
        with torch.device("meta"):
            model = build_anynet(arch, classes)
        assert sum(p.numel() for p in model.parameters()) == anynet_param_count(arch, classes) == rec["params"]
        assert sum(isinstance(m, BlockProbe) for m in model.modules()) == arch.num_blocks
        if i == 0:  # a forward pass on the meta device: shapes only
            assert _module_flops(model, 224 if imagenet else 32) == rec["flops"]


# -- (4) real forward and fisher_potential ----------------------------------------------------------------------
TINY_CIFAR = {
    "res_bottleneck_block": {"block_type": "res_bottleneck_block", "ds": [1, 2, 1], "ws": [8, 16, 24],
                             "ss": [1, 1, 2], "bot_muls": [1.0, 0.5, 1.0], "num_gs": [1, 2, 3]},
    "res_basic_block": {"block_type": "res_basic_block", "ds": [1, 1, 2], "ws": [8, 8, 16],
                        "ss": [1, 1, 2], "bot_muls": [], "num_gs": []},
    "double_plain_block": {"block_type": "double_plain_block", "ds": [1, 2, 1], "ws": [8, 12, 16],
                           "ss": [1, 1, 2], "bot_muls": [], "num_gs": []},
}
SMALL_IMAGENET = [  # the ResNeXt stride-8 stem and the ResNet 7x7 + max-pool stem, tiny widths
    {"block_type": "res_bottleneck_block", "ds": [1, 1, 1], "ws": [8, 16, 16], "ss": [8, 1, 2],
     "bot_muls": [1.0, 0.25, 0.5], "num_gs": [1, 2, 4]},
    {"block_type": "res_basic_block", "ds": [1, 1, 1], "ws": [8, 8, 16], "ss": [4, 1, 2],
     "bot_muls": [], "num_gs": []},
]


def _score(net: dict, imagenet: bool, classes: int, size: int) -> None:
    arch = from_net(net, imagenet)
    torch.manual_seed(0)
    model = build_anynet(arch, classes)
    assert sum(p.numel() for p in model.parameters()) == anynet_param_count(arch, classes)
    probes = [m for m in model.modules() if isinstance(m, BlockProbe)]
    assert len(probes) == arch.num_blocks == sum(net["ds"][1:])
    x = torch.randn(4, 3, size, size)
    y = torch.arange(4) % classes
    assert model(x).shape == (4, classes)
    s = score(model, (x, y), "fisher_potential")
    assert isinstance(s, float) and s == s and s > 0


@pytest.mark.parametrize("block_type", list(TINY_CIFAR))
def test_tiny_cifar_forward_and_fisher_potential(block_type):
    _score(TINY_CIFAR[block_type], False, 10, 32)


@pytest.mark.parametrize("net", SMALL_IMAGENET, ids=["deep_stem_in", "res_stem_in"])
def test_small_imagenet_forward_and_fisher_potential(net):
    _score(net, True, 1000, 224)


def test_probe_sits_before_the_residual_add():
    arch = from_net(TINY_CIFAR["res_bottleneck_block"])
    torch.manual_seed(0)
    model = build_anynet(arch, 10).eval()
    block = model.stages[1].b1  # width and stride change: projection shortcut
    seen = {}
    block.f[-1].register_forward_hook(lambda m, i, o: seen.update(probe=o))
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    assert block.proj_block
    assert torch.allclose(out, torch.relu(block.bn(block.proj(x)) + seen["probe"]))
    plain = build_anynet(from_net(TINY_CIFAR["double_plain_block"]), 10).eval()
    b = plain.stages[0].b1
    b.probe.register_forward_hook(lambda m, i, o: seen.update(plain=o))
    z = torch.randn(2, 8, 8, 8)
    assert torch.allclose(b(z), torch.relu(seen["plain"]))
    assert torch.allclose(seen["plain"], b.b_bn(b.b(b.a_relu(b.a_bn(b.a(z))))))


def test_pycls_init_and_default_init():
    arch = from_net(TINY_CIFAR["res_basic_block"])
    model = build_anynet(arch, 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all()) and bool((m.bias == 0).all()) for m in bns)
    assert bool((model.fc.bias == 0).all())
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.2)
    plain = build_anynet(arch, 10, pycls_init=False)
    assert not bool((plain.fc.bias == 0).all())
    assert sum(p.numel() for p in plain.parameters()) == anynet_param_count(arch, 10)


def test_closed_forms_by_hand():
    # CIFAR: 3x3 stem 3->4, one basic block 4->8 stride 2 (projection), 10 classes
    arch = AnyNetArch("res_basic_block", "res_stem_cifar", 4, (AnyNetStage(1, 8, 2),))
    stem = 27 * 4 + 8
    block = (4 * 8 + 16) + (9 * 4 * 8 + 16) + (9 * 8 * 8 + 16)
    assert anynet_param_count(arch, 10) == stem + block + 8 * 10 + 10
    flops = (27 * 4 + 5 * 4) * 32 * 32 + (4 * 8 + 5 * 8 + 9 * 4 * 8 + 5 * 8 + 9 * 8 * 8 + 5 * 8) * 16 * 16 + 90
    assert anynet_flops(arch, 10) == flops
    assert anynet_flops(arch, 10, imagenet=True) > flops


# -- (5) malformed configs ------------------------------------------------------------------------------------
GOOD = {"block_type": "res_bottleneck_block", "ds": [1, 1, 2], "ws": [64, 32, 64], "ss": [8, 1, 2],
        "bot_muls": [1.0, 0.5, 0.25], "num_gs": [1, 2, 4]}


def _with(**changes: Any) -> dict[str, Any]:
    net = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            del net[k]
        else:
            net[k] = v
    return net


@pytest.mark.parametrize("net, message", [
    ([1, 2], "must be a dict"),
    (_with(ws=...), "lacks 'ws'"),
    (_with(depth=3), "unknown keys 'depth'"),
    (_with(block_type="vanilla"), "unknown AnyNet block_type 'vanilla'"),
    (_with(ds=[1, 1]), "one entry each per stem + stage"),
    (_with(ds=[1], ws=[64], ss=[8], bot_muls=[1.0], num_gs=[1]), "at least one stage"),
    (_with(ws=[64, 0, 64]), "net['ws'][1] must be a positive integer, got 0"),
    (_with(ds=[1, 1.5, 2]), "net['ds'][1] must be a positive integer"),
    (_with(ss=[8, True, 2]), "net['ss'][1] must be a positive integer"),
    (_with(ws="64"), "must be a list of positive integers"),
    (_with(bot_muls=[1.0, 0.5]), "net['bot_muls'] has 2 entries but 'ds' has 3"),
    (_with(bot_muls=[1.0, -0.5, 0.25]), "bot_muls'][1] must be a positive finite number"),
    (_with(bot_muls=[1.0, float("nan"), 0.25]), "positive finite number"),
    (_with(num_gs=[1, 0, 4]), "num_gs'][1] must be a positive integer"),
    (_with(num_gs=[1, 3, 4]), "not divisible by num_gs = 3 groups"),
    (_with(ws=[64, 1, 64]), "round(1 * 0.5) = 0 is not positive"),
    (_with(ss=[2, 1, 2]), "ss[0] = 2 is not one of the NDS stems"),
    (_with(ds=[2, 1, 2]), "needs ds[0] = 1"),
    (_with(num_gs=[2, 2, 4]), "num_gs[0] = 1"),
    (_with(ws=[63, 32, 64]), "must be even"),
    (_with(block_type="res_basic_block"), "bot_muls must be empty or all 1.0"),
    (_with(block_type="double_plain_block", bot_muls=[], num_gs=[1, 2, 1]), "num_gs must be empty or all 1"),
])
def test_malformed_net_raises_arch_error(net, message):
    with pytest.raises(ArchError) as info:
        from_net(net)
    assert message in str(info.value)


def test_imagenet_flag_must_fit_the_stem():
    with pytest.raises(ArchError, match=r"does not fit imagenet=False"):
        from_net(GOOD, imagenet=False)
    with pytest.raises(ArchError, match=r"does not fit imagenet=True"):
        from_net(TINY_CIFAR["res_basic_block"], imagenet=True)
    with pytest.raises(ArchError, match="num_classes"):
        anynet_param_count(from_net(GOOD), 0)
    assert from_net(from_net(GOOD), imagenet=True) == from_net(GOOD)
