"""zico, gradsign, ntk_trace and nasi against hand-written float64 computations; sharing; model untouched.

The references use the functional copy of the tiny network in test_proxies_formulas
(F.conv2d, hand-written train-mode BatchNorm) with explicit per-sample loops and
numpy for the per-layer statistics; none of it calls the proxies' code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_state import assert_same, score_untouched_twice, snapshot, with_caller_state
from test_proxies_formulas import WEIGHTS, forward, make_batch, make_net, params_of
from torch import nn

import zc_proxies.proxies.gradsign
import zc_proxies.proxies.nasi
import zc_proxies.proxies.zico  # noqa: F401  (registers the proxies until the package imports them)
from zc_proxies import score
from zc_proxies.errors import BatchError, ModelError

OURS = ["zico", "gradsign", "ntk_trace", "nasi"]
# the tiny network's parameters (buffers excluded), in model.parameters() order: the NTK's theta
PARAMS = ("conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
          "fc.weight", "fc.bias")


def grads_of(p: dict, keys: tuple[str, ...], fn) -> list[torch.Tensor]:
    """d fn(q)/d q[k] for k in keys, with q = p and those entries made leaves."""
    leaves = {k: p[k].clone().requires_grad_(True) for k in keys}
    return [g.detach() for g in torch.autograd.grad(fn(dict(p, **leaves)), [leaves[k] for k in keys])]


# -- formulas -------------------------------------------------------------------------------------------------


def zico_reference(p: dict, x: torch.Tensor, y: torch.Tensor, keys=WEIGHTS) -> float:
    """The official arithmetic in numpy: two minibatches (the halves), per-layer log of sum mean|g|/std(g)."""
    halves = [(x[:5], y[:5]), (x[5:], y[5:])]  # 9 samples: 5 + 4
    per_half = [grads_of(p, keys, lambda q, xs=xs, ys=ys: F.cross_entropy(forward(q, xs)["logits"], ys))
                for xs, ys in halves]
    total = 0.0
    for j in range(len(keys)):
        g = np.array([h[j].numpy().reshape(-1) for h in per_half])
        std = np.std(g, axis=0)
        nonzero = np.nonzero(std)[0]
        tmpsum = np.sum(np.mean(np.abs(g), axis=0)[nonzero] / std[nonzero])
        if tmpsum != 0:
            total += np.log(tmpsum)
    return float(total)


def test_zico():
    net, (x, y) = make_net(), make_batch()
    assert score(net, (x, y), "zico") == pytest.approx(zico_reference(params_of(net), x, y), rel=1e-10)


def test_zico_leaves_out_zero_std_entries_and_layers_without_gradient():
    """An unused layer (gradient 0 in both halves: std 0 everywhere) adds nothing, and changes nothing."""
    net, (x, y) = make_net(), make_batch()
    plain = score(net, (x, y), "zico")
    net.unused = nn.Linear(3, 2).double()  # a weight layer the forward pass never calls
    assert score(net, (x, y), "zico") == plain
    # the same four samples in both halves: equal gradients, std 0 for every entry of every layer, so every
    # S_l is 0 and is skipped (official: ``if tmpsum == 0: pass``)
    xs, ys = torch.cat([x[:4], x[:4]]), torch.cat([y[:4], y[:4]])
    assert score(net, (xs, ys), "zico") == 0.0


def gradsign_reference(p: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[float, np.ndarray]:
    """Sum over weights of |sum over samples of sign(g_i)|, and the (N, weights) per-sample gradients."""
    grads = []
    for i in range(len(x)):  # each sample alone through the network (single-sample train-mode BatchNorm)
        g = grads_of(p, WEIGHTS, lambda q, i=i: F.cross_entropy(forward(q, x[i:i + 1])["logits"], y[i:i + 1]))
        grads.append(np.concatenate([t.numpy().reshape(-1) for t in g]))
    grads = np.stack(grads)
    return float(np.sum(np.abs(np.sum(np.sign(grads), axis=0)))), grads


def roundoff_entries(grads: np.ndarray) -> int:
    """Per-sample gradients that are 0 in exact arithmetic but come out as +-1e-19 round-off."""
    return int(((grads != 0) & (np.abs(grads) < 1e-12 * np.abs(grads).max(axis=1, keepdims=True))).sum())


def test_gradsign_per_sample_loop():
    net, (x, y) = make_net(), make_batch()
    keep = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8])  # see below for sample 4
    expected, grads = gradsign_reference(params_of(net), x[keep], y[keep])
    assert roundoff_entries(grads) == 0  # every sign is well defined: the two computations must agree exactly
    assert score(net, (x[keep], y[keep]), "gradsign") == expected


def test_gradsign_round_off_signs():
    """Alone, sample 4 has all 9 positions of bn2's channel 5 above 0: that channel's pooled output is its
    BatchNorm bias whatever conv2 does, so its conv2 gradients are 0 in exact arithmetic and +-1e-19 in floating
    point, with signs that depend on the order of operations (as in GradSign's own code). Each such entry can
    move the score by at most 2."""
    net, (x, y) = make_net(), make_batch()
    expected, grads = gradsign_reference(params_of(net), x, y)
    roundoff = roundoff_entries(grads)
    assert 0 < roundoff <= 20
    assert abs(score(net, (x, y), "gradsign") - expected) <= 2 * roundoff


def test_gradsign_counts_signs_of_an_explicit_example():
    """Two samples through a bias-free linear layer: the per-sample gradients are outer products, signs known."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # dl_i/dW = (softmax(W x_i) - e_{y_i}) x_i^T; rows of (p - e_y): sample 0 (-, +), sample 1 (+, -)
    # sample 0: [[-1, +1], [+1, -1]] (x = (1, -2)); sample 1: [[+1, 0], [-1, 0]] (x = (3, 0))
    # column sums of signs: [[0, 1], [0, -1]] -> |.| summed = 2
    assert score(net, (x, y), "gradsign") == 2.0


def test_ntk_trace_per_sample_loop():
    net, (x, y) = make_net(), make_batch()
    p = params_of(net)
    sq = []
    for i in range(len(x)):
        g = grads_of(p, PARAMS, lambda q, i=i: forward(q, x[i:i + 1])["logits"][0, y[i]])
        sq.append(sum(float((t ** 2).sum()) for t in g))
    assert [k for k, _ in net.named_parameters()] == list(PARAMS)
    expected = math.sqrt(sum(sq) / len(x))
    assert score(net, (x, y), "ntk_trace") == pytest.approx(expected, rel=1e-10)


def test_nasi_is_the_norm_of_the_batch_loss_gradient():
    net, (x, y) = make_net(), make_batch()
    g = grads_of(params_of(net), PARAMS, lambda q: F.cross_entropy(forward(q, x)["logits"], y))
    expected = math.sqrt(sum(float((t ** 2).sum()) for t in g))
    assert score(net, (x, y), "nasi") == pytest.approx(expected, rel=1e-10)


def test_bn_is_in_train_mode_with_the_stated_statistics():
    """Running statistics are never read: shifting them changes nothing."""
    net, batch = make_net(), make_batch()
    before = score(net, batch, OURS)
    with torch.no_grad():
        net.bn1.running_mean.add_(3.0)
        net.bn2.running_var.mul_(7.0)
    assert score(net.eval(), batch, OURS) == before


# -- sharing, determinism, the caller's model -----------------------------------------------------------------


ALL = [*OURS, "fisher", "grad_norm", "snip", "plain", "grasp", "jacob_cov", "epe_nas", "naswot"]


def test_alone_and_together_are_identical():
    net, batch = make_net(), make_batch()
    alone = {n: score(net, batch, n, seed=3) for n in ALL}
    for names in (ALL, ALL[::-1], ["fisher", "zico"], ["ntk_trace", "gradsign"]):
        together = score(net, batch, names, seed=3)
        for n in names:
            assert together[n] == alone[n], (n, names)


class Counting(nn.Identity):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Counting.calls += 1
        return x


def forwards(names: list[str]) -> int:
    net = make_net()
    net.conv1 = nn.Sequential(net.conv1, Counting())
    Counting.calls = 0
    score(net, make_batch(), names)
    return Counting.calls


def test_passes_are_shared():
    n = len(make_batch()[0])
    assert forwards(["zico"]) == 2  # two half-batches
    assert forwards(["gradsign"]) == n and forwards(["ntk_trace"]) == n  # one pass per sample
    assert forwards(["gradsign", "ntk_trace"]) == n  # the same single-sample passes
    assert forwards(["nasi"]) == 1
    assert forwards(["nasi", "grad_norm", "snip", "grasp", "jacob_cov"]) == 1  # the shared batch pass
    assert forwards(["fisher"]) == 1
    assert forwards(["fisher", *OURS]) == 2 + n + 1  # fisher's probes ride along nasi's batch pass


@pytest.mark.parametrize("name", OURS)
def test_caller_model_untouched_and_deterministic(name):
    net = with_caller_state(make_net())
    x, y = make_batch()
    batch = (x.float(), y)
    first = score_untouched_twice(net, batch, name)
    assert score(net, batch, name, seed=6) == first  # nothing random: the seed does not matter
    # a frozen layer is measured all the same (the working copy differentiates every weight)
    assert score(make_net().float(), batch, name) == first


def test_caller_model_untouched_by_a_joint_call():
    net = make_net().eval()
    net.fc.weight.grad = torch.ones_like(net.fc.weight)
    before = snapshot(net)
    score(net, make_batch(), ALL)
    assert_same(before, snapshot(net))


# -- what cannot be scored is named ---------------------------------------------------------------------------


def test_refusals_are_named():
    x, y = make_batch()
    with pytest.raises(BatchError, match="needs targets"):
        score(make_net(), x, "gradsign")
    mlp = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    xs, ys = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2])
    for name in ("gradsign", "ntk_trace"):  # one sample alone cannot go through a train-mode BatchNorm1d
        with pytest.raises(ModelError, match="each sample alone.*'1'"):
            score(mlp, (xs, ys), name)
    with pytest.raises(BatchError, match="zico splits the batch of 3 into minibatches of 2 and 1"):
        score(mlp, (xs, ys), "zico")
    with pytest.raises(BatchError, match="at least 2 samples"):
        score(nn.Sequential(nn.Flatten(), nn.Linear(108, 5)).double(), (x[:1], y[:1]), "zico")
    weightless = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for name in ("zico", "gradsign"):
        with pytest.raises(ModelError, match="Conv2d"):
            score(weightless, (x, torch.zeros(len(x), dtype=torch.long)), name)
    for name in ("ntk_trace", "nasi"):
        with pytest.raises(ModelError, match="has none"):
            score(weightless, (x, torch.zeros(len(x), dtype=torch.long)), name)
    # a loss whose targets are not class indices: ntk_trace cannot pick a target logit
    soft = torch.softmax(torch.randn(len(x), 5, dtype=torch.float64), dim=1)
    with pytest.raises(BatchError, match="target class"):
        score(make_net(), (x, soft), "ntk_trace", loss_fn=lambda out, t: -(t * out.log_softmax(1)).sum(1).mean())
    with pytest.raises(BatchError, match="outputs"):
        score(make_net(), (x, y + 10), "ntk_trace", loss_fn=lambda out, t: out.sum())


# -- one real network ------------------------------------------------------------------------------------------


def test_smoke_on_an_nb201_network(data_root):
    from zc_proxies import get_space
    from zc_proxies.data import source_for

    space = get_space("nb201", data_root)
    torch.manual_seed(0)
    net = space.build("|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|none~1|skip_connect~2|", 10)
    x, y = source_for("cifar10", data_root, 10).batch(4, 0)
    scores = score(net, (x, y), OURS, seed=0)
    for name in OURS:
        assert math.isfinite(scores[name]) and scores[name] > 0, name
    weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert scores["gradsign"] <= 4 * weights


def test_a_companion_that_cannot_score_does_not_change_the_others():
    """Shared passes leave out what only a failing companion wanted: each proxy succeeds or fails as alone."""
    from zc_proxies.score import score_detailed

    x, y = make_batch()
    y3 = y % 3
    # parameters (BatchNorm's) but no Conv2d/Linear weight: nasi and ntk_trace score it, gradsign and grad_norm
    # refuse it
    bn_only = nn.Sequential(nn.BatchNorm2d(3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    with torch.no_grad():
        bn_only[0].weight.copy_(torch.tensor([0.5, -1.0, 2.0]))
    out = score_detailed(bn_only, (x, y3), ["grad_norm", "nasi", "gradsign", "ntk_trace", "naswot"])
    for name in ("nasi", "ntk_trace"):
        assert out[name].status == "ok" and out[name].value == score(bn_only, (x, y3), name), name
    for name in ("grad_norm", "gradsign", "naswot"):
        assert out[name].status == "error" and isinstance(out[name].error, ModelError), name
    # soft targets: gradsign takes each sample's loss, ntk_trace has no target class to read
    soft = torch.softmax(torch.randn(len(x), 5, dtype=torch.float64), dim=1)

    def soft_ce(o, t):
        return -(t * o.log_softmax(1)).sum(1).mean()

    net = make_net()
    out = score_detailed(net, (x, soft), ["ntk_trace", "gradsign"], loss_fn=soft_ce)
    assert out["gradsign"].status == "ok"
    assert out["gradsign"].value == score(net, (x, soft), "gradsign", loss_fn=soft_ce)
    assert out["ntk_trace"].status == "error" and "target class" in str(out["ntk_trace"].error)
