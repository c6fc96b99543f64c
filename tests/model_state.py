"""Snapshot of everything a proxy must leave untouched on the caller's model (shared by the tests)."""

from __future__ import annotations

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for m in model.modules()],
        "dtype": next(model.parameters()).dtype,
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    for k, g in before["grads"].items():
        assert (g is None) == (after["grads"][k] is None), k
        if g is not None:
            assert torch.equal(g, after["grads"][k]), k
    for key in ("modes", "requires_grad", "hooks", "dtype"):
        assert before[key] == after[key], key


def with_caller_state(net: nn.Module, *, train: bool = False) -> nn.Module:
    """``net`` in float32 eval (or train) mode, with a stale ``.grad``, a frozen layer and a hook: what a caller may leave.

    The stale gradient goes on the last Conv2d, the frozen layer is the last Linear, the hook sits on
    the first normalisation layer (or the first module when there is none).
    """
    net = net.float().train(train)
    conv = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    conv.weight.grad = torch.ones_like(conv.weight)
    [m for m in net.modules() if isinstance(m, nn.Linear)][-1].weight.requires_grad_(False)
    norms = [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    (norms[0] if norms else next(iter(net.children()))).register_forward_hook(lambda *a: None)
    return net


def score_untouched_twice(net: nn.Module, batch, name: str, seed: int = 5):
    """Score ``name`` twice with ``seed``: the caller's model untouched, finite, the same both times.

    Returns the float score, or the dict of components of a population proxy.
    """
    import math

    from zc_proxies import score

    before = snapshot(net)
    first = score(net, batch, name, seed=seed)
    assert_same(before, snapshot(net))
    values = list(first.values()) if isinstance(first, dict) else [first]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert score(net, batch, name, seed=seed) == first
    return first
