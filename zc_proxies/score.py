"""``score(model, batch)``: the one call NAS code needs.

Several proxies in one call share work. Proxies that run BatchNorm in the same
mode share one private working copy of the caller's model and one cache
(``ScoringContext.cache``), through which the shared passes of
:mod:`zc_proxies.proxies._shared` are computed once (fisher, grad_norm, snip, plain, grasp,
jacob_cov, epe_nas and naswot from a single forward pass). Between two proxies the
working copy is put back exactly as it was copied: parameter and buffer values
(BatchNorm running statistics included), ``.grad``, ``requires_grad``, train/eval
flags and hooks; if a proxy changed its structure (replaced a submodule, a
parameter or a ``forward``), the next proxy gets a fresh copy. So no proxy's
mutation reaches another proxy's result, and each result equals the result of
scoring that proxy alone.

Proxies whose spec says their score depends only on part of the network
(:attr:`~zc_proxies.proxies.base.ProxySpec.network`: ``"reaching"`` or ``"live"``)
are scored on a working copy without the operations that cannot change their
score, where the model knows which those are (its submodules implementing
:class:`~zc_proxies.proxies.base.DeadOps`, e.g. NAS-Bench-201 cells with ``none``
edges or nodes that do not reach the output). The copy is made from the whole
model, so the operations that stay have exactly its weights, and the score is
the same as on the whole network, only sooner. Proxies are grouped by
BatchNorm mode and by the ops their copy drops: when a model has nothing to
drop, every proxy of a mode shares one copy as before; and proxies of
different scopes that share a forward/backward pass (grad_norm with nasi or
grasp, gradsign with ntk_trace) are scored together on the widest network any
of them needs, which is exact for all and cheaper than two passes.
``skip_dead=False`` scores every proxy on the whole network.

The working copy and the batch are on the batch's device (``Batch(..., device=)``,
else the model's), so a model kept on the CPU can be scored on a GPU. Every
mistake in what is passed in (a model that is no plain ``nn.Module``, a bad
seed, a batch or loss that does not fit the model) raises a
:class:`~zc_proxies.errors.ZCBenchError` subclass that names it.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .batch import Batch, LossFn, as_batch, batchnorm_guard, check_model
from .errors import ConfigError, ModelError, NonFiniteScoreError, UnknownNameError
from .proxies import _shared, get_proxy
from .proxies._shared import TOGETHER
from .proxies.base import NETWORK_SCOPES, WHOLE, Proxy, ScoringContext

#: What a working copy drops: ``(qualified submodule name, op indices)`` per submodule; () drops nothing.
DropPlan = tuple[tuple[str, frozenset[int]], ...]

_OWN_PROXIES = "zc_proxies.proxies."
MAX_SEED = 2**64 - 1
"""Largest scoring seed: torch's generators take seeds in ``0..2**64 - 1``."""


def _named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return (list(model.named_parameters(remove_duplicate=False))
            + [(f"buffer:{n}", b) for n, b in model.named_buffers(remove_duplicate=False)])


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t for _, t in _named_tensors(model)]


def _hook_dicts(module: nn.Module) -> dict[str, dict]:
    return {k: v for k, v in vars(module).items()
            if isinstance(v, dict) and k.startswith(("_forward", "_backward")) and "hook" in k}


def _knows_dead_ops(module: nn.Module) -> bool:
    """Whether ``module``'s class implements :class:`DeadOps` (a class lookup: ``isinstance`` on a
    runtime-checkable protocol costs ~20 us a module, 10 ms on a NAS-Bench-201 network)."""
    kind = type(module)
    return all(callable(getattr(kind, name, None)) for name in ("dead_ops", "drop_ops"))


def dead_ops_plan(model: nn.Module, scope: str) -> DropPlan:
    """The ops of ``model`` a proxy of network ``scope`` can do without, as its submodules say.

    Every submodule whose class implements :class:`~zc_proxies.proxies.base.DeadOps`
    is asked; ``model`` is not changed. Empty for ``"whole"`` and for a model
    without such submodules (or without dead ops).
    """
    if scope == WHOLE:
        return ()
    plan = []
    for name, module in model.named_modules():
        if _knows_dead_ops(module):
            ops = frozenset(int(k) for k in module.dead_ops(scope))
            if ops:
                plan.append((name, ops))
    return tuple(plan)


def drop_dead_ops(model: nn.Module, plan: DropPlan) -> nn.Module:
    """Apply ``plan`` (from :func:`dead_ops_plan` on a model of the same structure) to ``model``, in place."""
    for name, ops in plan:
        module = model.get_submodule(name)
        module.drop_ops(ops)  # type: ignore[operator]
    return model


class _WorkingCopy:
    """A private copy of ``source`` on ``device`` in one BatchNorm mode, put back after each proxy by :meth:`reset`.

    ``drop`` (a :func:`dead_ops_plan`) is applied to every fresh copy. With ``take``, the caller has
    given ``source`` away: it is worked on itself, not copied. For one proxy it is never put back;
    for several (``keep``), its starting tensor values are kept aside (a clone of the tensors, far
    cheaper than a copy of the module tree) and put back between them, which is all the package's
    own proxies need (none changes a working copy's structure).
    """

    def __init__(self, source: nn.Module, bn_mode: str, device: torch.device, drop: DropPlan = (),
                 take: bool = False, keep: bool = False) -> None:
        self.source = source
        self.bn_mode = bn_mode
        self.device = device
        self.drop = drop
        self.take = take
        self.keep = take and keep
        self.model = self._fresh()

    def _fresh(self) -> nn.Module:
        if self.take:
            work = self.source
        else:
            try:
                work = copy.deepcopy(self.source)
            except Exception as exc:  # noqa: BLE001  (whatever stops the copy is in the caller's model)
                raise ModelError(f"the model cannot be copied (copy.deepcopy failed: {exc}); proxies run on a "
                                 "private copy, so the model must be deep-copyable") from exc
        origin = dict(_named_tensors(self.source))
        if self.drop:
            drop_dead_ops(work, self.drop)
        # the source tensor each tensor of the copy is put back to (a dropped op's tensors are gone)
        self._origin = [origin[name] for name, _ in _named_tensors(work)]
        if any(t.device != self.device for t in _tensors(work)):
            work.to(self.device)
        work.train(self.bn_mode == "train")
        for p in work.parameters():
            p.grad = None
        self._modules = list(work.modules())
        self._tensors = _tensors(work)
        self._layout = [(t.shape, t.dtype, t.device) for t in self._tensors]
        self._training = [m.training for m in self._modules]
        self._requires_grad = [p.requires_grad for p in work.parameters()]
        self._hooks = [{k: set(d) for k, d in _hook_dicts(m).items()} for m in self._modules]
        self._full_backward = [getattr(m, "_is_full_backward_hook", None) for m in self._modules]
        self._overrides = ["forward" in vars(m) for m in self._modules]
        if self.keep:  # worked on in place by several proxies: their starting values, kept aside
            self._origin = [t.detach().clone() for t in self._tensors]
        return work

    def _same_structure(self) -> bool:
        work = self.model
        modules = list(work.modules())
        tensors = _tensors(work)
        return (len(modules) == len(self._modules) and all(a is b for a, b in zip(modules, self._modules))
                and len(tensors) == len(self._tensors) and all(a is b for a, b in zip(tensors, self._tensors))
                and [(t.shape, t.dtype, t.device) for t in tensors] == self._layout
                and ["forward" in vars(m) for m in modules] == self._overrides)

    def reset(self) -> None:
        """Undo whatever the last proxy did to the working copy."""
        if self.take and not self.keep:  # given away for one proxy: nothing comes after it
            return
        if not self._same_structure():
            if self.take:  # nothing pristine is left to copy from
                raise ModelError("a proxy changed the structure of a network given away with consume=True, "
                                 "so the next proxy cannot start from the same network; score without consume")
            self.model = self._fresh()
            return
        with torch.no_grad():
            for t, o in zip(self._tensors, self._origin):
                if t.device != o.device or not torch.equal(t, o):
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


def _call(proxy: Proxy, work: nn.Module, batch: Batch, seed: int, cache: dict) -> float | dict[str, float]:
    ctx = ScoringContext(model=work, batch=batch, seed=seed, cache=cache, proxy=proxy.name)
    devices = [batch.device] if batch.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), batchnorm_guard(work, batch):
        torch.manual_seed(seed)
        raw = proxy.fn(ctx)
    if proxy.spec.population:
        return _components(proxy, raw)
    value = float(raw)
    if not math.isfinite(value):
        raise NonFiniteScoreError(
            f"proxy {proxy.name!r} gave {value} for this model and batch (NaN or infinite); "
            "check the model's initialisation and the inputs' scale"
        )
    return value


def _components(proxy: Proxy, raw: object) -> dict[str, float]:
    """A population proxy's ``{component: value}``, checked: exactly its components, all finite."""
    names = [c.name for c in proxy.spec.components]
    if not isinstance(raw, Mapping) or sorted(raw) != sorted(names):
        got = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise TypeError(f"population proxy {proxy.name!r} must return its components {names}, got {got}")
    values = {name: float(raw[name]) for name in names}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteScoreError(f"proxy {proxy.name!r} gave a non-finite component for this model and batch: "
                                  + ", ".join(f"{k} = {v}" for k, v in bad.items()))
    return values


def scoring_seed(seed: object) -> int:
    """``seed`` as an int in ``0..MAX_SEED`` (0 for None), or a :class:`ConfigError` saying why not.

    Torch would silently truncate a float seed and wrap a negative one, so two
    different seeds could give the same score; they are refused instead.
    """
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be a whole number in 0..2**64 - 1, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed {int(seed)} is out of range: use a whole number in 0..2**64 - 1")
    return int(seed)


@dataclass(frozen=True)
class ProxyResult:
    """One proxy's outcome in :func:`score_detailed`.

    ``value`` is NaN when the proxy failed; ``error`` then holds the exception
    (a :class:`~zc_proxies.errors.NonFiniteScoreError` for a NaN or infinite
    score). For a population proxy ``value`` is its ``{component: value}``
    mapping (see :mod:`zc_proxies.proxies.population`). ``seconds`` is the wall
    time of this proxy, including any shared pass it was the first to need.
    """

    name: str
    value: float | dict[str, float]
    seconds: float
    error: BaseException | None = None

    @property
    def status(self) -> str:
        """``"ok"``, ``"nan"`` (non-finite score) or ``"error"``, as the score store records it."""
        if self.error is None:
            return "ok"
        return "nan" if isinstance(self.error, NonFiniteScoreError) else "error"


def _names(proxy: object) -> list[str]:
    if isinstance(proxy, str):
        names = [proxy]
    elif isinstance(proxy, Iterable) and not isinstance(proxy, (bytes, Mapping)):
        names = list(proxy)
    else:
        raise ConfigError(f"proxy must be a proxy name or a list of names, got {type(proxy).__name__}")
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise ConfigError(f"proxy names are strings, got {wrong[0]!r} ({type(wrong[0]).__name__})")
    names = list(dict.fromkeys(names))
    if not names:
        raise UnknownNameError("no proxy named: pass a proxy name or a non-empty list of names")
    return names


#: The passes of :mod:`._shared` that several proxies share, by the artifacts they compute.
_SHARED_PASSES = {"batch": frozenset(_shared.BATCH_ARTIFACTS), "sample": frozenset(_shared.SAMPLE_ARTIFACTS)}
#: Artifacts a forward pass alone gives (no backward pass to share).
_FORWARD_ONLY = frozenset({"relu_kernel"})


def _scopes(proxies: Sequence[Proxy]) -> dict[str, str]:
    """The network scope each proxy is scored with: its spec's, unless it shares a pass with a wider one.

    A proxy is exact on any network from its own scope's up to the whole one.
    When proxies of one BatchNorm mode that differ in scope would share a pass
    of :mod:`._shared` with a backward pass in it, they are all scored on the
    widest of their networks, in one pass instead of two (so with grasp, which
    needs the whole network, grad_norm, snip, jacob_cov... run whole too, as
    cheaply as before; with nasi alone, on the reaching network). A proxy that
    only reads the forward part of a pass (naswot's ReLU codes) widens nothing:
    its own forward pass costs less than scoring the others whole.
    """
    width = {scope: rank for rank, scope in enumerate(NETWORK_SCOPES)}  # 0 = widest
    scopes = {p.name: p.spec.network for p in proxies}
    declared = {p.name: _shared._DECLARED.get(p.name, frozenset()) for p in proxies}
    changed = True
    while changed:  # widen within every (mode, pass) until nothing changes (a proxy may be in two passes)
        changed = False
        for mode in {p.spec.bn_mode for p in proxies}:
            for artifacts in _SHARED_PASSES.values():
                members = [p.name for p in proxies if p.spec.bn_mode == mode
                           and (declared[p.name] & artifacts) - _FORWARD_ONLY]
                if not members:
                    continue
                widest = min((scopes[n] for n in members), key=width.__getitem__)
                for n in members:
                    if scopes[n] != widest:
                        scopes[n], changed = widest, True
    return scopes


def _run_all(model: object, batch: object, names: list[str], loss_fn: LossFn | None, seed: object,
             stop_on_error: bool, skip_dead: bool = True, consume: bool = False) -> dict[str, ProxyResult]:
    """Check every input, then score the proxies: one working copy per BatchNorm mode and dropped ops, passes shared."""
    proxies = [get_proxy(name) for name in names]
    seed = scoring_seed(seed)
    model = check_model(model)
    if not isinstance(skip_dead, bool):
        raise ConfigError(f"skip_dead must be True or False, got {skip_dead!r}")
    needs_labels = any(p.spec.needs_labels for p in proxies)
    checked = as_batch(batch, loss_fn).check(model, needs_labels=needs_labels)
    scopes = _scopes(proxies) if skip_dead else {p.name: WHOLE for p in proxies}
    plans: dict[str, DropPlan] = {}
    groups: dict[tuple[str, DropPlan], list[Proxy]] = {}
    for p in proxies:
        scope = scopes[p.name]
        if scope not in plans:
            plans[scope] = dead_ops_plan(model, scope)
        groups.setdefault((p.spec.bn_mode, plans[scope]), []).append(p)
    results: dict[str, ProxyResult] = {}
    if not isinstance(consume, bool):
        raise ConfigError(f"consume must be True or False, got {consume!r}")
    last = len(groups) - 1
    for g, ((mode, drop), members) in enumerate(groups.items()):
        # a model given away needs no copy for the last group: for one proxy, or for several of the
        # package's own (which put back what they change, and never restructure the network)
        own = all(p.fn.__module__.startswith(_OWN_PROXIES) for p in members)
        take = consume and g == last and (len(members) == 1 or own)
        work = _WorkingCopy(model, mode, checked.device, drop, take=take, keep=len(members) > 1)
        cache: dict = {TOGETHER: tuple(p.name for p in members)}
        for p in members:
            start = time.perf_counter()
            try:
                value, error = _call(p, work.model, checked, seed, cache), None
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
    batch: Batch | tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor,
    proxy: str | Sequence[str] = "fisher",
    *,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
    skip_dead: bool = True,
) -> float | Mapping[str, float]:
    """Score ``model`` on one minibatch with a zero-cost proxy.

    Parameters
    ----------
    model
        Any ``nn.Module`` (not a TorchScript one). It is left exactly as it was:
        weights, buffers, ``.grad``, train/eval mode, hooks and device (proxies
        run on a private copy), also when scoring raises.
    batch
        A :class:`~zc_proxies.batch.Batch` (inputs, targets, loss and the device
        to score on; a subclass for other tasks, such as
        :class:`~zc_proxies.blockswap.detection.DetectionBatch`), or the short
        forms ``(inputs, targets)`` and ``inputs``: targets are integer class
        indices, and may be left out for proxies that need no labels.
    proxy
        A registered proxy name, or a list of names (then a dict is returned).
        Proxies asked for together share their forward/backward passes where
        they can; each value equals the one that proxy gives alone.
    loss_fn
        Loss of ``(outputs, targets)`` for the short forms; cross-entropy by
        default. A :class:`~zc_proxies.batch.Batch` carries its own ``loss``.
    seed
        Seeds whatever randomness a proxy uses: a whole number in
        ``0..2**64 - 1`` (0 when None).
    skip_dead
        Score each proxy whose spec allows it (``network`` ``"reaching"`` or
        ``"live"``) on a copy without the ops that cannot change its score, where
        the model says which (NAS-Bench-201 cells do). The scores are the same
        either way; False scores every proxy on the whole network.

    Returns
    -------
    float or dict
        The score (higher is better unless the proxy's spec says otherwise), or
        ``{name: score}`` when several proxies were asked for. A population
        proxy (AZ-NAS, TE-NAS...) gives its ``{component: value}`` mapping: its
        final score exists only relative to a population
        (:func:`zc_proxies.proxies.population.aggregate`).

    Raises
    ------
    UnknownNameError
        An unregistered proxy name, or an empty list.
    ConfigError
        A seed that is not a whole number in range; a proxy given as neither a
        name nor a list of names; a device that is not available; a
        ``skip_dead`` that is not a bool.
    ModelError
        A model proxies cannot work with: not an ``nn.Module``, TorchScript, on
        the ``meta`` device, lazy, not deep-copyable, or without the layers the
        proxy measures.
    BatchError
        A batch that does not fit the model (shape, dtype, labels, a one-sample
        batch into train-mode BatchNorm), or a loss that is not one number.
    NonFiniteScoreError
        A NaN or infinite score.
    """
    names = _names(proxy)
    results = _run_all(model, batch, names, loss_fn, seed, stop_on_error=True, skip_dead=skip_dead)
    values = {name: r.value for name, r in results.items()}
    return values[names[0]] if isinstance(proxy, str) else values


def score_detailed(
    model: nn.Module,
    batch: Batch | tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor,
    proxy: str | Sequence[str],
    *,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
    skip_dead: bool = True,
    consume: bool = False,
) -> dict[str, ProxyResult]:
    """Like :func:`score` with a list, but one proxy's failure does not stop the others.

    Returns ``{name: ProxyResult}`` with each proxy's value, wall time and error,
    for evaluators that store one row per proxy (status ``ok`` / ``nan`` /
    ``error``). What is wrong for every proxy still raises at once, as in
    :func:`score`: bad names, seed or model, a batch that does not fit the model,
    a model that cannot be copied.

    ``consume=True`` gives ``model`` away: the caller will not use it again
    (an evaluator that built it for this call), so the last proxy to run may
    work on it directly instead of on a copy. Every score is the same; only
    the copy's time is saved, and ``model`` is left in any state.
    """
    return _run_all(model, batch, _names(proxy), loss_fn, seed, stop_on_error=False, skip_dead=skip_dead,
                    consume=consume)
