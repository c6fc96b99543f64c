"""Several proxies in one score() call: same numbers as one by one, shared passes, no leaks between proxies."""

from __future__ import annotations

import math

import pytest
import torch
from model_state import assert_same, snapshot
from test_proxies_formulas import make_batch, make_net
from torch import nn

from zc_proxies import get_proxy, list_proxies, register_proxy, score
from zc_proxies.errors import NonFiniteScoreError
from zc_proxies.proxies.base import PROXIES
from zc_proxies.score import score_detailed

SHARING = ["fisher", "grad_norm", "snip", "plain", "grasp", "jacob_cov", "epe_nas", "naswot"]




class CountingIdentity(nn.Identity):
    """Counts forward calls across deep copies (the counter lives on the class)."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingIdentity.calls += 1
        return x


def counting_net() -> nn.Module:
    net = make_net()
    net.conv1 = nn.Sequential(net.conv1, CountingIdentity())
    return net


def forwards(net: nn.Module, names: list[str]) -> int:
    CountingIdentity.calls = 0
    score(net, make_batch(), names)
    return CountingIdentity.calls


def ordinary() -> list[str]:
    """Every registered proxy that scores one architecture on its own (population proxies have their own tests)."""
    return [n for n in list_proxies() if not get_proxy(n).spec.population]


def test_all_together_equal_one_by_one():
    net, batch = make_net(), make_batch()
    names = ordinary()
    together = score(net, batch, names, seed=4)
    assert list(together) == names
    for name in names:
        alone = score(net, batch, name, seed=4)
        assert together[name] == pytest.approx(alone, rel=1e-12, abs=1e-300), name


def test_order_of_the_list_does_not_matter():
    net, batch = make_net(), make_batch()
    names = ordinary()
    forward_order = score(net, batch, names, seed=2)
    backward_order = score(net, batch, names[::-1], seed=2)
    assert list(backward_order) == names[::-1]
    for name in names:
        assert forward_order[name] == pytest.approx(backward_order[name], rel=1e-12, abs=1e-300), name


def test_sharing_proxies_cost_one_forward_pass_together():
    net = counting_net()
    alone = sum(forwards(net, [name]) for name in SHARING)
    assert alone == len(SHARING)  # each alone: one forward pass
    assert forwards(net, SHARING) == 1  # together: one pass serves all eight


def test_every_proxy_together_costs_fewer_passes_than_alone():
    net = counting_net()
    names = ordinary()
    alone = sum(forwards(net, [name]) for name in names)
    together = forwards(net, names)
    assert together < alone
    saved = len(SHARING) - 1
    if "nasi" in names:  # nasi reads the parameter gradients of the shared batch pass
        saved += 1
    if {"gradsign", "ntk_trace"} <= set(names):  # they share their single-sample passes (one per sample)
        saved += len(make_batch()[0])
    if {"meco", "meco_opt"} <= set(names):  # they share one forward pass
        saved += 1
    assert together == alone - saved


def test_caller_model_untouched_by_a_joint_call():
    net = make_net().eval()
    net.fc.weight.grad = torch.ones_like(net.fc.weight)
    before = snapshot(net)
    score(net, make_batch(), ordinary())
    assert_same(before, snapshot(net))


def test_duplicates_are_scored_once():
    net, batch = make_net(), make_batch()
    out = score(net, batch, ["snip", "grasp", "snip"])
    assert list(out) == ["snip", "grasp"]


def _vandalise(ctx) -> float:
    """Everything a careless proxy could do to the shared working copy."""
    m = ctx.model
    with torch.no_grad():
        m.conv1.weight.data.mul_(-3.0)  # through .data: invisible to version counters
        m.fc.bias.add_(1.0)
        m.bn1.running_mean.add_(2.0)
        m.bn2.weight.fill_(0.0)
    m.eval()
    m.conv2.weight.requires_grad_(False)
    m.fc.weight.grad = torch.full_like(m.fc.weight, 5.0)
    m.relu1.register_forward_hook(lambda _m, _i, out: out * 2)
    m.bn1.register_forward_pre_hook(lambda _m, inp: (inp[0] + 1,))
    return 1.0


def _restructure(ctx) -> float:
    m = ctx.model
    m.relu2 = nn.Tanh()
    m.conv2.forward = lambda x: torch.zeros(x.shape[0], 6, 3, 3, dtype=x.dtype)
    return 2.0


@pytest.mark.parametrize("vandal", [_vandalise, _restructure])
def test_one_proxys_mutation_does_not_leak_into_the_next(vandal):
    name = f"test_vandal_{vandal.__name__}"
    register_proxy(name, needs_labels=False, needs_grad=False, bn_mode="train")(vandal)
    try:
        net, batch = make_net(), make_batch()
        others = ["fisher", "snip", "jacob_cov", "naswot", "zen", "synflow_bn"]
        alone = {n: score(net, batch, n, seed=1) for n in others}
        mixed = score(net, batch, [others[0], name, *others[1:]], seed=1)
        for n in others:
            assert mixed[n] == pytest.approx(alone[n], rel=1e-12), n
        # and the vandal first, so every other proxy runs after it on the same working copy
        for n in others:
            assert score(net, batch, [name, n], seed=1)[n] == pytest.approx(alone[n], rel=1e-12), n
    finally:
        PROXIES.remove(name)


def test_score_detailed_keeps_going_after_a_failure():
    net, (x, y) = make_net(), make_batch()
    with torch.no_grad():
        net.fc.weight.fill_(float("nan"))
    out = score_detailed(net, (x, y), ["params", "snip", "flops"])
    assert out["params"].status == "ok" and out["flops"].status == "ok"
    assert out["snip"].status == "nan" and isinstance(out["snip"].error, NonFiniteScoreError)
    assert math.isnan(out["snip"].value)
    assert all(r.seconds >= 0 for r in out.values())
    with pytest.raises(NonFiniteScoreError, match="snip"):
        score(net, (x, y), ["params", "snip", "flops"])


def test_score_detailed_reports_other_errors_as_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).double()
    out = score_detailed(net, make_batch(), ["naswot", "params"])
    assert out["naswot"].status == "error" and "nn.ReLU" in str(out["naswot"].error)
    assert out["params"].status == "ok"


def test_an_empty_list_is_named():
    from zc_proxies.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="no proxy named"):
        score(make_net(), make_batch(), [])
