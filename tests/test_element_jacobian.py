"""Per-sample Jacobians of the logits w.r.t. element 0 of parameter tensors, one backward pass per class.

The reference is the definition: each sample run alone, one autograd backward
pass per (sample, class), element 0 of each parameter's gradient read off
(``per_sample_jacobian`` of the VKDNW tests). Every layer with a closed form
(Conv2d in its padding, stride, dilation and group variants, eval BatchNorm,
GroupNorm, Linear on 2-D and 3-D inputs, a layer called twice, an in-place
ReLU after a probed output) is compared with it; networks where the closed
forms would be wrong must be declined (None), and VKDNW then still equals the
hand computation through its per-sample route.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_proxies_vkdnw import per_sample_jacobian, reinit_by_hand, vkdnw_by_hand
from torch import nn

from zc_proxies import score
from zc_proxies.proxies.element_jacobian import element_jacobians

# torch notes that padding='same' with an even kernel pads a copy of the input: that case is tested on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


class Mixed(nn.Module):
    """Every layer kind the closed forms cover, in their awkward variants; 5 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=(1, 2), bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)  # modifies the BN output in place
        self.conv2 = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False)
        self.gn = nn.GroupNorm(2, 6)
        self.shared = nn.Conv2d(6, 6, 1, bias=True)  # called twice
        self.same = nn.Conv2d(6, 6, 4, padding="same", bias=False)  # even kernel: asymmetric padding
        self.valid = nn.Conv2d(6, 6, (2, 3), stride=(1, 2), padding="valid", bias=False)
        self.rows = nn.Linear(2, 3)  # on (N, C*H, W): a 3-D input
        self.fc = nn.Linear(30 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.conv1(x)))
        h = torch.tanh(self.gn(self.conv2(h)))
        h = self.shared(torch.tanh(self.shared(h)))
        h = torch.tanh(self.valid(self.same(h)))
        h = self.rows(h.reshape(h.shape[0], -1, h.shape[-1]))
        return self.fc(h.reshape(h.shape[0], -1))


def mixed_net() -> Mixed:
    torch.manual_seed(1)
    net = Mixed().double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.copy_(torch.randn_like(m.weight))
                m.bias.copy_(torch.randn_like(m.bias))
        net.bn.running_mean.copy_(torch.randn(4))
        net.bn.running_var.copy_(torch.rand(4) + 0.5)
    return net


def inputs(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 11, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def test_every_closed_form_equals_the_per_sample_definition():
    net, x = mixed_net(), inputs()
    names = [k for k, _ in net.named_parameters()]
    flags = {k: p.requires_grad for k, p in net.named_parameters()}
    got = element_jacobians(net, x, names)
    assert got is not None
    jac, logits = got
    want, want_logits = per_sample_jacobian(net, x, len(names))
    assert jac.shape == (6, 5, len(names))
    assert np.abs(want).min(axis=(0, 1)).max() > 0  # every element's derivative is non-zero somewhere
    np.testing.assert_allclose(jac.numpy(), want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(logits.numpy(), want_logits, rtol=1e-12)
    # nothing left behind on the network
    assert {k: p.requires_grad for k, p in net.named_parameters()} == flags
    assert not any(m._forward_hooks for m in net.modules())


def test_skip_last_leaves_the_last_class_zero():
    net, x = mixed_net(), inputs()
    names = [k for k, _ in net.named_parameters()][:7]
    full, _ = element_jacobians(net, x, names)
    part, _ = element_jacobians(net, x, names, skip_last=True)
    assert torch.equal(part[:, :-1], full[:, :-1]) and not part[:, -1].any() and full[:, -1].any()


class Tied(nn.Module):
    """The classifier's weight also acts outside its own call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.fc = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
        return self.fc(h) + F.linear(torch.tanh(h), self.fc.weight)


class Reflect(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect")
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1))


class Normed(nn.Module):
    """A LayerNorm: no closed form here."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 11 * 9, 6)
        self.ln = nn.LayerNorm(6)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.ln(self.fc1(x.flatten(1))))


def train_mode_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).double()


@pytest.mark.parametrize("make", [Tied, Reflect, Normed, train_mode_bn], ids=["tied", "reflect", "layernorm", "bn-train"])
def test_networks_the_closed_forms_do_not_cover_are_declined(make):
    torch.manual_seed(0)
    net = make().double()
    if make is not train_mode_bn:
        net.eval()  # train_mode_bn stays in train mode: its samples interact through the batch statistics
    names = [k for k, _ in net.named_parameters()]
    assert element_jacobians(net, inputs(), names) is None
    assert not any(m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("make", [Tied, Reflect, Normed], ids=["tied", "reflect", "layernorm"])
def test_vkdnw_takes_the_per_sample_route_where_the_closed_forms_do_not_apply(make):
    torch.manual_seed(0)
    net, x = make().double(), inputs(20)
    ref, z, _ = reinit_by_hand(net, x.shape, 3)
    dim, entropy = vkdnw_by_hand(ref, z)
    assert score(net, x, "vkdnw", seed=3) == pytest.approx(dim + entropy / math.log(10), rel=1e-10, abs=0)


def test_vkdnw_through_the_closed_forms_equals_the_hand_computation():
    net, x = mixed_net(), inputs(20)
    ref, z, _ = reinit_by_hand(net, x.shape, 4)
    with torch.no_grad():  # the documented initialisation sets GroupNorm's affine map to 1, 0 (no draws)
        ref.gn.weight.fill_(1.0)
        ref.gn.bias.zero_()
    ref.eval()
    assert element_jacobians(ref, z, [k for k, _ in ref.named_parameters()]) is not None
    dim, entropy = vkdnw_by_hand(ref, z)
    assert score(net, x, "vkdnw", seed=4) == pytest.approx(dim + entropy / math.log(10), rel=1e-10, abs=0)
