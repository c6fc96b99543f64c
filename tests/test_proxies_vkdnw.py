"""VKDNW (Tybl & Neumann, CVPR 2025): ``vkdnw`` and the population proxy ``vkdnw_agg``.

The reference values are computed here without the module's code: the Kaiming
re-initialisation and the Gaussian inputs drawn by hand in the documented order,
per-sample gradients by explicit loops of torch.autograd (one backward pass per
sample and class), the multinomial covariance's Cholesky factor, the Fisher
matrix, its eigenvalues and deciles by numpy; AZ-NAS's feature covariances and
Jacobian products by numpy on features computed block by block; the aggregation
by hand.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from model_state import score_untouched_twice, with_caller_state
from torch import nn

import zc_proxies.proxies.vkdnw  # noqa: F401  (registers vkdnw and vkdnw_agg)
from zc_proxies import BlockProbe, score
from zc_proxies.errors import ModelError
from zc_proxies.proxies.az_nas import WORST
from zc_proxies.proxies.base import spec_of
from zc_proxies.proxies.population import aggregate

SEED = 7
CLASSES = 5
DECILES = [i / 10 for i in range(1, 10)]


class ConvBlock(nn.Module):
    """ReLU -> conv (no bias) -> BN, optionally strided; a probed block (AZ-NAS reads its output)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.probe = BlockProbe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.bn(self.conv(self.relu(x))))


class ZeroCell(nn.Module):
    """A block whose output ignores its input (NB201's all-``none`` cell)."""

    def __init__(self) -> None:
        super().__init__()
        self.probe = BlockProbe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(x.mul(0.0))


class TinyNet(nn.Module):
    """stem conv(3->4, bias) + BN | blocks 4->4, 4->6 (stride 2) | ReLU, pool, linear(6->5): 12 tensors.

    AZ-NAS's features: the stem output (the first block's input) and each block's output.
    """

    def __init__(self, zero_cell: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4))
        self.cells = nn.ModuleList([ZeroCell() if zero_cell else ConvBlock(4, 4, 1), ConvBlock(4, 6, 2)])
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.fc(self.head(x))


def make_net(zero_cell: bool = False) -> TinyNet:
    torch.manual_seed(3)
    net = TinyNet(zero_cell).double()
    with torch.no_grad():  # a state the proxy must replace: non-trivial BN parameters and statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn_like(m.weight))
                m.bias.copy_(torch.randn_like(m.bias))
                m.running_mean.copy_(torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
    return net


def make_batch(n: int = 7):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.arange(n) % CLASSES


# -- the reference computation ----------------------------------------------------------------------------------


def reinit_by_hand(net: nn.Module, shape: torch.Size, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Generator]:
    """A copy with the documented draws: N(0, 2/fan_in) weights in module order, zero biases, BN 1/0 and fresh
    statistics; then Gaussian inputs of the batch's shape."""
    net = copy.deepcopy(net)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = int(np.prod(m.weight.shape[1:]))
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64) * math.sqrt(2 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.num_batches_tracked.zero_()
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    return net, x, gen


def per_sample_jacobian(net: nn.Module, x: torch.Tensor, tensors: int) -> tuple[np.ndarray, np.ndarray]:
    """J[n, c, k] = d logit_c(x_n) / d (first element of parameter tensor k), one backward pass per (n, c)."""
    params = [p for _, p in net.named_parameters()][:tensors]
    net.eval()
    logits, rows = [], []
    for n in range(len(x)):
        out = net(x[n:n + 1])[0]
        logits.append(out.detach().numpy())
        row = []
        for c in range(len(out)):
            grads = torch.autograd.grad(out[c], params, retain_graph=True, allow_unused=True)
            row.append([0.0 if g is None else float(g.reshape(-1)[0]) for g in grads])
        rows.append(row)
    return np.array(rows), np.array(logits)


def cholesky_of_multinomial(p: np.ndarray) -> np.ndarray:
    """L with L L^T = diag(p) - p p^T: numpy's Cholesky of the leading (C-1) block, the last row solved for.

    The covariance is singular (its rows sum to 0), so its last pivot is 0.
    """
    sigma = np.diag(p) - np.outer(p, p)
    c = len(p)
    lower = np.zeros((c, c))
    lower[:-1, :-1] = np.linalg.cholesky(sigma[:-1, :-1])
    lower[-1, :-1] = np.linalg.solve(lower[:-1, :-1], sigma[:-1, -1])
    return lower


def vkdnw_by_hand(net: nn.Module, x: torch.Tensor, tensors: int = 128) -> tuple[int, float]:
    jac, logits = per_sample_jacobian(net, x, tensors)
    fisher = np.zeros((jac.shape[2], jac.shape[2]))
    for j, z in zip(jac, logits):
        soft = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        a = cholesky_of_multinomial(0.95 * soft + 0.05 / len(z)) @ j
        fisher += a.T @ a / len(jac)
    lam = np.abs(np.linalg.eigvalsh(fisher))
    q = np.quantile(lam, DECILES)
    t = q / (np.abs(q).sum() + 1e-10)
    return len(list(net.parameters())), float(-(t * np.log(t + 1e-10)).sum())


# -- (a) formulas against the reference ---------------------------------------------------------------------------


def test_vkdnw_equals_the_hand_computation():
    net, batch = make_net(), make_batch()
    ref, z, _ = reinit_by_hand(net, batch[0].shape, SEED)
    dim, entropy = vkdnw_by_hand(ref, z)
    assert dim == 12 and 0 < entropy < math.log(9)
    got = score(net, batch, "vkdnw", seed=SEED)
    assert got == pytest.approx(dim + entropy / math.log(10), rel=1e-10, abs=0)
    assert math.floor(got) == dim  # aleph is the integer part


class Branches(nn.Module):
    """65 parallel branches Linear(3 -> 4) -> tanh -> Linear(4 -> 8), summed: 130 weight tensors, none deep."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 8, bias=False)) for _ in range(65))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(b(x) for b in self.branches)


def test_only_the_first_128_parameter_tensors_enter_the_fisher_matrix():
    torch.manual_seed(0)
    chain = Branches().double()  # 130 tensors
    x = torch.randn(20, 3, dtype=torch.float64)  # 20 * (8 - 1) > 128: the deciles are above rounding noise
    ref, z, _ = reinit_by_hand(chain, x.shape, SEED)
    dim, entropy = vkdnw_by_hand(ref, z, tensors=128)
    assert dim == 130
    assert score(chain, x, "vkdnw", seed=SEED) == pytest.approx(dim + entropy / math.log(10), rel=1e-10, abs=0)
    _, all_130 = vkdnw_by_hand(ref, z, tensors=130)
    assert abs(all_130 - entropy) > 1e-6  # the cap matters here


def azn_by_hand(net: nn.Module, x: torch.Tensor, gen: torch.Generator) -> tuple[float, float]:
    """AZ-NAS expressivity and trainability, features computed block by block (train mode)."""
    net.train()
    feats = [net.stem(x.clone().requires_grad_(True))]
    for cell in net.cells:
        feats.append(cell(feats[-1]))
    expr = 0.0
    for f in feats:
        a = f.detach().permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy()
        a = a - a.mean(axis=0)
        s = np.linalg.eigvalsh(a.T @ a / len(a))
        prob = s / s.sum()
        expr += float(-(prob * np.log(prob + 1e-8)).sum())
    scores = []
    for i in (2, 1):  # last block first: the Rademacher draws come in this order
        g_out = (torch.bernoulli(torch.full(feats[i].shape, 0.5, dtype=torch.float64), generator=gen) - 0.5) * 2
        (g_in,) = torch.autograd.grad(feats[i], feats[i - 1], grad_outputs=g_out, retain_graph=True)
        g_in = g_in.numpy()
        n, c, h, w = g_out.shape
        r = g_in.shape[2] // h
        # unshuffle r x r blocks into channels (their order does not change the singular values)
        g_in = g_in.reshape(n, -1, h, r, w, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, -1, h, w)
        go = g_out.numpy().transpose(0, 2, 3, 1).reshape(-1, c)
        gi = g_in.transpose(0, 2, 3, 1).reshape(-1, g_in.shape[1])
        sigma = np.linalg.svd(gi.T @ go / len(go), compute_uv=False).max()
        scores.append(2 - sigma - 1 / (sigma + 1e-6))
    return expr, float(np.mean(scores))


def jacov_by_hand(net: nn.Module, x: torch.Tensor) -> float:
    net.train()
    x = x.clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(net(x).sum(), x)
    v = np.linalg.eigvalsh(np.corrcoef(jac.reshape(len(x), -1).numpy()))
    return float(-np.sum(np.log(v + 1e-5) + 1 / (v + 1e-5)))


def test_vkdnw_agg_components_equal_the_hand_computation():
    net, batch = make_net(), make_batch()
    ref, z, gen = reinit_by_hand(net, batch[0].shape, SEED)
    dim, entropy = vkdnw_by_hand(ref, z)
    expr, train = azn_by_hand(ref, z, gen)
    jacov = jacov_by_hand(ref, batch[0])
    got = score(net, batch, "vkdnw_agg", seed=SEED)
    assert got["dim"] == dim and got["entropy"] == pytest.approx(entropy, rel=1e-10)
    assert got["flops"] == score(net, batch, "flops")
    assert got["expressivity"] == pytest.approx(expr, rel=1e-10)
    assert got["trainability"] == pytest.approx(train, rel=1e-10)
    assert got["jacov"] == pytest.approx(jacov, rel=1e-8)
    # the same draws as the single score, and as az_nas for its two components
    both = score(net, batch, ["vkdnw", "az_nas"], seed=SEED)
    assert both["vkdnw"] == got["dim"] + got["entropy"] / math.log(10)
    assert (got["expressivity"], got["trainability"]) == (both["az_nas"]["expressivity"],
                                                        both["az_nas"]["trainability"])


@pytest.mark.parametrize("order", [["vkdnw", "vkdnw_agg"], ["vkdnw_agg", "vkdnw"]])
def test_scored_together_the_fisher_matrix_is_computed_once(monkeypatch, order):
    net, batch = make_net(), make_batch()
    alone = {name: score(net, batch, name, seed=SEED) for name in order}
    calls = []
    original = zc_proxies.proxies.vkdnw.fim_terms

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(zc_proxies.proxies.vkdnw, "fim_terms", counted)
    together = score(net, batch, order, seed=SEED)
    assert len(calls) == 1
    assert together["vkdnw"] == alone["vkdnw"]
    assert together["vkdnw_agg"] == alone["vkdnw_agg"]  # the later components (draws after the FIM) unchanged


# -- (b) the aggregation ----------------------------------------------------------------------------------------


def test_the_aggregation_by_hand():
    dims = [100, 100, 90, 110, 90]
    entropy = [1.2, 0.8, 2.0, 0.5, 2.0]
    flops = [10, 20, 20, 5, 1]
    expr = [5, 4, 3, 2, 1]
    train = [-1, -2, -0.5, -3, -0.1]
    jacov = [-50, -40, -60, -45, -70]
    comps = [{"dim": a, "entropy": b, "flops": c, "expressivity": d, "trainability": e, "jacov": f}
             for a, b, c, d, e, f in zip(dims, entropy, flops, expr, train, jacov)]
    # (dim, entropy) lexicographically, dense: (90, 2.0) x2 -> 1, (100, 0.8) -> 2, (100, 1.2) -> 3, (110, 0.5) -> 4
    dense = [3, 2, 1, 4, 1]
    flops_rank = [3, 4.5, 4.5, 2, 1]
    expr_rank = [5, 4, 3, 2, 1]
    train_rank = [3, 2, 4, 1, 5]
    jacov_rank = [3, 5, 2, 4, 1]
    want = [math.log(a) + math.log(b) + math.log(c) + math.log(d) + math.log(e)
            for a, b, c, d, e in zip(dense, flops_rank, expr_rank, train_rank, jacov_rank)]
    spec = spec_of("vkdnw_agg")
    assert spec.population and [c.name for c in spec.components] == list(comps[0])
    assert all(c.higher_is_better for c in spec.components)
    assert aggregate(spec, comps) == pytest.approx(want, rel=1e-12)
    assert aggregate(spec, []).shape == (0,)
    # an undefined jacov (stored as WORST) takes the population's smallest jacov, as the notebook's fillna(min)
    comps[1]["jacov"] = WORST
    jacov_rank = [4, 1.5, 3, 5, 1.5]  # jacov now -50, -70 (the minimum), -60, -45, -70
    want = [math.log(a) + math.log(b) + math.log(c) + math.log(d) + math.log(e)
            for a, b, c, d, e in zip(dense, flops_rank, expr_rank, train_rank, jacov_rank)]
    assert aggregate(spec, comps) == pytest.approx(want, rel=1e-12)


# -- (c) the caller's model, (d) determinism ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vkdnw", "vkdnw_agg"])
def test_caller_model_untouched_and_deterministic(name):
    net = with_caller_state(make_net(), train=True)
    x, y = make_batch()
    batch = (x.float(), y)
    first = score_untouched_twice(net, batch, name)
    assert score(net.eval(), batch, name, seed=5) == first  # the BN mode comes from the spec
    assert score(net, batch, name, seed=6) != first


def test_labels_and_pixels_of_the_batch():
    """No labels needed; vkdnw reads only the batch's shape, vkdnw_agg's jacov reads the pixels."""
    net, (x, y) = make_net(), make_batch()
    assert score(net, x, "vkdnw", seed=1) == score(net, (x, y), "vkdnw", seed=1) == score(net, x + 1, "vkdnw", seed=1)
    a, b = score(net, x, "vkdnw_agg", seed=1), score(net, x + 1, "vkdnw_agg", seed=1)
    assert a["jacov"] != b["jacov"] and {k: v for k, v in a.items() if k != "jacov"} == {
        k: v for k, v in b.items() if k != "jacov"}


# -- inputs that cannot be scored ------------------------------------------------------------------------------


def test_models_that_cannot_be_scored_are_named():
    x, _ = make_batch()
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).double()
    assert math.isfinite(score(flat, x, "vkdnw"))
    with pytest.raises(ModelError, match="BlockProbe"):
        score(flat, x, "vkdnw_agg")
    one_output = nn.Sequential(nn.Flatten(), nn.Linear(108, 1)).double()
    with pytest.raises(ModelError, match="at least 2 outputs"):
        score(one_output, x, "vkdnw")
    with pytest.raises(ModelError, match="parameters"):
        score(nn.Flatten(), x, "vkdnw")


def test_a_cell_that_ignores_its_input_ranks_last_in_the_undefined_components():
    """Constant features (expressivity) and input-independent outputs (jacov) are undefined: stored as WORST."""
    net, batch = make_net(zero_cell=True), make_batch()
    got = score(net, batch, "vkdnw_agg", seed=SEED)
    assert got["expressivity"] == WORST and got["jacov"] == WORST
    assert math.isfinite(got["trainability"]) and got["trainability"] > WORST
    assert score(net, batch, "vkdnw", seed=SEED) == got["dim"] + got["entropy"] / math.log(10)


# -- (e) a real NAS-Bench-201 network --------------------------------------------------------------------------


def test_smoke_on_a_nb201_network(data_root):
    from zc_proxies import get_space
    from zc_proxies.data import source_for

    space = get_space("nb201", data_root)
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    torch.manual_seed(0)
    net = space.build(arch, 10)
    batch = source_for("cifar10", data_root, 10).batch(4, 0)
    got = score(net, batch, ["vkdnw", "vkdnw_agg"], seed=0)
    comps = got["vkdnw_agg"]
    assert comps["dim"] == len(list(net.parameters())) > 128
    assert got["vkdnw"] == comps["dim"] + comps["entropy"] / math.log(10)
    assert 0 < comps["entropy"] < math.log(9)
    assert comps["flops"] == pytest.approx(space.flops(space.index_of(arch), "cifar10"), abs=1e-6)
    assert all(math.isfinite(v) for v in comps.values())
