"""score(): determinism, the caller's model left untouched, and named errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch
from model_state import assert_same, snapshot
from torch import nn

import zc_proxies
from zc_proxies import BlockProbe, score
from zc_proxies.errors import BatchError, ModelError, NonFiniteScoreError, UnknownNameError


def small_net(classes: int = 10) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), BlockProbe(), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )


def batch(n: int = 6, classes: int = 10, channels: int = 3):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, channels, 12, 12, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("proxy", ["fisher", "fisher_potential"])
def test_same_seed_same_score(proxy):
    net, b = small_net(), batch()
    assert score(net, b, proxy, seed=3) == score(net, b, proxy, seed=3)


@pytest.mark.parametrize("proxy", ["fisher", "fisher_potential"])
def test_model_unchanged_after_success(proxy):
    net = small_net().eval()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    net[3].register_forward_hook(lambda *a: None)
    before = snapshot(net)
    value = score(net, batch(), proxy)
    assert math.isfinite(value) and value > 0
    assert_same(before, snapshot(net))


def test_model_unchanged_after_error():
    net = small_net(classes=4).train()
    before = snapshot(net)
    with pytest.raises(BatchError, match="only 4 outputs"):
        score(net, batch(classes=10), "fisher")  # targets beyond the 4 classes: fails mid-proxy
    assert_same(before, snapshot(net))


def test_several_proxies_return_a_mapping():
    net, b = small_net(), batch()
    both = score(net, b, ["fisher", "fisher_potential"])
    assert set(both) == {"fisher", "fisher_potential"}
    assert both["fisher"] == score(net, b, "fisher")


def test_unknown_proxy_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean 'fisher'"):
        score(small_net(), batch(), "fishr")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: (torch.randn(6, 3, 12), torch.zeros(6, dtype=torch.long)), "rank 4"),
        (lambda: batch(channels=1), "1 channels"),
        (lambda: (batch()[0], torch.zeros(5, dtype=torch.long)), r"shape \(6,\)"),
        (lambda: (batch()[0], torch.zeros(6)), "integer class indices"),
        (lambda: (batch()[0], torch.full((6,), -1)), ">= 0"),
        (lambda: (batch()[0], torch.full((6,), 10)), "only 10 outputs"),
        (lambda: (torch.full((6, 3, 12, 12), float("nan")), torch.zeros(6, dtype=torch.long)), "NaN"),
        (lambda: (torch.zeros(0, 3, 12, 12), torch.zeros(0, dtype=torch.long)), "no samples"),
        (lambda: torch.randn(6, 3, 12, 12), "needs targets"),
        (lambda: [1, 2, 3], "pair"),
    ],
)
def test_bad_batches_are_named(make, message):
    with pytest.raises(BatchError, match=message):
        score(small_net(), make(), "fisher")


def test_nothing_to_probe():
    net = nn.Sequential(nn.Flatten(), nn.Identity())
    x, y = torch.randn(4, 10), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ModelError, match="no.*Conv2d or nn.Linear|found none"):
        score(net, (x, y), "fisher")


def test_undeclared_blocks_are_refused_not_guessed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ModelError, match="BlockProbe"):
        score(net, batch(), "fisher_potential")


def test_nan_score_is_an_error():
    net = small_net()
    with torch.no_grad():
        net[-1].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteScoreError, match="fisher"):
        score(net, batch(), "fisher")


def test_public_api_is_small():
    assert {"score", "list_proxies", "get_proxy", "register_proxy", "list_spaces", "get_space"} <= set(
        zc_proxies.__all__)
