"""BlockSwap block types: names, shapes, parameter counts, probe placement, and Fisher potential by hand."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zc_proxies import score
from zc_proxies.blockswap import PAPER_POOL, get_net, parse_block
from zc_proxies.blockswap.blocks import Block, Bottleneck, GroupedPointwise
from zc_proxies.errors import ArchError, UnknownNameError

PAPER_NAMES = ["S", "G(2)", "G(4)", "G(8)", "G(16)", "G(N/16)", "G(N/8)", "G(N/4)", "G(N/2)", "G(N)",
               "B(2)", "B(4)", "BG(2,2)", "BG(2,4)", "BG(2,8)", "BG(2,16)", "BG(2,M/16)", "BG(2,M/8)",
               "BG(2,M/4)", "BG(2,M/2)", "BG(2,M)"]


def test_pool_is_the_papers_and_names_round_trip_through_json():
    assert [b.name for b in PAPER_POOL] == PAPER_NAMES
    text = json.dumps([b.name for b in PAPER_POOL])
    assert [parse_block(n) for n in json.loads(text)] == list(PAPER_POOL)
    assert parse_block(" BG( 2 , M/4 ) ").name == "BG(2,M/4)"
    assert parse_block("G(N/1)").name == "G(N)"


@pytest.mark.parametrize("alias, name", [
    ("Conv", "S"), ("DConvA4", "G(4)"), ("DConvG2", "G(N/2)"), ("DConv", "G(N)"), ("ConvB4", "B(4)"),
    ("A8B2", "BG(2,8)"), ("G16B2", "BG(2,M/16)"), ("DConvB2", "BG(2,M)"),
])
def test_the_authors_class_names_are_read(alias, name):
    assert parse_block(alias).name == name


def test_unknown_block_names_are_refused_with_a_hint():
    with pytest.raises(UnknownNameError, match=r"unknown block name 'G\(N/2'.*did you mean 'G\(N/2\)'"):
        parse_block("G(N/2")
    with pytest.raises(UnknownNameError, match="unknown block name 'X'"):
        parse_block("X")
    with pytest.raises(UnknownNameError):
        parse_block(3)  # type: ignore[arg-type]
    with pytest.raises(ArchError, match="positive"):
        parse_block("G(0)")
    with pytest.raises(ArchError, match="positive"):
        parse_block("B(0)")


def _convs(block: Block) -> list[nn.Conv2d]:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d) and m is not block.shortcut]


@pytest.mark.parametrize("name, cin, cout, want", [
    # (in, out, kernel, groups) of each branch conv, worked out by hand from the paper's definitions
    ("S", 32, 64, [(32, 64, 3, 1), (64, 64, 3, 1)]),
    ("G(4)", 32, 64, [(32, 32, 3, 4), (32, 64, 1, 1), (64, 64, 3, 4), (64, 64, 1, 1)]),
    ("G(N/4)", 32, 64, [(32, 32, 3, 8), (32, 64, 1, 1), (64, 64, 3, 16), (64, 64, 1, 1)]),
    ("G(N)", 16, 16, [(16, 16, 3, 16), (16, 16, 1, 1), (16, 16, 3, 16), (16, 16, 1, 1)]),
    ("G(N/16)", 16, 32, [(16, 16, 3, 1), (16, 32, 1, 1), (32, 32, 3, 2), (32, 32, 1, 1)]),
    ("B(2)", 32, 64, [(32, 32, 1, 1), (32, 32, 3, 1), (32, 64, 1, 1)]),
    ("B(4)", 64, 64, [(64, 16, 1, 1), (16, 16, 3, 1), (16, 64, 1, 1)]),
    ("BG(2,8)", 64, 128, [(64, 64, 1, 1), (64, 64, 3, 8), (64, 128, 1, 1)]),
    ("BG(2,M/4)", 64, 128, [(64, 64, 1, 1), (64, 64, 3, 16), (64, 128, 1, 1)]),
    ("BG(2,M)", 32, 32, [(32, 16, 1, 1), (16, 16, 3, 16), (16, 32, 1, 1)]),
])
def test_block_structure(name, cin, cout, want):
    block = parse_block(name).build(cin, cout, stride=1)
    got = [(c.in_channels, c.out_channels, c.kernel_size[0], c.groups) for c in _convs(block)]
    assert got == want
    assert (block.shortcut is None) == (cin == cout)


def test_stride_sits_on_the_first_3x3_conv():
    for name in ("S", "G(2)", "B(2)", "BG(2,M/2)"):
        block = parse_block(name).build(16, 32, stride=2)
        strided = [c for c in _convs(block) if c.stride != (1, 1)]
        assert len(strided) == 1 and strided[0].kernel_size == (3, 3)
        assert block.shortcut is not None and block.shortcut.stride == (2, 2)
        assert block(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_types_that_do_not_fit_are_refused():
    with pytest.raises(ArchError, match="M = 8"):
        parse_block("BG(2,16)").build(16, 16)  # WRN-x-1's first stage: M = 8 cannot take 16 groups
    with pytest.raises(ArchError, match="8 channels"):
        parse_block("G(16)").build(8, 8)
    with pytest.raises(ArchError, match="divisible"):
        parse_block("B(4)").build(6, 6)
    assert not parse_block("BG(2,M/16)").fits(16, 16)
    assert parse_block("G(N/16)").fits(16, 16)


def _shapes() -> set[tuple[int, int, int]]:
    out = set()
    for net in ("wrn-40-2", "wrn-16-1", "resnet-34"):
        out |= {(s.in_channels, s.out_channels, s.stride) for s in get_net(net).slots}
    return out


def test_analytic_count_equals_the_built_block_for_every_type_and_shape():
    checked = 0
    for cin, cout, stride in sorted(_shapes()):
        for bt in PAPER_POOL:
            if not bt.fits(cin, cout):
                continue
            block = bt.build(cin, cout, stride)
            assert bt.params(cin, cout, stride) == sum(p.numel() for p in block.parameters()), (bt, cin, cout)
            checked += 1
    assert checked > 150


# -- the probe ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", PAPER_NAMES)
@pytest.mark.parametrize("cin, cout, stride", [(32, 32, 1), (32, 64, 2)])
def test_probe_sees_the_last_conv_before_the_residual_add(name, cin, cout, stride):
    torch.manual_seed(0)
    block = parse_block(name).build(cin, cout, stride)
    x = torch.randn(2, cin, 4, 4)
    seen = {}
    block.probe.register_forward_hook(lambda m, i, o: seen.__setitem__("probe", o.detach().clone()))
    block.last_conv.register_forward_hook(lambda m, i, o: seen.__setitem__("last", o.detach().clone()))
    y = block(x)
    torch.testing.assert_close(seen["probe"], seen["last"], rtol=0, atol=0)
    with torch.no_grad():  # the shortcut, computed independently of forward()
        skip = x if cin == cout and stride == 1 else block.shortcut(F.relu(block.bn1(x)))
    torch.testing.assert_close(y, skip + seen["probe"])

    # perturb the branch's last conv: the probe moves; perturb the shortcut: it does not
    handle = block.last_conv.register_forward_hook(lambda m, i, o: o + 1.0)
    block(x)
    torch.testing.assert_close(seen["probe"], seen["last"] + 1.0)
    handle.remove()
    if block.shortcut is not None:
        before = seen["last"]  # the unperturbed branch output
        block.shortcut.register_forward_hook(lambda m, i, o: o + 1.0)
        y2 = block(x)
        torch.testing.assert_close(seen["probe"], before)
        torch.testing.assert_close(y2, y + 1.0)


def test_probe_runs_once_right_after_the_last_conv():
    block = parse_block("G(N/2)").build(16, 32, 2)
    order = []
    for name, m in block.named_modules():
        if name and not list(m.children()):
            m.register_forward_hook(lambda mod, i, o, name=name: order.append(name))
    block(torch.randn(2, 16, 8, 8))
    assert order.count("probe") == 1
    assert order[order.index("probe") - 1] == "conv2.pointwise"
    assert "probe" not in [n for n, _ in block.conv2.named_modules(prefix="conv2")]


# -- Fisher potential by hand ---------------------------------------------------------------
class OneBlockNet(nn.Module):
    """stem conv 3->cin | one BlockSwap block | BN-ReLU | pool | linear -> 5 classes."""

    def __init__(self, name: str, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, cin, 3, padding=1, bias=False)
        self.block = parse_block(name).build(cin, cout, stride)
        self.bn = nn.BatchNorm2d(cout)
        self.fc = nn.Linear(cout, 5)

    def forward(self, x):
        out = self.block(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1))


def _bn(t, bn):  # train-mode batch norm with the module's affine parameters, written out
    mean = t.mean(dim=(0, 2, 3), keepdim=True)
    var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (t - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach().view(1, -1, 1, 1) \
        + bn.bias.detach().view(1, -1, 1, 1)


def _conv(t, conv):
    return F.conv2d(t, conv.weight.detach(), None, conv.stride, conv.padding, 1, conv.groups)


def _unit(t, unit):
    if isinstance(unit, nn.Conv2d):
        return _conv(t, unit)
    if isinstance(unit, GroupedPointwise):
        return _conv(F.relu(_bn(_conv(t, unit.grouped), unit.bn)), unit.pointwise)
    assert isinstance(unit, Bottleneck)
    t = F.relu(_bn(_conv(t, unit.reduce), unit.bn1))
    t = F.relu(_bn(_conv(t, unit.conv), unit.bn2))
    return _conv(t, unit.expand)


def _hand_fisher_potential(net: OneBlockNet, x, y) -> float:
    blk = net.block
    stem = _conv(x, net.stem)
    h = F.relu(_bn(stem, blk.bn1))
    branch = _unit(h, blk.conv1)
    if blk.conv2 is not None:
        branch = _unit(F.relu(_bn(branch, blk.bn2)), blk.conv2)
    branch.retain_grad()
    skip = stem if blk.shortcut is None else _conv(h, blk.shortcut)
    out = skip + branch
    logits = F.relu(_bn(out, net.bn)).mean(dim=(2, 3)) @ net.fc.weight.detach().T + net.fc.bias.detach()
    F.cross_entropy(logits, y).backward()
    g = (branch.detach() * branch.grad).sum(dim=(2, 3))  # (N, C): sum over positions of a * dL/da
    return float((0.5 * g.pow(2).mean(dim=0)).sum())


@pytest.mark.parametrize("name, cin, cout, stride", [
    ("S", 4, 8, 2), ("G(N/2)", 4, 8, 2), ("BG(2,M/2)", 8, 8, 1), ("B(2)", 4, 8, 1),
])
def test_fisher_potential_of_a_one_block_network_equals_a_hand_computation(name, cin, cout, stride):
    torch.manual_seed(1)
    net = OneBlockNet(name, cin, cout, stride).double()
    with torch.no_grad():  # non-trivial BN affine parameters, so a misplaced BN would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    want = _hand_fisher_potential(net, x, y)
    got = score(net, (x.detach(), y), "fisher_potential")
    assert want > 0
    assert abs(got - want) / want < 1e-9
