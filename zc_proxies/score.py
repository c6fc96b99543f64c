"""``score(model, batch)``: the one call NAS code needs."""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .batch import check_batch, checked_cross_entropy
from .errors import NonFiniteScoreError
from .proxies import get_proxy
from .proxies.base import LossFn, Proxy, ScoringContext


def _working_copy(model: nn.Module, proxy: Proxy) -> nn.Module:
    work = copy.deepcopy(model)
    work.train(proxy.spec.bn_mode == "train")
    for p in work.parameters():
        p.grad = None
    return work


def run_proxy(
    proxy: Proxy,
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    loss_fn: LossFn | None = None,
    seed: int = 0,
    cache: dict | None = None,
) -> float:
    """Score an already-checked batch with one proxy, on a private copy of ``model``."""
    ctx = ScoringContext(
        model=_working_copy(model, proxy),
        inputs=inputs,
        targets=targets,
        loss_fn=loss_fn or checked_cross_entropy,
        seed=seed,
        cache=cache if cache is not None else {},
    )
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        value = float(proxy.fn(ctx))
    if not math.isfinite(value):
        raise NonFiniteScoreError(
            f"proxy {proxy.name!r} gave {value} for this model and batch (NaN or infinite); "
            "check the model's initialisation and the inputs' scale"
        )
    return value


def score(
    model: nn.Module,
    batch: Any,
    proxy: str | Sequence[str] = "fisher",
    *,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
) -> float | Mapping[str, float]:
    """Score ``model`` on one minibatch with a zero-cost proxy.

    Parameters
    ----------
    model
        Any ``nn.Module``. It is left exactly as it was: weights, buffers,
        ``.grad``, train/eval mode and hooks (proxies run on a private copy).
    batch
        ``(inputs, targets)``; targets are integer class indices (they may be
        None for proxies that need no labels).
    proxy
        A registered proxy name, or a list of names (then a dict is returned).
    loss_fn
        Loss of ``(outputs, targets)``; cross-entropy by default.
    seed
        Seeds whatever randomness a proxy uses (0 when None).

    Returns
    -------
    float or dict
        The score (higher is better unless the proxy's spec says otherwise), or
        ``{name: score}`` when several proxies were asked for.
    """
    names = [proxy] if isinstance(proxy, str) else list(proxy)
    proxies = [get_proxy(name) for name in names]
    needs_labels = any(p.spec.needs_labels for p in proxies)
    inputs, targets = check_batch(model, batch, needs_labels=needs_labels, class_targets=loss_fn is None)
    cache: dict = {}
    results = {
        p.name: run_proxy(p, model, inputs, targets, loss_fn=loss_fn, seed=seed or 0, cache=cache)
        for p in proxies
    }
    return results[names[0]] if isinstance(proxy, str) else results
