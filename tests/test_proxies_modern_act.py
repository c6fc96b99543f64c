"""meco, meco_opt, swap and swap_reg against independent computations of their official definitions.

The references below run a small network by hand (F.conv2d, hand-written
train-mode BatchNorm), list every tensor a hooked module would return, and apply
the formulas with numpy (np.corrcoef, np.linalg.eigvalsh, np.unique over the
transposed sign matrix), in float64. None of it calls the proxies' code. The
modules are imported explicitly (they register their proxies on import).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_state import score_untouched_twice, with_caller_state
from test_proxies_formulas import make_batch as tiny_batch
from test_proxies_formulas import make_net as tiny_net
from torch import nn

from zc_proxies import BlockProbe, get_proxy, score
from zc_proxies.errors import ConfigError, ModelError, NonFiniteScoreError
from zc_proxies.proxies import meco as meco_module
from zc_proxies.proxies import swap as swap_module
from zc_proxies.proxies.base import PROXIES

EPS_BN = 1e-5
SEED = 13
C1, C2, CLASSES = 10, 12, 9  # more than 8 rows everywhere, so meco_opt samples at every module call
OURS = ["meco", "meco_opt", "swap"]


class Net(nn.Module):
    """block1 = Sequential(conv 3->10 with bias, BN, ReLU) | conv 10->12 (stride 2) BN probe ReLU | pool | fc 12->9."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, C1, 3, padding=1, bias=True), nn.BatchNorm2d(C1), nn.ReLU())
        self.conv2 = nn.Conv2d(C1, C2, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(C2)
        self.probe = BlockProbe()
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(C2, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.relu2(self.probe(self.bn2(self.conv2(x))))
        return self.fc(self.pool(x).flatten(1))


def make_net() -> Net:
    torch.manual_seed(5)
    net = Net().double()
    with torch.no_grad():  # non-trivial BatchNorm parameters and running statistics
        for bn in (net.block1[1], net.bn2):
            bn.weight.copy_(torch.randn_like(bn.weight))
            bn.bias.copy_(torch.randn_like(bn.bias))
            bn.running_mean.copy_(torch.randn_like(bn.running_mean))
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
    return net


def make_batch(n: int = 20):
    g = torch.Generator().manual_seed(17)
    x = torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.arange(n) % CLASSES


def bn_train(t, weight, bias):
    mean = t.mean(dim=(0, 2, 3), keepdim=True)
    var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (t - mean) / torch.sqrt(var + EPS_BN) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def module_outputs(p: dict, x: torch.Tensor) -> list[torch.Tensor]:
    """What each hooked module returns, in the order forward hooks fire (the BlockProbe left out)."""
    a1 = F.conv2d(x, p["block1.0.weight"], p["block1.0.bias"], padding=1)
    pre1 = bn_train(a1, p["block1.1.weight"], p["block1.1.bias"])
    h1 = F.relu(pre1)
    a2 = F.conv2d(h1, p["conv2.weight"], None, stride=2, padding=1)
    pre2 = bn_train(a2, p["bn2.weight"], p["bn2.bias"])
    feat = F.relu(pre2)
    pooled = feat.mean(dim=(2, 3), keepdim=True)
    logits = pooled.flatten(1) @ p["fc.weight"].T + p["fc.bias"]
    # block1.0, block1.1, block1.2, block1 (the Sequential), conv2, bn2, relu2, pool, fc, the root
    return [a1, pre1, h1, h1, a2, pre2, feat, pooled, logits, logits]


def params_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def lambda_min(rows: np.ndarray) -> float:
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant rows: numpy warns, then gives NaN
        corr = np.corrcoef(rows)
    corr[~np.isfinite(corr)] = 0.0
    return float(np.linalg.eigvalsh(corr).min())


def rows_of_first_sample(t: torch.Tensor) -> np.ndarray:
    first = t[0].numpy()
    return first.reshape(first.shape[0], -1)


# -- (a) the formulas by hand -----------------------------------------------------------------------------------


def test_meco_by_hand():
    net, (x, y) = make_net(), make_batch()
    outputs = module_outputs(params_of(net), x[:1])  # one sample, train-mode BatchNorm over its pixels
    expected = sum(lambda_min(rows_of_first_sample(t)) for t in outputs)
    # the pool, fc and root outputs are constant rows (one value each): they add exactly 0
    assert sum(lambda_min(rows_of_first_sample(t)) for t in outputs[7:]) == 0.0
    assert score(net, (x, y), "meco") == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_meco_opt_by_hand():
    net, (x, y) = make_net(), make_batch()
    gen = torch.Generator().manual_seed(SEED)
    expected = 0.0
    for t in module_outputs(params_of(net), x[:1]):
        rows = rows_of_first_sample(t)
        n = rows.shape[0]
        picked = torch.randperm(n, generator=gen)[:8].numpy()  # one draw per module call, as the hooks fire
        expected += lambda_min(rows[picked]) * n / 8
    assert score(net, (x, y), "meco_opt", seed=SEED) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_meco_opt_is_meco_where_no_module_has_more_than_8_rows():
    net, batch = tiny_net(), tiny_batch()  # 4 and 6 channels, 5 classes
    got = score(net, batch, ["meco", "meco_opt"], seed=3)
    assert got["meco_opt"] == got["meco"]


def test_meco_reads_one_sample_only():
    net, (x, _) = make_net(), make_batch()
    other = x.clone()
    other[1:] = torch.randn_like(other[1:])
    for name in ("meco", "meco_opt"):
        assert score(net, x, name, seed=1) == score(net, other, name, seed=1) == score(net, x[:1], name, seed=1)


def swap_reference(net: nn.Module, x: torch.Tensor, seed: int, repeats: int) -> float:
    """Gaussian re-initialisation drawn in module order, the ReLU outputs, distinct columns of sign(A)."""
    gen = torch.Generator().manual_seed(seed)
    p = params_of(net)
    counts = []
    for _ in range(repeats):
        p["block1.0.weight"] = torch.randn(C1, 3, 3, 3, generator=gen, dtype=torch.float64)
        p["block1.0.bias"] = torch.zeros(C1, dtype=torch.float64)
        p["conv2.weight"] = torch.randn(C2, C1, 3, 3, generator=gen, dtype=torch.float64)
        p["fc.weight"] = torch.randn(CLASSES, C2, generator=gen, dtype=torch.float64)
        p["fc.bias"] = torch.zeros(CLASSES, dtype=torch.float64)
        for bn, c in (("block1.1", C1), ("bn2", C2)):
            p[f"{bn}.weight"], p[f"{bn}.bias"] = torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
        out = module_outputs(p, x)
        relu_outputs = [out[2], out[6]]  # block1.2 and relu2
        a = np.concatenate([t.reshape(len(x), -1).numpy() for t in relu_outputs], axis=1)
        counts.append(np.unique(np.sign(a).T, axis=0).shape[0])
    return float(np.mean(counts))


def test_swap_by_hand_on_the_first_16_samples():
    net, (x, y) = make_net(), make_batch(20)
    expected = swap_reference(net, x[:16], SEED, repeats=32)
    assert swap_module.SAMPLES == 16 and swap_module.REPEATS == 32
    assert score(net, (x, y), "swap", seed=SEED) == pytest.approx(expected, rel=1e-12)
    assert score(net, x[:16], "swap", seed=SEED) == score(net, x, "swap", seed=SEED)


def test_swap_with_fewer_samples_uses_them_all():
    net, (x, y) = make_net(), make_batch(6)
    assert score(net, (x, y), "swap", seed=2) == pytest.approx(swap_reference(net, x, 2, repeats=32), rel=1e-12)


def test_swap_reg_multiplies_by_the_gaussian_of_thousands_of_parameters():
    net, batch = make_net(), make_batch()
    # block1.0 10*3*9 + 10, block1.1 2*10, conv2 12*10*9, bn2 2*12, fc 12*9 + 9
    theta = (280 + 20 + 1080 + 24 + 117) / 1e3
    assert swap_module.parameters_k(net) == theta
    plain = score(net, batch, "swap", seed=4)
    mu, sigma = 1.0, 2.0
    expected = plain * math.exp(-((theta - mu) ** 2) / sigma)
    swap_module.register_swap_reg("swap_reg_test", mu=mu, sigma=sigma)
    try:
        assert score(net, batch, "swap_reg_test", seed=4) == pytest.approx(expected, rel=1e-14)
        spec = get_proxy("swap_reg_test").spec
        assert (spec.version, spec.bn_mode, spec.needs_labels) == ("1-mu1-sigma2", "train", False)
    finally:
        PROXIES.remove("swap_reg_test")
    with pytest.raises(ConfigError, match="positive sigma"):
        swap_module.swap_reg_with(1.0, 0.0)


# -- errors ---------------------------------------------------------------------------------------------------


def test_what_the_proxies_cannot_score_is_named():
    x = torch.randn(4, 3, 6, 6)
    one_channel = nn.Sequential(nn.Conv2d(3, 1, 3), nn.ReLU())
    with pytest.raises(ModelError, match="fewer than two rows"):
        score(one_channel, x, "meco")
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ModelError, match="nn.ReLU"):
        score(no_relu, x, "swap")


class Poison(nn.Module):
    """One NaN in the first sample's first channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[0, 0, 0, 0] = float("nan")
        return x


def test_nan_feature_maps_are_not_zeroed_away():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), Poison(), nn.ReLU(), nn.Conv2d(4, 4, 1))
    x = torch.randn(4, 3, 6, 6)
    for name in OURS:
        with pytest.raises(NonFiniteScoreError, match=name):
            score(net, x, name)


# -- (b) alone and together -------------------------------------------------------------------------------------


class CountingIdentity(nn.Identity):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingIdentity.calls += 1
        return x


def test_together_equals_alone_and_shares_the_passes():
    swap_module.register_swap_reg("swap_reg_share", mu=1.0, sigma=2.0)
    try:
        net, batch = make_net(), make_batch()
        net.block1 = nn.Sequential(*net.block1, CountingIdentity())
        names = ["meco", "swap", "meco_opt", "swap_reg_share", "naswot", "grad_norm"]
        CountingIdentity.calls = 0
        together = score(net, batch, names, seed=8)
        joint = CountingIdentity.calls
        alone = {}
        single = {}
        for name in names:
            CountingIdentity.calls = 0
            alone[name] = score(net, batch, name, seed=8)
            single[name] = CountingIdentity.calls
        for name in names:
            assert together[name] == alone[name], name
        assert single["meco"] == single["meco_opt"] == 1
        assert single["swap"] == single["swap_reg_share"] == swap_module.REPEATS
        # meco + meco_opt: one pass; swap + swap_reg: the 32 of one; naswot + grad_norm: one shared train pass
        assert joint == 1 + swap_module.REPEATS + 1
        reversed_order = score(net, batch, names[::-1], seed=8)
        assert all(reversed_order[n] == together[n] for n in names)
    finally:
        PROXIES.remove("swap_reg_share")


# -- (c) the caller's model, (d) determinism, specs ------------------------------------------------------------


@pytest.mark.parametrize("name", OURS)
def test_caller_model_untouched_and_deterministic(name):
    net = with_caller_state(make_net())
    x, y = make_batch()
    batch = (x.float(), y)
    first = score_untouched_twice(net, batch, name)
    spec = get_proxy(name).spec
    assert (spec.bn_mode, spec.needs_labels, spec.needs_grad, spec.higher_is_better) == ("train", False, False, True)
    assert score(net.train(), x.float(), name, seed=5) == first  # no labels needed, the caller's mode ignored


def test_seeded_randomness():
    net, batch = make_net(), make_batch()
    for name in ("meco_opt", "swap"):
        a, b = score(net, batch, name, seed=1), score(net, batch, name, seed=2)
        assert a != b, name
        assert score(net, batch, name, seed=1) == a, name
    assert score(net, batch, "meco", seed=1) == score(net, batch, "meco", seed=2)


# -- (e) a real NAS-Bench-201 network on CIFAR-10 ---------------------------------------------------------------


def test_smoke_on_a_nb201_network(data_root, monkeypatch):
    from zc_proxies import get_space
    from zc_proxies.data import source_for

    monkeypatch.setattr(swap_module, "REPEATS", 2)  # a smoke test: two re-initialisations keep it fast
    space = get_space("nb201", data_root)
    torch.manual_seed(0)
    net = space.build("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|", 10)
    batch = source_for("cifar10", data_root, 10).batch(16, 0)
    got = score(net, batch, OURS, seed=0)
    assert all(math.isfinite(v) for v in got.values()), got
    assert 1 <= got["swap"] <= 2**16
    assert got["meco"] > 0  # each term is >= 0 up to rounding, the early feature maps' well above
    assert got["meco"] == score(net, batch, "meco", seed=0)
    assert meco_module.SAMPLES == 1 and meco_module.OPT_ROWS == 8
