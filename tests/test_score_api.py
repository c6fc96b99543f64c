"""score(): determinism, the caller's model left untouched, and named errors for bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from model_state import assert_same, snapshot
from torch import nn

import zc_proxies
from zc_proxies import Batch, BlockProbe, score
from zc_proxies.errors import BatchError, ModelError, NonFiniteScoreError, UnknownNameError


def small_net(classes: int = 10) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), BlockProbe(), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )


def batch(n: int = 6, classes: int = 10, channels: int = 3):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, channels, 12, 12, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("proxy", ["fisher", "fisher_potential"])
def test_same_seed_same_score(proxy):
    net, b = small_net(), batch()
    assert score(net, b, proxy, seed=3) == score(net, b, proxy, seed=3)


@pytest.mark.parametrize("proxy", ["fisher", "fisher_potential"])
def test_model_unchanged_after_success(proxy):
    net = small_net().eval()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    net[3].register_forward_hook(lambda *a: None)
    before = snapshot(net)
    value = score(net, batch(), proxy)
    assert math.isfinite(value) and value > 0
    assert_same(before, snapshot(net))


def test_model_unchanged_after_error():
    net = small_net(classes=4).train()
    before = snapshot(net)
    with pytest.raises(BatchError, match="only 4 outputs"):
        score(net, batch(classes=10), "fisher")  # targets beyond the 4 classes: fails mid-proxy
    assert_same(before, snapshot(net))


def test_several_proxies_return_a_mapping():
    net, b = small_net(), batch()
    both = score(net, b, ["fisher", "fisher_potential"])
    assert set(both) == {"fisher", "fisher_potential"}
    assert both["fisher"] == score(net, b, "fisher")


def test_unknown_proxy_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean 'fisher'"):
        score(small_net(), batch(), "fishr")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: (torch.randn(6, 3, 12), torch.zeros(6, dtype=torch.long)), "rank 4"),
        (lambda: batch(channels=1), "1 channels"),
        (lambda: (batch()[0], torch.zeros(5, dtype=torch.long)), r"shape \(6,\)"),
        (lambda: (batch()[0], torch.zeros(6)), "integer class indices"),
        (lambda: (batch()[0], torch.full((6,), -1)), ">= 0"),
        (lambda: (batch()[0], torch.full((6,), 10)), "only 10 outputs"),
        (lambda: (torch.full((6, 3, 12, 12), float("nan")), torch.zeros(6, dtype=torch.long)), "NaN"),
        (lambda: (torch.zeros(0, 3, 12, 12), torch.zeros(0, dtype=torch.long)), "no samples"),
        (lambda: torch.randn(6, 3, 12, 12), "needs targets"),
        (lambda: [1, 2, 3], "pair"),
    ],
)
def test_bad_batches_are_named(make, message):
    with pytest.raises(BatchError, match=message):
        score(small_net(), make(), "fisher")


def test_nothing_to_probe():
    net = nn.Sequential(nn.Flatten(), nn.Identity())
    x, y = torch.randn(4, 10), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ModelError, match="no.*Conv2d or nn.Linear|found none"):
        score(net, (x, y), "fisher")


def test_undeclared_blocks_are_refused_not_guessed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ModelError, match="BlockProbe"):
        score(net, batch(), "fisher_potential")


def test_nan_score_is_an_error():
    net = small_net()
    with torch.no_grad():
        net[-1].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteScoreError, match="fisher"):
        score(net, batch(), "fisher")


def test_public_api_is_small():
    assert {"score", "list_proxies", "get_proxy", "register_proxy", "list_spaces", "get_space"} <= set(
        zc_proxies.__all__)


# -- the Batch form ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("proxy", ["fisher", "fisher_potential", "snip", "jacob_cov", "zen"])
def test_batch_equals_the_pair(proxy):
    net, (x, y) = small_net(), batch()
    assert score(net, Batch(x, y), proxy, seed=2) == score(net, (x, y), proxy, seed=2)
    assert score(net, Batch(x, y, device="cpu"), proxy, seed=2) == score(net, (x, y), proxy, seed=2)


def test_batch_carries_a_custom_loss():
    net, (x, y) = small_net(), batch()

    def soft(outputs, targets):  # soft-label cross-entropy: targets are (N, K) probabilities
        return -(targets * outputs.log_softmax(1)).sum(1).mean()

    probs = torch.nn.functional.one_hot(y, 10).double() * 0.9 + 0.01
    assert score(net, Batch(x, probs, loss=soft), "fisher") == score(net, (x, probs), "fisher", loss_fn=soft)


class KeywordBatch(Batch):
    """A batch for models called as ``model(image=...)``: only how the model is called differs."""

    def forward(self, model):
        return model(image=self.inputs)


class KeywordNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = small_net()

    def forward(self, *, image):
        return self.net(image)


@pytest.mark.parametrize("proxy", ["fisher", "fisher_potential"])
def test_a_batch_kind_of_its_own_scores_through_forward_loss(proxy):
    model, (x, y) = KeywordNet(), batch()
    assert score(model, KeywordBatch(x, y), proxy) == score(model.net, (x, y), proxy)


def test_the_default_loss_checks_the_logits():
    with pytest.raises(BatchError, match="logits of shape"):
        Batch(*batch()).loss_of(torch.zeros(6))


def _scale_weights(ctx) -> float:
    """A careless proxy: changes the shared working copy's weights in place."""
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.mul_(-3.0)
    return 1.0


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("proxy", ["fisher", "fisher_potential", "snip", "zen"])
def test_scoring_on_the_gpu_leaves_the_model_on_the_cpu(proxy):
    net, (x, y) = small_net().double(), batch()
    before = snapshot(net)
    on_gpu = score(net, Batch(x, y, device="cuda"), proxy, seed=4)
    assert_same(before, snapshot(net))
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    if proxy != "zen":  # zen draws its random inputs from a generator on the scoring device
        assert on_gpu == pytest.approx(score(net, (x, y), proxy, seed=4), rel=1e-9)
    # and a model that lives on the GPU is scored on the CPU, bit for bit as a CPU model
    gpu_net = copy.deepcopy(net).cuda()
    before = snapshot(gpu_net)
    assert score(gpu_net, Batch(x, y, device="cpu"), proxy, seed=4) == score(net, (x, y), proxy, seed=4)
    assert_same(before, snapshot(gpu_net))
    assert {p.device.type for p in gpu_net.parameters()} == {"cuda"}


@needs_cuda
def test_the_gpu_working_copy_is_put_back_between_proxies():
    from zc_proxies.proxies import PROXIES, register_proxy

    register_proxy("test_scale_weights", needs_labels=False, needs_grad=False, bn_mode="train")(_scale_weights)
    try:
        net, (x, y) = small_net().double(), batch()
        on_gpu = Batch(x, y, device="cuda")
        others = ["fisher", "snip", "jacob_cov", "naswot"]
        alone = {n: score(net, on_gpu, n, seed=1) for n in others}
        mixed = score(net, on_gpu, ["test_scale_weights", *others], seed=1)
        for n in others:
            assert mixed[n] == pytest.approx(alone[n], rel=1e-9), n
    finally:
        PROXIES.remove("test_scale_weights")


@pytest.mark.parametrize("names", [["fisher"], ["zen"], ["fisher", "grad_norm", "naswot"], ["fisher", "zen", "snip"]])
def test_a_model_given_away_scores_the_same(names):
    from zc_proxies.score import score_detailed

    torch.manual_seed(0)
    net = small_net()
    data = batch()
    kept = score_detailed(net, data, names, seed=3)
    given = score_detailed(copy.deepcopy(net), data, names, seed=3, consume=True)
    assert all(r.error is None for r in kept.values())
    assert {n: r.value for n, r in kept.items()} == {n: r.value for n, r in given.items()}
    with pytest.raises(zc_proxies.errors.ConfigError, match="consume must be True or False"):
        score_detailed(net, data, names, consume="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_batch_scored_on_gpu_equals_batch_already_there():
    """A host minibatch goes to the GPU through pinned memory, asynchronously: same scores as one moved first."""
    names = ["fisher", "grad_norm", "snip", "synflow"]
    x, y = batch()
    from_host = score(small_net().cuda(), (x, y), names)
    already = score(small_net().cuda(), (x.cuda(), y.cuda()), names)
    assert from_host == already
