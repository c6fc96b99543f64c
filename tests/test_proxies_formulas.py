"""Every built-in proxy against an independent computation of its published formula.

The reference values are written out here with explicit tensors: a functional
forward pass of a tiny network (F.conv2d, hand-written train-mode BatchNorm),
torch.autograd on explicit weight tensors, numpy for correlations, eigenvalues
and determinants, finite differences for GraSP's Hessian product and Euler's
theorem for SynFlow. None of it calls the proxies' code. Everything runs in
float64. Generic checks (caller's model untouched, determinism, finite float,
honest specs) are parametrised over ``list_proxies()``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from model_state import score_untouched_twice, with_caller_state
from torch import nn

from zc_proxies import BlockProbe, get_proxy, list_proxies, score
from zc_proxies.errors import BatchError, ModelError, NonFiniteScoreError

EPS_BN = 1e-5
SEED = 7




class Tiny(nn.Module):
    """conv(3->4, bias) BN ReLU | conv(4->6, groups 2, stride 2) BN probe ReLU | pool | linear(6->K)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.probe = BlockProbe()
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.probe(self.bn2(self.conv2(x))))
        return self.fc(self.pool(x).flatten(1))


def make_net(classes: int = 5) -> Tiny:
    torch.manual_seed(3)
    net = Tiny(classes).double()
    with torch.no_grad():  # non-trivial BatchNorm parameters and statistics, some negative
        for bn in (net.bn1, net.bn2):
            bn.weight.copy_(torch.randn_like(bn.weight))
            bn.bias.copy_(torch.randn_like(bn.bias))
            bn.running_mean.copy_(torch.randn_like(bn.running_mean))
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
    return net


def make_batch(classes: int = 5, n: int = 9):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 4][:n]) % classes  # class 0 and 4 have one sample each
    return x, y


# -- an independent functional copy of Tiny -------------------------------------------------------------------


def params_of(net: Tiny) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def bn_train(t: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    mean = t.mean(dim=(0, 2, 3), keepdim=True)
    var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    out = (t - mean) / torch.sqrt(var + EPS_BN)
    if weight is not None:
        out = out * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    return out


def forward(p: dict, x: torch.Tensor, *, bn: bool = True) -> dict[str, torch.Tensor]:
    """Logits and the intermediate tensors the formulas need (pre-ReLU inputs, pre-pool features)."""
    a1 = F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1)
    pre1 = bn_train(a1, p["bn1.weight"], p["bn1.bias"]) if bn else a1
    h1 = F.relu(pre1)
    a2 = F.conv2d(h1, p["conv2.weight"], None, stride=2, padding=1, groups=2)
    pre2 = bn_train(a2, p["bn2.weight"], p["bn2.bias"]) if bn else a2
    feat = F.relu(pre2)
    logits = feat.mean(dim=(2, 3)) @ p["fc.weight"].T + p["fc.bias"]
    return {"logits": logits, "relu_inputs": [pre1, pre2], "features": feat}


WEIGHTS = ("conv1.weight", "conv2.weight", "fc.weight")


def weight_grads(p: dict, x: torch.Tensor, y: torch.Tensor, *, create_graph: bool = False):
    ws = [p[k].clone().requires_grad_(True) for k in WEIGHTS]
    q = dict(p, **dict(zip(WEIGHTS, ws)))
    loss = F.cross_entropy(forward(q, x)["logits"], y)
    return ws, torch.autograd.grad(loss, ws, create_graph=create_graph)


def input_jacobian(p: dict, x: torch.Tensor) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(forward(p, x)["logits"].sum(), x)
    return g.reshape(x.shape[0], -1).numpy()


# -- formulas -------------------------------------------------------------------------------------------------


def test_grad_norm_snip_plain():
    net, (x, y) = make_net(), make_batch()
    ws, gs = weight_grads(params_of(net), x, y)
    expected = {
        "grad_norm": sum(float(torch.linalg.norm(g)) for g in gs),
        "snip": sum(float((w.detach() * g).abs().sum()) for w, g in zip(ws, gs)),
        "plain": sum(float((w.detach() * g).sum()) for w, g in zip(ws, gs)),
    }
    for name, value in expected.items():
        assert score(net, (x, y), name) == pytest.approx(value, rel=1e-10), name


def test_grasp_equals_finite_difference_hessian_product():
    net, (x, y) = make_net(), make_batch()
    p = params_of(net)
    _ws, g = weight_grads(p, x, y)
    g = [t.detach() for t in g]

    def grads_at(step: float) -> list[torch.Tensor]:
        q = dict(p, **{k: p[k] + step * d for k, d in zip(WEIGHTS, g)})
        return [t.detach() for t in weight_grads(q, x, y)[1]]

    h = 1e-5
    plus, minus = grads_at(h), grads_at(-h)
    hg = [(a - b) / (2 * h) for a, b in zip(plus, minus)]  # H g by central differences
    expected = -sum(float((p[k] * v).sum()) for k, v in zip(WEIGHTS, hg))
    assert score(net, (x, y), "grasp") == pytest.approx(expected, rel=1e-6)


def test_synflow_explicit():
    net, (x, y) = make_net(), make_batch()
    p = {k: v.abs() for k, v in params_of(net).items()}
    ones = torch.ones(1, 3, 6, 6, dtype=torch.float64)
    for name, bn in (("synflow", False), ("synflow_bn", True)):
        ws = [p[k].clone().requires_grad_(True) for k in WEIGHTS]
        q = dict(p, **dict(zip(WEIGHTS, ws)))
        gs = torch.autograd.grad(forward(q, ones, bn=bn)["logits"].sum(), ws)
        expected = sum(float((w.detach() * g).abs().sum()) for w, g in zip(ws, gs))
        assert score(net, (x, y), name) == pytest.approx(expected, rel=1e-10), name


def test_synflow_obeys_eulers_theorem():
    """Without biases and BN, R(W) is homogeneous of degree 1 in each layer: synflow = layers * R."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, bias=False), nn.ReLU(), nn.Conv2d(5, 4, 1, bias=False),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, bias=False)).double()
    w1, w2, w3 = (m.weight.detach().abs() for m in (net[0], net[2], net[5]))
    ones = torch.ones(1, 3, 5, 5, dtype=torch.float64)
    r = float((F.conv2d(F.conv2d(ones, w1), w2).mean(dim=(2, 3)) @ w3.T).sum())
    value = score(net, (torch.randn(2, 3, 5, 5), torch.zeros(2, dtype=torch.long)), "synflow")
    assert value == pytest.approx(3 * r, rel=1e-12)


def test_synflow_does_not_overflow_where_float32_would():
    """40 layers of 8x8 weights 3.0 make R about 24**40 = 1e55, beyond float32's 3e38."""
    layers = [nn.Linear(8, 8, bias=False) for _ in range(40)]
    for layer in layers:
        nn.init.constant_(layer.weight, 3.0)
    value = score(nn.Sequential(*layers), (torch.ones(2, 8), torch.zeros(2, dtype=torch.long)), "synflow")
    assert value == pytest.approx(40 * 8 * 24.0 ** 40, rel=1e-9)


def test_jacob_cov():
    net, (x, y) = make_net(), make_batch()
    v = np.linalg.eigvalsh(np.corrcoef(input_jacobian(params_of(net), x)))
    expected = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    assert score(net, (x, y), "jacob_cov") == pytest.approx(expected, rel=1e-8)


def epe_reference(jac: np.ndarray, labels: np.ndarray, classes: int) -> float:
    per_class = {}
    for c in sorted(set(labels.tolist())):
        rows = jac[labels == c]
        corr = np.corrcoef(rows) if len(rows) > 1 else np.ones((1, 1))
        s = np.sum(np.log(np.abs(corr) + 1e-5))
        if classes > 100:
            if len(rows) < 2:
                continue
            s /= len(rows)
        per_class[c] = s
    if classes <= 100:
        return float(sum(abs(s) for s in per_class.values()))
    return float(sum(abs(a - b) for a in per_class.values() for b in per_class.values()) / len(per_class))


@pytest.mark.parametrize("classes", [5, 101])
def test_epe_nas(classes):
    net, (x, y) = make_net(classes), make_batch(classes)
    expected = epe_reference(input_jacobian(params_of(net), x), y.numpy(), classes)
    assert score(net, (x, y), "epe_nas") == pytest.approx(expected, rel=1e-8)


def test_naswot():
    net, (x, y) = make_net(), make_batch()
    kernel = np.zeros((len(x), len(x)))
    for pre in forward(params_of(net), x)["relu_inputs"]:
        codes = (pre.reshape(len(x), -1) > 0).numpy()
        hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1)
        kernel += codes.shape[1] - hamming
    expected = np.linalg.slogdet(kernel)[1]
    assert score(net, (x, y), "naswot") == pytest.approx(expected, rel=1e-12)


def test_zen():
    """Same draws as documented (weights in module order, then x1, x2), formula written out."""
    net, (x, y) = make_net(), make_batch()
    gen = torch.Generator().manual_seed(SEED)
    p = {}
    p["conv1.weight"] = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    p["conv1.bias"] = torch.zeros(4, dtype=torch.float64)
    p["conv2.weight"] = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)
    p["fc.weight"] = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    p["fc.bias"] = torch.zeros(5, dtype=torch.float64)
    for bn, c in (("bn1", 4), ("bn2", 6)):
        p[f"{bn}.weight"], p[f"{bn}.bias"] = torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    x1 = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    x2 = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    a = forward(p, x1)
    b = forward(p, x1 + 0.01 * x2)
    delta = (a["features"] - b["features"]).abs().sum(dim=(1, 2, 3)).mean()
    log_bn = 0.0
    for i in range(2):  # running_var after two train-mode passes from 1: momentum 0.1, unbiased batch variance
        var = [_bn_input(p, xx, i).var(dim=(0, 2, 3), unbiased=True) for xx in (x1, x1 + 0.01 * x2)]
        running = 0.9 * (0.9 * 1.0 + 0.1 * var[0]) + 0.1 * var[1]
        log_bn += 0.5 * math.log(float(running.mean()))
    expected = math.log(float(delta)) + log_bn
    assert score(net, (x, y), "zen", seed=SEED) == pytest.approx(expected, rel=1e-10)


def _bn_input(p: dict, x: torch.Tensor, which: int) -> torch.Tensor:
    a1 = F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1)
    if which == 0:
        return a1
    h1 = F.relu(bn_train(a1, p["bn1.weight"], p["bn1.bias"]))
    return F.conv2d(h1, p["conv2.weight"], None, stride=2, padding=1, groups=2)


def test_l2_norm_and_params():
    net = make_net()
    sd = params_of(net)
    expected = sum(float(np.linalg.norm(sd[k].numpy().ravel())) for k in WEIGHTS)
    assert score(net, make_batch(), "l2_norm") == pytest.approx(expected, rel=1e-12)
    # conv1 4*3*9 + 4, bn1 2*4, conv2 6*(4/2)*9, bn2 2*6, fc 6*5 + 5
    assert score(net, make_batch(), "params") == pytest.approx((112 + 8 + 108 + 12 + 35) / 1e6, abs=1e-15)


def test_flops_by_hand():
    # input 3x6x6; conv1: 9*3*4*36 MACs + 4*36 bias; bn1 2*144; relu 144; conv2 (3x3 out, groups 2):
    # 9*4*(6/2)*9; bn2 2*54; relu 54; adaptive pool 3x3 -> 1: (3+1)*(3+1) per channel * 6; fc 6*5
    expected = (3888 + 144) + 288 + 144 + 972 + 108 + 54 + 96 + 30
    assert score(make_net(), make_batch(), "flops") == pytest.approx(expected / 1e6, abs=1e-15)


def test_flops_and_params_equal_the_published_numbers_on_nb201(data_root):
    """NAS-Bench-Suite-Zero's flops (MFLOPs) and params (millions), exactly, on 6 seeded NB201 archs."""
    from zc_proxies import get_space

    ref = pd.read_csv(data_root / "nb201" / "reference_scores" / "zc_suite_zero_cifar10.csv.gz")
    space = get_space("nb201", data_root)
    rows = ref.sample(6, random_state=1)
    batch = (torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    for _, r in rows.iterrows():
        net = space.build(r["arch"], 10)
        got = score(net, batch, ["flops", "params"])
        assert got["flops"] == pytest.approx(r["flops"], abs=1e-6), r["arch"]
        assert got["params"] == pytest.approx(r["params"], abs=1e-6), r["arch"]
    # the space's table carries the same NASLib counts for CIFAR-100 and ImageNet16-120 (16x16 inputs)
    for index in (0, 15000):
        for dataset, side in (("cifar100", 32), ("imagenet16-120", 16)):
            net = space.build(space[index], space.num_classes(dataset))
            got = score(net, torch.zeros(1, 3, side, side), ["flops", "params"])
            assert got["flops"] == pytest.approx(space.flops(index, dataset), abs=1e-6), (index, dataset)
            assert got["params"] == pytest.approx(space.params(index, dataset) / 1e6, abs=1e-6), (index, dataset)


# -- generic checks over every registered proxy ---------------------------------------------------------------


#: Every registered proxy that scores an architecture on its own (population proxies return their components and
#: measure block structure this network does not declare; their own tests check them the same ways).
ORDINARY = [n for n in list_proxies() if not get_proxy(n).spec.population]


@pytest.mark.parametrize("name", ORDINARY)
def test_every_proxy_leaves_the_model_unchanged_and_is_deterministic(name):
    net = with_caller_state(make_net())
    x, y = make_batch()
    batch = (x.float(), y)
    score_untouched_twice(net, batch, name)


@pytest.mark.parametrize("name", ORDINARY)
def test_spec_matches_behaviour(name):
    """Label-free proxies run without targets; label users refuse; BN mode comes from the spec, not the caller."""
    spec = get_proxy(name).spec
    net, (x, y) = make_net(), make_batch()
    if spec.needs_labels:
        with pytest.raises(BatchError, match="needs targets"):
            score(net, x, name)
    else:
        assert score(net, x, name, seed=1) == score(net, (x, y), name, seed=1)
    assert score(net.train(), (x, y), name, seed=1) == score(net.eval(), (x, y), name, seed=1)
    assert spec.version and spec.description


def test_bn_mode_is_what_the_spec_says():
    """A train-mode proxy must see batch statistics: changing running stats changes nothing."""
    net, batch = make_net(), make_batch()
    before = score(net, batch, ["snip", "jacob_cov", "naswot", "epe_nas", "grasp"])
    with torch.no_grad():
        net.bn1.running_mean.add_(5.0)
        net.bn2.running_var.mul_(9.0)
    assert score(net, batch, ["snip", "jacob_cov", "naswot", "epe_nas", "grasp"]) == before


def test_jacob_cov_of_an_input_independent_network_is_named():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    with torch.no_grad():
        net[0].weight.zero_()
    x, y = make_batch()
    with pytest.raises(NonFiniteScoreError, match="jacob_cov"):
        score(net, (x.float(), y), "jacob_cov")


def test_naswot_needs_relu_modules_and_zen_needs_global_pooling():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    x, y = make_batch()
    with pytest.raises(ModelError, match="nn.ReLU"):
        score(net, (x.float(), y), "naswot")
    with pytest.raises(ModelError, match="AdaptiveAvgPool2d"):
        score(net, (x.float(), y), "zen")


def test_weightless_model_is_named():
    x, y = make_batch()
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for name in ("grad_norm", "snip", "l2_norm", "synflow"):
        with pytest.raises(ModelError, match="Conv2d"):
            score(net, (x.float(), torch.zeros(len(x), dtype=torch.long)), name)


# -- agreement with NAS-Bench-Suite-Zero's published scores (NB201, CIFAR-10) -----------------------------------


def _reference_benchmark():
    import importlib.util
    import sys
    from pathlib import Path

    if "proxies_vs_reference" in sys.modules:
        return sys.modules["proxies_vs_reference"]
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "proxies_vs_reference.py"
    spec = importlib.util.spec_from_file_location("proxies_vs_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_repeat_agreement_averages_ranks_over_common_architectures():
    bench = _reference_benchmark()
    theirs = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0], index=[10, 11, 12, 13, 14])
    # Two runs that swap one neighbouring pair each, in different places; one architecture failed in run 2.
    run1 = {10: 1.0, 11: 3.0, 12: 2.0, 13: 4.0, 14: 5.0}
    run2 = {10: 10.0, 11: 20.0, 12: 30.0, 13: 50.0}
    within, mean = bench.repeat_agreement([run1, run2], theirs)
    # common = 10..13; ranks run1 [1, 3, 2, 4], run2 [1, 2, 3, 4]: Spearman 1 - 6*2/(4*15) = 0.8
    assert within == pytest.approx(0.8)
    # mean ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4]
    from scipy.stats import spearmanr

    assert mean == pytest.approx(spearmanr([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0])
    assert bench.repeat_agreement([run1, run1], theirs)[0] == pytest.approx(1.0)


def test_weight_only_proxies_rank_like_the_published_scores(data_root):
    """l2_norm and synflow need one sample's pass at most: Spearman >= 0.9 on 12 seeded archs.

    synflow's published value is log(synflow) (ranks unchanged). Both depend on
    the initialisation only, which is drawn afresh per architecture, so ranks
    agree up to initialisation noise (and l2_norm has near-ties between archs with
    equally many convolutions).
    """
    from scipy.stats import spearmanr

    from zc_proxies import get_space

    ref = pd.read_csv(data_root / "nb201" / "reference_scores" / "zc_suite_zero_cifar10.csv.gz")
    rows = ref.sample(12, random_state=5)
    space = get_space("nb201", data_root)
    ours = {"l2_norm": [], "synflow": []}
    for i, (_, r) in enumerate(rows.iterrows()):
        torch.manual_seed(i)
        got = score(space.build(r["arch"], 10), torch.zeros(1, 3, 32, 32), list(ours))
        for name in ours:
            ours[name].append(got[name])
    assert spearmanr(ours["l2_norm"], rows["l2_norm"])[0] >= 0.9
    assert spearmanr(ours["synflow"], rows["synflow"])[0] >= 0.9


# Thresholds of the 30-arch version of benchmarks/proxies_vs_reference.py. The thresholds (0.9, grasp
# 0.7) hold for 300 archs; at 30 archs the standard error of a Spearman correlation near 0.9 is about 0.03,
# so proxies whose 300-arch correlation is close to their threshold get a relaxed one here (documented in the
# benchmark's report): jacob_cov and l2_norm (about 0.93 at 300) and the two that the published runs
# themselves reproduce only to 0.78-0.80 between runs (epe_nas, grasp). plain (0.18 between runs) has none.
SMALL_SAMPLE_THRESHOLDS = {"params": 0.9, "flops": 0.9, "synflow": 0.9, "naswot": 0.9, "zen": 0.9, "fisher": 0.9,
                           "grad_norm": 0.9, "snip": 0.9, "jacob_cov": 0.8, "l2_norm": 0.8, "epe_nas": 0.5,
                           "grasp": 0.3}


@pytest.mark.slow
def test_all_proxies_rank_like_the_published_scores_on_30_archs(data_root, tmp_path):
    bench = _reference_benchmark()
    reference = bench.load_reference(data_root)
    indices = bench.sample_reference(reference, 30, seed=0)
    proxies = list(SMALL_SAMPLE_THRESHOLDS)
    rows = bench.score_sample(data_root, indices, proxies, seed=0, batch_size=64, out=tmp_path, progress=False)
    results = {c.proxy: c for c in bench.compare(rows, reference, proxies)}
    print(bench.table(list(results.values())))
    for name, need in SMALL_SAMPLE_THRESHOLDS.items():
        assert results[name].failed == 0, name
        assert results[name].spearman >= need, (name, results[name].spearman)
