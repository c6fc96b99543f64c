"""BlockSwap networks: the paper's Table 2 parameter counts, per-block choice, configurations as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from zc_proxies.blockswap import PAPER_POOL, Configuration, count_parameters, get_net
from zc_proxies.blockswap.blocks import Block
from zc_proxies.errors import ArchError, DataError, MissingDataError, UnknownNameError


# Turner et al. (ICLR 2020), Table 2: parameters of the teachers / all-standard networks.
@pytest.mark.parametrize("net, paper_k", [
    ("wrn-40-2", 2243.5), ("wrn-16-2", 691.7), ("wrn-40-1", 563.9), ("wrn-16-1", 175.1),
])
def test_wrn_counts_equal_the_papers_table_2(net, paper_k):
    model = get_net(net).build(num_classes=10)
    n = count_parameters(model)
    assert round(n / 1000, 1) == paper_k
    assert get_net(net).params(get_net(net).standard(), 10) == n


def test_resnet34_count_equals_the_papers_table_2():
    spec = get_net("resnet-34")
    model = spec.build(num_classes=1000)
    n = count_parameters(model)
    assert round(n / 1e6, 1) == 21.8
    assert n == spec.params(spec.standard(), 1000) == 21_794_984
    # the stem and head the paper describes: 7x7/2 conv to 64, max-pool, fc 512 -> 1000
    assert model.stem[0].kernel_size == (7, 7) and model.stem[0].stride == (2, 2)
    assert isinstance(model.stem[3], nn.MaxPool2d)
    assert (model.fc.in_features, model.fc.out_features) == (512, 1000)


def test_skeletons():
    wrn = get_net("wrn-40-2")
    assert len(wrn) == 18
    assert [s.out_channels for s in wrn.slots] == [32] * 6 + [64] * 6 + [128] * 6
    assert [s.stride for s in wrn.slots] == [1] * 6 + [2] + [1] * 5 + [2] + [1] * 5
    assert wrn.slots[0].in_channels == 16
    res = get_net("resnet34")
    assert [sum(s.stage == i for s in res.slots) for i in range(4)] == [3, 4, 6, 3]
    assert [s.out_channels for s in res.slots if s.index == 0] == [64, 128, 256, 512]
    assert get_net("WRN-16-1").name == "wrn-16-1"


def test_unknown_or_bad_networks_are_refused():
    with pytest.raises(UnknownNameError, match="did you mean 'wrn-40-2'"):
        get_net("wrm-40-2")
    with pytest.raises(ArchError, match="6n \\+ 4"):
        get_net("wrn-41-2")


def test_block_type_is_chosen_per_block_not_per_stage():
    spec = get_net("wrn-16-2")
    config = ["S", "B(2)", "G(N)", "BG(2,M/4)", "G(4)", "B(4)"]
    model = spec.build(config)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert [b.block_type.name for b in blocks] == config
    assert model.config == tuple(config)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_analytic_count_equals_built_count_for_random_configurations():
    rng = np.random.default_rng(0)
    for net in ("wrn-40-2", "wrn-16-1", "wrn-40-1", "resnet-34"):
        spec = get_net(net)
        options = spec.options(PAPER_POOL)
        for _ in range(3 if net != "resnet-34" else 1):
            config = [opts[rng.integers(len(opts))] for opts in options]
            assert spec.params(config) == count_parameters(spec.build(config)), (net, config)


def test_resnet_forward_runs():
    spec = get_net("resnet-34")
    config = [spec.options()[i][-1] for i in range(len(spec))]  # BG(2,M): the cheapest, quick to run
    out = spec.build(config, num_classes=7)(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7)


def test_initialisation_is_seeded_and_follows_the_authors():
    spec = get_net("wrn-16-1")
    a = spec.build(generator=torch.Generator().manual_seed(3)).state_dict()
    b = spec.build(generator=torch.Generator().manual_seed(3)).state_dict()
    c = spec.build(generator=torch.Generator().manual_seed(4)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.weight"], c["stem.weight"])
    big = get_net("wrn-40-2").build().blocks[17].conv2.weight  # 128 x 128 x 3 x 3
    assert big.std().item() == pytest.approx((2 / (9 * 128)) ** 0.5, rel=0.02)
    model = spec.build()
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0)
               for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# -- configurations as JSON ----------------------------------------------------------------
def test_configuration_round_trips_through_json(tmp_path):
    cfg = Configuration.create("wrn-16-1", ["S", "G(N/2)", "B(2)", "BG(2,M)", "G(2)", "DConvG4"])
    assert cfg.blocks[-1] == "G(N/4)"  # the authors' name, read and canonicalised
    path = tmp_path / "cfg.json"
    cfg.save(path, score=1.5)
    assert json.loads(path.read_text())["score"] == 1.5
    again = Configuration.load(path)
    assert again == cfg
    assert again.params == count_parameters(again.build())


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"net": "wrn-16-1"}', "missing key 'blocks'"),
    ('{"blocks": ["S"]}', "missing key 'net'"),
    ('{"net": "wrn-16-1", "blocks": "S"}', "'blocks' must be a list"),
    ('{"net": "wrn-16-1", "blocks": ["S", "S", "S"]}', "has 6 blocks, but the configuration names 3"),
    ('{"net": "wrn-16-1", "blocks": ["S", "S", "S", "S", "S", "Q(2)"]}', "unknown block name 'Q\\(2\\)'"),
    ('{"net": "wrn-16-1", "blocks": ["S", "S", "S", "S", "S", "G(N/2"]}', "did you mean 'G\\(N/2\\)'"),
    ('{"net": "wrn-16-1", "blocks": ["BG(2,16)", "S", "S", "S", "S", "S"]}', "block 0 .*M = 8"),
    ('{"net": "wrn-16-1", "blocks": ["S", "S", 3, "S", "S", "S"]}', "block 2 must be a block name"),
    ('{"net": "vgg-16", "blocks": []}', "unknown network 'vgg-16'"),
    ('{"net": "wrn-16-1", "num_classes": 0, "blocks": ["S", "S", "S", "S", "S", "S"]}', "num_classes"),
])
def test_malformed_configuration_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        Configuration.load(path)
    assert "bad.json" in str(info.value)


def test_missing_configuration_file(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        Configuration.load(tmp_path / "nope.json")
