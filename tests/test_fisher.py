"""Both Fisher proxies against an independent, hand-written computation of their formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zc_proxies import BlockProbe, score


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
    """Fisher differentiates only with respect to the probe scales, never the weights."""
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
