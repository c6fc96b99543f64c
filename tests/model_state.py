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


def with_caller_state(net: nn.Module) -> nn.Module:
    """``net`` in float32 eval mode, with a stale ``.grad``, a frozen layer and a hook: what a caller may leave.

    The net needs ``conv2``, ``fc`` and ``bn2`` modules (the tests' tiny networks have them).
    """
    net = net.float().eval()
    net.conv2.weight.grad = torch.ones_like(net.conv2.weight)
    net.fc.weight.requires_grad_(False)
    net.bn2.register_forward_hook(lambda *a: None)
    return net


def score_untouched_twice(net: nn.Module, batch, name: str, seed: int = 5) -> float:
    """Score ``name`` twice with ``seed``: the caller's model untouched, a finite float, the same both times."""
    import math

    from zc_proxies import score

    before = snapshot(net)
    first = score(net, batch, name, seed=seed)
    assert_same(before, snapshot(net))
    assert isinstance(first, float) and math.isfinite(first)
    assert score(net, batch, name, seed=seed) == first
    return first
