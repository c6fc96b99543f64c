"""``score(model, batch)``: the one call NAS code needs.

Several proxies in one call share work. Proxies that run BatchNorm in the same
mode share one private working copy of the caller's model and one cache
(``ScoringContext.cache``), through which the shared passes of
:mod:`zc_proxies.proxies._shared` are computed once (grad_norm, snip, plain, grasp,
jacob_cov, epe_nas and naswot from a single forward pass). Between two proxies the
working copy is put back exactly as it was copied: parameter and buffer values
(BatchNorm running statistics included), ``.grad``, ``requires_grad``, train/eval
flags and hooks; if a proxy changed its structure (replaced a submodule, a
parameter or a ``forward``), the next proxy gets a fresh copy. So no proxy's
mutation reaches another proxy's result, and each result equals the result of
scoring that proxy alone.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .batch import check_batch, checked_cross_entropy
from .errors import NonFiniteScoreError, UnknownNameError
from .proxies import get_proxy
from .proxies._shared import TOGETHER
from .proxies.base import LossFn, Proxy, ScoringContext


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return ([p for _, p in model.named_parameters(remove_duplicate=False)]
            + [b for _, b in model.named_buffers(remove_duplicate=False)])


def _hook_dicts(module: nn.Module) -> dict[str, dict]:
    return {k: v for k, v in vars(module).items()
            if isinstance(v, dict) and k.startswith(("_forward", "_backward")) and "hook" in k}


class _WorkingCopy:
    """A private copy of ``source`` in one BatchNorm mode, put back after each proxy by :meth:`reset`."""

    def __init__(self, source: nn.Module, bn_mode: str) -> None:
        self.source = source
        self.bn_mode = bn_mode
        self.model = self._fresh()

    def _fresh(self) -> nn.Module:
        work = copy.deepcopy(self.source)
        work.train(self.bn_mode == "train")
        for p in work.parameters():
            p.grad = None
        self._modules = list(work.modules())
        self._tensors = _tensors(work)
        self._origin = _tensors(self.source)
        self._training = [m.training for m in self._modules]
        self._requires_grad = [p.requires_grad for p in work.parameters()]
        self._hooks = [{k: set(d) for k, d in _hook_dicts(m).items()} for m in self._modules]
        self._full_backward = [getattr(m, "_is_full_backward_hook", None) for m in self._modules]
        self._overrides = ["forward" in vars(m) for m in self._modules]
        return work

    def _same_structure(self) -> bool:
        work = self.model
        modules = list(work.modules())
        tensors = _tensors(work)
        return (len(modules) == len(self._modules) and all(a is b for a, b in zip(modules, self._modules))
                and len(tensors) == len(self._tensors) and all(a is b for a, b in zip(tensors, self._tensors))
                and all(t.shape == o.shape and t.dtype == o.dtype and t.device == o.device
                        for t, o in zip(tensors, self._origin))
                and ["forward" in vars(m) for m in modules] == self._overrides)

    def reset(self) -> None:
        """Undo whatever the last proxy did to the working copy."""
        if not self._same_structure():
            self.model = self._fresh()
            return
        with torch.no_grad():
            for t, o in zip(self._tensors, self._origin):
                if not torch.equal(t, o):
                    t.copy_(o)
        for p, flag in zip(self.model.parameters(), self._requires_grad):
            p.grad = None
            p.requires_grad_(flag)
        for m, flag, hooks, full in zip(self._modules, self._training, self._hooks, self._full_backward):
            m.training = flag
            for name, d in _hook_dicts(m).items():
                for key in [k for k in d if k not in hooks.get(name, ())]:
                    del d[key]
            if full is not None:
                m._is_full_backward_hook = full


def _call(proxy: Proxy, work: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None,
          loss_fn: LossFn | None, seed: int, cache: dict) -> float:
    ctx = ScoringContext(model=work, inputs=inputs, targets=targets,
                         loss_fn=loss_fn or checked_cross_entropy, seed=seed, cache=cache)
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
    work = _WorkingCopy(model, proxy.spec.bn_mode)
    return _call(proxy, work.model, inputs, targets, loss_fn, seed, cache if cache is not None else {})


@dataclass(frozen=True)
class ProxyResult:
    """One proxy's outcome in :func:`score_detailed`.

    ``value`` is NaN when the proxy failed; ``error`` then holds the exception
    (a :class:`~zc_proxies.errors.NonFiniteScoreError` for a NaN or infinite
    score). ``seconds`` is the wall time of this proxy, including any shared pass
    it was the first to need.
    """

    name: str
    value: float
    seconds: float
    error: BaseException | None = None

    @property
    def status(self) -> str:
        """``"ok"``, ``"nan"`` (non-finite score) or ``"error"``, as the score store records it."""
        if self.error is None:
            return "ok"
        return "nan" if isinstance(self.error, NonFiniteScoreError) else "error"


def _names(proxy: str | Sequence[str]) -> list[str]:
    names = [proxy] if isinstance(proxy, str) else list(dict.fromkeys(proxy))
    if not names:
        raise UnknownNameError("no proxy named: pass a proxy name or a non-empty list of names")
    return names


def _run_all(model: nn.Module, batch: Any, names: list[str], loss_fn: LossFn | None, seed: int | None,
             stop_on_error: bool) -> dict[str, ProxyResult]:
    proxies = [get_proxy(name) for name in names]
    needs_labels = any(p.spec.needs_labels for p in proxies)
    inputs, targets = check_batch(model, batch, needs_labels=needs_labels, class_targets=loss_fn is None)
    groups: dict[str, list[Proxy]] = {}
    for p in proxies:
        groups.setdefault(p.spec.bn_mode, []).append(p)
    results: dict[str, ProxyResult] = {}
    for mode, members in groups.items():
        work = _WorkingCopy(model, mode)
        cache: dict = {TOGETHER: tuple(p.name for p in members)}
        for p in members:
            start = time.perf_counter()
            try:
                value, error = _call(p, work.model, inputs, targets, loss_fn, seed or 0, cache), None
            except Exception as exc:  # noqa: BLE001  (reported per proxy, or re-raised below)
                if stop_on_error:
                    raise
                value, error = float("nan"), exc
            finally:
                work.reset()
            results[p.name] = ProxyResult(p.name, value, time.perf_counter() - start, error)
    return {name: results[name] for name in names}


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
        Proxies asked for together share their forward/backward passes where
        they can; each value equals the one that proxy gives alone.
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
    names = _names(proxy)
    results = _run_all(model, batch, names, loss_fn, seed, stop_on_error=True)
    values = {name: r.value for name, r in results.items()}
    return values[names[0]] if isinstance(proxy, str) else values


def score_detailed(
    model: nn.Module,
    batch: Any,
    proxy: str | Sequence[str],
    *,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
) -> dict[str, ProxyResult]:
    """Like :func:`score` with a list, but one proxy's failure does not stop the others.

    Returns ``{name: ProxyResult}`` with each proxy's value, wall time and error,
    for evaluators that store one row per proxy (status ``ok`` / ``nan`` /
    ``error``). A batch that does not fit the model still raises at once.
    """
    return _run_all(model, batch, _names(proxy), loss_fn, seed, stop_on_error=False)
