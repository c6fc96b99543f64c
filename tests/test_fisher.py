"""Both Fisher proxies against an independent, hand-written computation of their formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zc_proxies import BlockProbe, score
from zc_proxies.probes import SaliencyProbes


class TinyNet(nn.Module):
    """conv(3->4) BN ReLU | block: conv(4->6, groups 2, stride 2) BN probe | pool | linear(6->5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
        self.bn2 = nn.BatchNorm2d(6)
        self.probe = BlockProbe()
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.probe(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(F.relu(x), 1).flatten(1))


def _reference(net: TinyNet, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Written out by hand: forward with functional ops, retain grads, apply the formulas."""
    w1, w2, b2, wf, bf = (t.detach().clone() for t in (net.conv1.weight, net.conv2.weight, net.conv2.bias,
                                                       net.fc.weight, net.fc.bias))

    def bn(t):  # train-mode batch norm with fresh affine parameters (weight 1, bias 0)
        mean = t.mean(dim=(0, 2, 3), keepdim=True)
        var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-5)

    x = x.clone().requires_grad_(True)  # so the graph exists; weights stay constants
    a1 = F.conv2d(x, w1, padding=1)
    a1.retain_grad()
    h = F.relu(bn(a1))
    a2 = F.conv2d(h, w2, b2, stride=2, padding=1, groups=2)
    a2.retain_grad()
    block_out = bn(a2)
    block_out.retain_grad()
    a3 = F.relu(block_out).mean(dim=(2, 3)) @ wf.T + bf
    a3.retain_grad()
    loss = F.cross_entropy(a3, y)
    loss.backward()

    def delta(act, grad):  # per channel: 1/2 mean_n (sum_positions a*g)^2
        per_sample = (act.detach() * grad).reshape(act.shape[0], act.shape[1], -1).sum(-1)
        return 0.5 * (per_sample ** 2).mean(0)

    fisher = (delta(a1, a1.grad).sum() * (3 * 3 * 3)
              + delta(a2, a2.grad).sum() * (2 * 3 * 3)  # 4 inputs / 2 groups * 3x3
              + delta(a3, a3.grad).sum() * 6)
    potential = delta(block_out, block_out.grad).sum()
    return float(fisher), float(potential)


@pytest.fixture
def case():
    torch.manual_seed(0)
    net = TinyNet().double()
    x = torch.randn(7, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 2])
    return net, x, y


def test_fisher_equals_hand_computation(case):
    net, x, y = case
    want, _ = _reference(net, x, y)
    got = score(net, (x, y), "fisher")
    assert want > 0
    assert got == pytest.approx(want, rel=1e-9)


def test_fisher_potential_equals_hand_computation(case):
    net, x, y = case
    _, want = _reference(net, x, y)
    got = score(net, (x, y), "fisher_potential")
    assert want > 0
    assert got == pytest.approx(want, rel=1e-9)


def test_fisher_potential_ignores_non_block_layers(case):
    """Changing the classifier's fan-in weighting must not matter: only probes count."""
    net, x, y = case
    plain = score(net, (x, y), "fisher_potential")
    weighted = score(net, (x, y), "fisher")
    assert plain != pytest.approx(weighted)


def test_no_weight_gradients_are_computed(case, monkeypatch):
    """Fisher differentiates only with respect to the probed outputs (or scales on them), never the weights."""
    net, x, y = case
    seen = []
    real_grad = torch.autograd.grad

    def spy(outputs, inputs, *args, **kwargs):
        seen.extend(inputs)
        return real_grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    score(net, (x, y), "fisher")
    param_ids = {id(p) for p in net.parameters()}
    assert seen and not any(id(t) in param_ids for t in seen)
    assert all(t.dim() in (2, 4) and t.shape[0] == 7 for t in seen)


class InPlaceNet(nn.Module):
    """conv(3->4) ReLU(inplace) | conv(4->5) probe ReLU(inplace) | pool | linear(5->3): outputs overwritten in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False)
        self.probe = BlockProbe()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.probe(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_outputs_overwritten_in_place_are_probed_before_the_overwrite():
    torch.manual_seed(1)
    net = InPlaceNet().double()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w1, b1, w2, wf, bf = (t.detach() for t in (net.conv1.weight, net.conv1.bias, net.conv2.weight, net.fc.weight,
                                               net.fc.bias))
    a1 = F.conv2d(x.clone().requires_grad_(True), w1, b1, padding=1)
    a2 = F.conv2d(F.relu(a1), w2, stride=2, padding=1)
    a3 = F.relu(a2).mean(dim=(2, 3)) @ wf.T + bf
    g1, g2, g3 = torch.autograd.grad(F.cross_entropy(a3, y), (a1, a2, a3))

    def delta(act, grad):
        return 0.5 * ((act.detach() * grad).reshape(act.shape[0], act.shape[1], -1).sum(-1) ** 2).mean(0)

    fisher = float(delta(a1, g1).sum() * 27 + delta(a2, g2).sum() * 36 + delta(a3, g3).sum() * 5)
    assert score(net, (x, y), "fisher") == pytest.approx(fisher, rel=1e-12)
    # with companions the saliencies come from the shared pass, which must rerun the same way
    assert score(net, (x, y), ["fisher", "snip"])["fisher"] == pytest.approx(fisher, rel=1e-12)
    assert score(net, (x, y), "fisher_potential") == pytest.approx(float(delta(a2, g2).sum()), rel=1e-12)


def test_probing_outputs_and_probing_scales_give_the_same_saliencies(case):
    net, x, y = case
    net.requires_grad_(False)  # as the proxies' working copies: no weight gradients
    layers = [net.conv1, net.conv2, net.fc, net.probe]

    def run(scales_only):
        with SaliencyProbes(layers, scales_only) as probes:
            loss = F.cross_entropy(net(x), y)
        assert probes.intact
        return probes, probes.saliencies(torch.autograd.grad(loss, probes.targets, allow_unused=True))

    mixed, got = run(False)
    scaled, want = run(True)
    # the first conv's output is not part of a graph (nothing upstream requires grad): it gets a scale
    assert [t.shape for t in mixed.targets][0] == (7, 4, 1, 1) and mixed.targets[1].shape == (7, 6, 4, 4)
    assert all(t.shape[2:] in ((), (1, 1)) for t in scaled.targets)
    for (m1, g1), (m2, g2) in zip(got, want):
        assert m1 is m2 and torch.equal(g1, g2)
