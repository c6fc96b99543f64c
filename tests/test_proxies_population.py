"""AZ-NAS and TE-NAS: each component against an independent computation, their aggregations by hand, end to end.

The references are written out with explicit tensors, as in test_proxies_formulas:
a functional forward pass of a tiny network (F.conv2d, hand-written train-mode
BatchNorm), the random draws in the order the module docstrings document, numpy
for eigenvalues, singular values and pixel unshuffling, per-sample gradients by
an explicit loop over samples. None of it calls the proxies' code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_state import score_untouched_twice, with_caller_state
from scipy.stats import rankdata
from torch import nn

import zc_proxies.proxies.az_nas as az_mod
import zc_proxies.proxies.te_nas as te_mod
from zc_proxies import BlockProbe, score
from zc_proxies.errors import ModelError, NonFiniteScoreError
from zc_proxies.proxies.base import spec_of
from zc_proxies.proxies.population import aggregate

EPS_BN = 1e-5
SEED = 7


class Block(nn.Module):
    """conv3x3 (no bias) -> BN -> ReLU -> probe, plus the input when ``residual``."""

    def __init__(self, c_in: int, c_out: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.probe = BlockProbe()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.probe(self.relu(self.bn(self.conv(x))))
        return x + y if self.residual else y


class Net(nn.Module):
    """stem conv(3->4, bias) + BN | residual block 4->4 | block 4->6 stride 2 | pool | linear(6->5)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4))
        self.blocks = nn.Sequential(Block(4, 4, 1, True), Block(4, 6, 2, False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def make_net() -> Net:
    torch.manual_seed(3)
    net = Net().double()
    with torch.no_grad():  # non-trivial BatchNorm parameters (TE-NAS uses the network as given)
        for bn in (net.stem[1], net.blocks[0].bn, net.blocks[1].bn):
            bn.weight.copy_(torch.randn_like(bn.weight))
            bn.bias.copy_(torch.randn_like(bn.bias))
    return net


def make_batch(n: int = 9):
    g = torch.Generator().manual_seed(11)
    return torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64), torch.arange(n) % 5


# -- the same network, written out ----------------------------------------------------------------------------


def bn_train(t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = t.mean(dim=(0, 2, 3), keepdim=True)
    var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (t - mean) / torch.sqrt(var + EPS_BN) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def stem(p: dict, x: torch.Tensor) -> torch.Tensor:
    return bn_train(F.conv2d(x, p["stem.0.weight"], p["stem.0.bias"], padding=1), p["stem.1.weight"], p["stem.1.bias"])


def block0(p: dict, f: torch.Tensor) -> torch.Tensor:
    y = bn_train(F.conv2d(f, p["blocks.0.conv.weight"], padding=1), p["blocks.0.bn.weight"], p["blocks.0.bn.bias"])
    return f + F.relu(y)


def block1(p: dict, f: torch.Tensor) -> torch.Tensor:
    y = bn_train(F.conv2d(f, p["blocks.1.conv.weight"], stride=2, padding=1), p["blocks.1.bn.weight"],
                 p["blocks.1.bn.bias"])
    return F.relu(y)


def forward(p: dict, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    f0 = stem(p, x)
    f1 = block0(p, f0)
    f2 = block1(p, f1)
    return [f0, f1, f2], f2.mean(dim=(2, 3)) @ p["fc.weight"].T + p["fc.bias"]


def params_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# -- AZ-NAS ---------------------------------------------------------------------------------------------------


def positions(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


def isotropy_ref(f: torch.Tensor) -> float:
    x = positions(f.detach().numpy())
    x = x - x.mean(axis=0)
    s = np.linalg.eigvalsh(x.T @ x / len(x))
    p = s / s.sum()
    return float(np.sum(-p * np.log(p + 1e-8)))


def unshuffle(g: np.ndarray, s: int) -> np.ndarray:
    n, c, h, w = g.shape
    return g.reshape(n, c, h // s, s, w // s, s).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * s * s, h // s, w // s)


def trainability_ref(block, p: dict, f_in: torch.Tensor, g_out: torch.Tensor) -> float:
    leaf = f_in.detach().clone().requires_grad_(True)
    (g_in,) = torch.autograd.grad((block(p, leaf) * g_out).sum(), leaf)
    g_in, g_o = g_in.numpy(), g_out.numpy()
    if g_in.shape[-1] != g_o.shape[-1]:
        g_in = unshuffle(g_in, g_in.shape[-1] // g_o.shape[-1])
    m = positions(g_in).T @ positions(g_o) / (g_o.shape[0] * g_o.shape[2] * g_o.shape[3])
    sigma = np.linalg.svd(m, compute_uv=False).max()
    return float(-sigma - 1 / (sigma + 1e-6) + 2)


def az_reference(x_shape, seed: int) -> dict[str, float]:
    """The documented draws: Kaiming-normal weights in module order, Gaussian inputs, then +-1 signals last pair first."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.float64
    p = {"stem.0.weight": torch.randn(4, 3, 3, 3, generator=gen, dtype=d) * math.sqrt(2 / 27),
         "blocks.0.conv.weight": torch.randn(4, 4, 3, 3, generator=gen, dtype=d) * math.sqrt(2 / 36),
         "blocks.1.conv.weight": torch.randn(6, 4, 3, 3, generator=gen, dtype=d) * math.sqrt(2 / 36),
         "fc.weight": torch.randn(5, 6, generator=gen, dtype=d) * math.sqrt(2 / 6),
         "stem.0.bias": torch.zeros(4, dtype=d), "fc.bias": torch.zeros(5, dtype=d)}
    for name, c in (("stem.1", 4), ("blocks.0.bn", 4), ("blocks.1.bn", 6)):
        p[f"{name}.weight"], p[f"{name}.bias"] = torch.ones(c, dtype=d), torch.zeros(c, dtype=d)
    x = torch.randn(x_shape, generator=gen, dtype=d)
    feats, _ = forward(p, x)
    g2 = torch.bernoulli(torch.full(feats[2].shape, 0.5, dtype=d), generator=gen) * 2 - 1
    g1 = torch.bernoulli(torch.full(feats[1].shape, 0.5, dtype=d), generator=gen) * 2 - 1
    iso = [isotropy_ref(f) for f in feats]
    t = [trainability_ref(block1, p, feats[1], g2), trainability_ref(block0, p, feats[0], g1)]
    # FLOPs of one 3x6x6 sample: stem conv 9*3*4*36 + bias 4*36, BN 2*144; block 0 conv 9*4*4*36, BN 2*144,
    # ReLU 144; block 1 conv 9*4*6*9, BN 2*54, ReLU 54; adaptive pool 3x3 -> 1: (3+1)*(3+1)*6; linear 6*5
    flops = (3888 + 144) + 288 + 5184 + 288 + 144 + 1944 + 108 + 54 + 96 + 30
    return {"expressivity": sum(iso), "progressivity": min(iso[1] - iso[0], iso[2] - iso[1]),
            "trainability": (t[0] + t[1]) / 2, "complexity": flops / 1e6}


def test_az_nas_components_by_hand():
    net, (x, y) = make_net(), make_batch()
    got = score(net, (x, y), "az_nas", seed=SEED)
    want = az_reference(tuple(x.shape), SEED)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    assert got["complexity"] == 12168 / 1e6


def test_az_nas_identity_and_constant_blocks_rank_last():
    """A gradient-identity block makes trainability -inf, a constant feature map makes E NaN: both stored as WORST."""
    net = make_net()
    with torch.no_grad():  # block 0 outputs f + relu(0 * ...) = f: the identity; block 1 then outputs relu(bias 0)
        net.blocks[0].conv.weight.zero_()
    ident = az_mod.block_features(net.train(), make_batch()[0])
    g = torch.ones_like(ident[1])
    assert az_mod.block_trainability(ident[0], ident[1], g) == -math.inf
    const = torch.ones(4, 3, 2, 2, dtype=torch.float64)
    assert math.isnan(az_mod.isotropy(const))
    assert az_mod._official(math.nan) == az_mod.WORST and az_mod._official(-math.inf) == az_mod.WORST


def test_az_nas_needs_blocks_it_can_tell_apart():
    x, y = make_batch()
    with pytest.raises(ModelError, match="no zc_proxies.BlockProbe"):
        score(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 5)).double(), (x, y), "az_nas")
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), BlockProbe(), nn.Flatten(), nn.Linear(64, 5)).double()
    with pytest.raises(ModelError, match="directly"):
        score(flat, (x, y), "az_nas")


# -- TE-NAS ---------------------------------------------------------------------------------------------------

NTK_WEIGHTS = ("stem.0.weight", "stem.1.weight", "blocks.0.conv.weight", "blocks.0.bn.weight",
               "blocks.1.conv.weight", "blocks.1.bn.weight", "fc.weight")


def ntk_cond_ref(p: dict, x: torch.Tensor) -> float:
    rows = []
    for i in range(len(x)):  # one sample at a time: d(sum of sample i's logits)/d(every *weight*)
        ws = [p[k].clone().requires_grad_(True) for k in NTK_WEIGHTS]
        q = dict(p, **dict(zip(NTK_WEIGHTS, ws)))
        _, logits = forward(q, x)
        grads = torch.autograd.grad(logits[i].sum(), ws)
        rows.append(np.concatenate([g.numpy().ravel() for g in grads]))
    g = np.stack(rows)
    eig = np.linalg.eigvalsh(g @ g.T)
    return float(eig[-1] / eig[0])


class RegionNet(nn.Module):
    """Four ReLU units on 1x1 maps (so 30 samples must share regions), and one ReLU on (N, C) that is not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.ReLU()
        self.relu_flat = nn.ReLU()
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(self.relu_flat(h.flatten(1) - 0.3))


def test_te_nas_ntk_condition_number_by_hand():
    net, (x, y) = make_net(), make_batch()
    got = score(net, (x, y), "te_nas", seed=SEED)
    assert got["ntk_cond"] == pytest.approx(ntk_cond_ref(params_of(net), x), rel=1e-8)
    assert [n for n, _ in te_mod.ntk_weights(net)] == list(NTK_WEIGHTS)


def test_te_nas_linear_regions_by_hand():
    torch.manual_seed(0)
    net = RegionNet().double()
    n = 30
    x = torch.randn(n, 3, 1, 1, dtype=torch.float64)
    got = score(net, x, "te_nas", seed=SEED)
    p = params_of(net)
    g = torch.randn(n, 3, 1, 1, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    a1 = bn_train(F.conv2d(g, p["conv1.weight"], p["conv1.bias"]), p["bn1.weight"], p["bn1.bias"])
    a2 = bn_train(F.conv2d(F.relu(a1), p["conv2.weight"], p["conv2.bias"]), p["bn2.weight"], p["bn2.bias"])
    codes = {tuple((a1[i].ravel() > 0).tolist() + (a2[i].ravel() > 0).tolist()) for i in range(n)}
    assert got["linear_regions"] == len(codes) and 1 < len(codes) < n


def test_te_nas_singular_and_zero_ntk():
    same = torch.ones(4, 6, dtype=torch.float64)  # identical rows: rank 1
    assert te_mod.ntk_condition_number(same) == te_mod.INF_COND
    assert te_mod.ntk_condition_number(torch.zeros(4, 6)) == te_mod.NAN_COND
    with pytest.raises(NonFiniteScoreError):
        te_mod.ntk_condition_number(torch.full((2, 3), math.nan))


def test_te_nas_needs_relu_modules():
    x, y = make_batch()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 5)).double()
    with pytest.raises(ModelError, match="nn.ReLU"):
        score(net, (x, y), "te_nas")


def test_broken_networks_raise_non_finite():
    x, y = make_batch()
    net = make_net()
    with torch.no_grad():
        net.stem[0].bias.fill_(math.nan)
    with pytest.raises(NonFiniteScoreError):
        score(net, (x, y), "te_nas")
    # az_nas re-initialises every weight, so break the features another way: NaN inputs to the blocks
    with pytest.raises(NonFiniteScoreError):
        score(nn.Sequential(_Nan(), make_net()), (x, y), "az_nas")


class _Nan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * math.nan


# -- aggregation ----------------------------------------------------------------------------------------------


def test_az_nas_aggregation_by_hand():
    worst = az_mod.WORST
    comps = [{"expressivity": 10.0, "progressivity": -0.1, "trainability": -0.5, "complexity": 20.0},
             {"expressivity": 12.0, "progressivity": -0.3, "trainability": worst, "complexity": 40.0},
             {"expressivity": 11.0, "progressivity": -0.1, "trainability": -0.2, "complexity": 10.0},
             {"expressivity": 9.0, "progressivity": worst, "trainability": worst, "complexity": 30.0}]
    ranks = [(2, 3.5, 3, 2), (4, 2, 1.5, 4), (3, 3.5, 4, 1), (1, 1, 1.5, 3)]  # average ranks, 1 = worst
    want = [sum(math.log(r / 4) for r in row) for row in ranks]
    got = aggregate(spec_of("az_nas"), comps)
    assert np.allclose(got, want, rtol=1e-12)
    # the notebook's own formula on the official values (-inf where WORST is stored) gives the same scores
    official = sum(np.log(rankdata([-math.inf if c[k] == worst else c[k] for c in comps]) / 4) for k in comps[0])
    assert np.allclose(got, official, rtol=1e-12)


def test_te_nas_aggregation_by_hand():
    comps = [{"ntk_cond": 5.0, "linear_regions": 16.0}, {"ntk_cond": 50.0, "linear_regions": 16.0},
             {"ntk_cond": te_mod.INF_COND, "linear_regions": 16.0}, {"ntk_cond": 5.0, "linear_regions": 12.0}]
    # rank(-cond): [3.5, 2, 1, 3.5]; rank(regions): [3, 3, 3, 1]
    assert aggregate(spec_of("te_nas"), comps).tolist() == [6.5, 5.0, 4.0, 4.5]


def test_specs():
    az, te = spec_of("az_nas"), spec_of("te_nas")
    assert az.aggregate == "log_rank_sum" and [c.name for c in az.components] == list(az_mod.COMPONENTS)
    assert all(c.higher_is_better for c in az.components)
    assert te.aggregate == "rank_sum" and [(c.name, c.higher_is_better) for c in te.components] == [
        ("ntk_cond", False), ("linear_regions", True)]
    for spec in (az, te):
        assert spec.bn_mode == "train" and not spec.needs_labels and spec.needs_grad and spec.version


# -- generic guarantees ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["az_nas", "te_nas"])
def test_model_untouched_deterministic_and_label_free(name):
    net = with_caller_state(make_net())
    x, y = make_batch()
    batch = (x.float(), y)
    first = score_untouched_twice(net, batch, name)
    assert isinstance(first, dict)
    assert score(net.train(), x.float(), name, seed=5) == first  # no labels needed, caller's mode irrelevant
    other = score(net, batch, name, seed=6)
    if name == "az_nas":
        assert other["expressivity"] != first["expressivity"]
    else:  # the NTK has no randomness; only the Gaussian inputs of the region count depend on the seed
        assert other["ntk_cond"] == first["ntk_cond"]


# -- real NAS-Bench-201 networks ------------------------------------------------------------------------------

IDENTITY_CELL = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
ZERO_CELL = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module")
def nb201(data_root):
    from zc_proxies import get_space
    from zc_proxies.data import source_for

    return get_space("nb201", data_root), source_for("cifar10", data_root, 10)


def test_smoke_on_nb201(nb201):
    space, source = nb201
    index = 5000
    torch.manual_seed(index)
    net = space.build(space[index], 10)
    batch = source.batch(8, 0)
    az = score(net, batch, "az_nas", seed=1)
    assert az["complexity"] == pytest.approx(space.flops(index, "cifar10"), abs=1e-6)
    assert all(math.isfinite(v) and v > az_mod.WORST for v in az.values())
    assert az["trainability"] < 0 and az["expressivity"] > 0
    te = score(net, batch, "te_nas", seed=1)
    assert 1.0 < te["ntk_cond"] < te_mod.INF_COND and te["linear_regions"] == 8.0


def test_degenerate_nb201_cells_rank_last(nb201):
    space, source = nb201
    batch = source.batch(8, 0)
    torch.manual_seed(0)
    ident = score(space.build(IDENTITY_CELL, 10), batch, "az_nas", seed=1)
    assert ident["trainability"] == az_mod.WORST and ident["expressivity"] > az_mod.WORST
    torch.manual_seed(0)
    zero = score(space.build(ZERO_CELL, 10), batch, "az_nas", seed=1)
    assert zero["expressivity"] == az_mod.WORST and zero["progressivity"] == az_mod.WORST
    assert zero["trainability"] > az_mod.WORST  # zero cells: sigma = 0, t = -1/(1e-6) + 2, finite


def test_eval_command_reports_aggregate_and_components(tmp_path, data_root, capsys):
    from zc_proxies.cli import main

    out = tmp_path / "az"
    argv = ["eval", "--proxy", "az_nas", "--space", "nb201-cifar10", "--sample", "6", "--batch-size", "8",
            "--no-plot", "--bootstrap", "20", "--quiet", "--import", "zc_proxies.proxies.az_nas",
            "--out", str(out), "--data", str(data_root)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for name in ("az_nas", *(f"az_nas[{c}]" for c in az_mod.COMPONENTS)):
        assert name in text, name
    assert "Population-relative: az_nas" in text
