"""score() with bad input: every mistake is a ZCBenchError subclass that names it, and the model is left as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from model_state import assert_same, snapshot
from test_score_api import small_net
from torch import nn

from zc_proxies import Batch, score
from zc_proxies.errors import BatchError, ConfigError, ModelError, UnknownNameError, ZCBenchError
from zc_proxies.score import score_detailed


def mlp_with_batchnorm() -> nn.Module:
    """BatchNorm1d on (N, features): one sample leaves it one value per channel."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def batch(n: int = 6, classes: int = 10):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, classes, (n,), generator=g)


def scripted(kind: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; users still have such models
        if kind == "script":
            return torch.jit.script(small_net())
        return torch.jit.trace(small_net().eval(), batch()[0])


def raises_and_keeps(model: nn.Module, error: type[ZCBenchError], match: str, *args, **kwargs) -> None:
    """score(model, ...) raises ``error`` matching ``match``, and ``model`` is as before."""
    before = snapshot(model)
    with pytest.raises(error, match=match):
        score(model, *args, **kwargs)
    assert_same(before, snapshot(model))


# -- BatchNorm and one-sample batches -------------------------------------------------------------------
@pytest.mark.parametrize("proxy", ["fisher", "snip", "jacob_cov"])
def test_one_sample_into_train_mode_batchnorm(proxy):
    raises_and_keeps(mlp_with_batchnorm().eval(), BatchError, "train-mode BatchNorm needs at least 2 samples per batch",
                     batch(n=1), proxy)


def test_one_sample_error_names_the_layer():
    with pytest.raises(BatchError, match=r"'2' \(BatchNorm1d\).*input shape \(1, 16\)"):
        score(mlp_with_batchnorm(), batch(n=1), "fisher")


def test_one_sample_is_fine_where_batchnorm_is_not_in_train_mode_or_sees_positions():
    # eval-mode proxies use the running statistics
    assert score(mlp_with_batchnorm(), batch(n=1), "params") > 0
    # BatchNorm2d over one sample still has H x W values per channel; torch normalises over them
    assert score(small_net(), batch(n=1), "fisher") > 0


def test_one_sample_in_score_detailed_fails_only_the_train_mode_proxies():
    out = score_detailed(mlp_with_batchnorm(), batch(n=1), ["params", "fisher"])
    assert out["params"].status == "ok"
    assert out["fisher"].status == "error" and isinstance(out["fisher"].error, BatchError)


# -- models proxies cannot work with ---------------------------------------------------------------------
def test_meta_model():
    net = small_net().to("meta")
    with pytest.raises(ModelError, match="meta device and holds no data"):
        score(net, batch(), "fisher")
    assert all(p.is_meta for p in net.parameters())  # (torch cannot compare meta tensors' values)


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_model(kind):
    raises_and_keeps(scripted(kind), ModelError, "scripted models can't be probed or copied.*pass the original nn.Module",
                     batch(), "fisher")


def test_torchscript_submodule():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = scripted("script")

        def forward(self, x):
            return self.inner(x)

    # the scripted convs are not nn.Conv2d: probing would silently miss them
    raises_and_keeps(Wrapper(), ModelError, "submodule 'inner' is a TorchScript module", batch(), "fisher")


@pytest.mark.parametrize("model, kind", [(lambda x: x, "function"), ("resnet", "str"), (None, "NoneType")])
def test_not_a_module(model, kind):
    with pytest.raises(ModelError, match=f"must be a torch.nn.Module, got {kind}"):
        score(model, batch(), "fisher")


def test_scripted_function():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = torch.jit.trace(lambda x: x * 2, torch.ones(2))
    with pytest.raises(ModelError, match="TorchScript ScriptFunction"):
        score(fn, batch(), "fisher")


def test_lazy_model():
    net = nn.Sequential(nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ModelError, match="uninitialised lazy parameter"):
        score(net, batch(), "fisher")


def test_model_that_cannot_be_copied():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_net()
            self.cached = torch.ones(3, requires_grad=True) * 2  # a non-leaf tensor: not deep-copyable

        def forward(self, x):
            return self.net(x)

    raises_and_keeps(Holder(), ModelError, "cannot be copied", batch(), "fisher")


# -- seeds -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, match", [
    (2**64, "out of range"), (-1, "out of range"), (1.5, "whole number"), (3.0, "whole number"),
    ("3", "whole number"), (True, "whole number"),
])
def test_bad_seed(seed, match):
    raises_and_keeps(small_net(), ConfigError, match, batch(), "fisher", seed=seed)


def test_seed_range_ends_and_numpy_integers_are_accepted():
    net, b = small_net(), batch()
    assert score(net, b, "zen", seed=np.int64(3)) == score(net, b, "zen", seed=3)
    assert np.isfinite(score(net, b, "zen", seed=2**64 - 1))
    assert score(net, b, "zen", seed=None) == score(net, b, "zen", seed=0)


# -- losses ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("proxy", ["fisher", "snip"])
@pytest.mark.parametrize("loss, match", [
    (lambda o, t: nn.functional.cross_entropy(o, t, reduction="none"), r"scalar tensor \(one number\).*shape \(6,\)"),
    (lambda o, t: 1.0, "scalar tensor, got float"),
    (lambda o, t: None, "scalar tensor, got NoneType"),
    (lambda o, t: t.sum(), "floating-point scalar tensor, got dtype torch.int64"),
])
def test_loss_that_is_not_one_number(proxy, loss, match):
    raises_and_keeps(small_net(), BatchError, match, batch(), proxy, loss_fn=loss)


def test_one_element_loss_counts_as_a_scalar():
    net, b = small_net(), batch()
    vector = score(net, b, "fisher", loss_fn=lambda o, t: nn.functional.cross_entropy(o, t).reshape(1))
    assert vector == score(net, b, "fisher")


def test_loss_that_is_not_callable():
    with pytest.raises(BatchError, match="loss must be callable"):
        score(small_net(), batch(), "fisher", loss_fn=3)


def test_loss_given_twice():
    with pytest.raises(BatchError, match="carries its own loss"):
        score(small_net(), Batch(*batch()), "fisher", loss_fn=nn.functional.cross_entropy)


# -- proxies and batches -----------------------------------------------------------------------------------
@pytest.mark.parametrize("proxy, error, match", [
    ([], UnknownNameError, "no proxy named"),
    ((), UnknownNameError, "no proxy named"),
    (None, ConfigError, "a proxy name or a list of names, got NoneType"),
    (3, ConfigError, "got int"),
    (b"fisher", ConfigError, "got bytes"),
    (["fisher", 3], ConfigError, "proxy names are strings, got 3"),
    ("fishr", UnknownNameError, "did you mean 'fisher'"),
])
def test_bad_proxy_argument(proxy, error, match):
    raises_and_keeps(small_net(), error, match, batch(), proxy)


@pytest.mark.parametrize("make, match", [
    (lambda: (batch()[0],), "pair"),
    (lambda: {"inputs": batch()[0]}, "got dict"),
    (lambda: (batch()[0].numpy(), batch()[1]), "floating-point tensor, got ndarray"),
    (lambda: (batch()[0], batch()[1].tolist()), "tensor of class indices, got list"),
    (lambda: Batch([batch()[0]], batch()[1]), "floating-point tensor, got list"),
])
def test_bad_batches(make, match):
    raises_and_keeps(small_net(), BatchError, match, make(), "fisher")


@pytest.mark.parametrize("device, match", [
    ("gpu0", "not a torch device"),
    ("meta", "not 'meta'"),
    pytest.param("cuda", "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_bad_device(device, match):
    with pytest.raises(ConfigError, match=match):
        Batch(*batch(), device=device)


# -- score_detailed: what concerns every proxy raises at once -----------------------------------------------
@pytest.mark.parametrize("model, kwargs, error", [
    (lambda: "resnet", {}, ModelError),
    (lambda: small_net().to("meta"), {}, ModelError),
    (small_net, {"seed": -1}, ConfigError),
    (small_net, {"loss_fn": 3}, BatchError),
])
def test_score_detailed_raises_at_once_for_bad_input(model, kwargs, error):
    with pytest.raises(error):
        score_detailed(model(), batch(), ["params", "fisher"], **kwargs)


def test_score_detailed_records_a_bad_loss_per_proxy():
    out = score_detailed(small_net(), batch(), ["params", "fisher"], loss_fn=lambda o, t: o.sum(1))
    assert out["params"].status == "ok"
    assert out["fisher"].status == "error" and "shape (6,)" in str(out["fisher"].error)


def test_the_model_is_unchanged_after_every_error_mid_proxy():
    net = small_net().eval()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    net[3].register_forward_hook(lambda *a: None)
    before = snapshot(net)
    for proxy in ["fisher", "fisher_potential", "snip", "grasp", "grad_norm", "plain"]:
        with pytest.raises(BatchError, match="shape"):
            score(net, batch(), proxy, loss_fn=lambda o, t: o.sum(1))
        assert_same(before, snapshot(net))
