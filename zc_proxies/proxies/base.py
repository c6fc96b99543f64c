"""What a proxy is: a scoring function plus the spec that says how to run it.

A proxy function takes a :class:`ScoringContext` and returns one float. The
context holds a private working copy of the caller's model (already in the
BatchNorm mode the spec asks for), the checked minibatch, the loss and a seeded
generator, so a proxy may hook, re-mode or re-grad that copy freely; it must not
change the copy's weights in place (proxies that need other weights, such as
synflow's absolute values, make their own copy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .._registry import Registry
from ..errors import DuplicateNameError

BNMode = Literal["train", "eval"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ProxySpec:
    """How a proxy must be run, and how its number reads.

    Attributes
    ----------
    name
        Registry name, e.g. ``"fisher"``.
    needs_labels
        Whether the targets of the minibatch are used (through the loss).
    needs_grad
        Whether the proxy back-propagates.
    bn_mode
        ``"train"`` or ``"eval"``: the mode BatchNorm layers are put in.
    higher_is_better
        The sign convention: True when a larger score predicts a better network.
    version
        Changes whenever the computed number would change; stored with every score.
    description
        One line for listings.
    """

    name: str
    needs_labels: bool
    needs_grad: bool
    bn_mode: BNMode = "train"
    higher_is_better: bool = True
    version: str = "1"
    description: str = ""

    def __post_init__(self) -> None:
        if self.bn_mode not in ("train", "eval"):
            raise ValueError(f"bn_mode must be 'train' or 'eval', got {self.bn_mode!r}")


@dataclass(frozen=True)
class Proxy:
    """A registered proxy: its spec and its function."""

    spec: ProxySpec
    fn: Callable[[ScoringContext], float]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class ScoringContext:
    """Everything one proxy evaluation sees.

    Attributes
    ----------
    model
        A private working copy of the caller's model, in the spec's BN mode.
    inputs, targets
        The checked minibatch, on the model's device (targets may be None for
        label-free proxies).
    loss_fn
        Loss of ``(outputs, targets)``; cross-entropy with label checks by default.
    seed
        Seed for any randomness the proxy needs (random inputs, say).
    cache
        Scratch space shared by proxies scored together on the same batch.
    """

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor | None
    loss_fn: LossFn
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)

    def generator(self) -> torch.Generator:
        """A fresh generator on the inputs' device, seeded with :attr:`seed`."""
        gen = torch.Generator(device=self.inputs.device)
        gen.manual_seed(self.seed)
        return gen


PROXIES: Registry[Proxy] = Registry("proxy", entry_point_group="zc_proxies.proxies")


def register_proxy(
    name: str,
    *,
    needs_labels: bool,
    needs_grad: bool,
    bn_mode: BNMode = "train",
    higher_is_better: bool = True,
    version: str = "1",
    description: str | None = None,
) -> Callable[[Callable[[ScoringContext], float]], Callable[[ScoringContext], float]]:
    """Decorator that registers a proxy function under ``name``.

    The function is returned unchanged (with the :class:`Proxy` attached as
    ``__zc_proxy__``), so it stays directly callable. A taken name raises
    :class:`~zc_proxies.errors.DuplicateNameError`.
    """

    def decorate(fn: Callable[[ScoringContext], float]) -> Callable[[ScoringContext], float]:
        doc = (fn.__doc__ or "").strip().splitlines()
        spec = ProxySpec(
            name=name,
            needs_labels=needs_labels,
            needs_grad=needs_grad,
            bn_mode=bn_mode,
            higher_is_better=higher_is_better,
            version=version,
            description=description if description is not None else (doc[0] if doc else ""),
        )
        proxy = Proxy(spec=spec, fn=fn)
        PROXIES.add(name, proxy)
        fn.__zc_proxy__ = proxy  # type: ignore[attr-defined]
        return fn

    return decorate


def _adopt_entry_point(name: str, obj: object) -> None:
    """Register what an entry point loaded, if importing it did not already."""
    proxy = getattr(obj, "__zc_proxy__", obj)
    if not isinstance(proxy, Proxy):
        raise TypeError(
            f"entry point {name!r} in group 'zc_proxies.proxies' loaded {obj!r}, which is not "
            "a function decorated with zc_proxies.register_proxy"
        )
    if proxy.name != name:
        raise DuplicateNameError(
            f"entry point {name!r} loaded a proxy registered as {proxy.name!r}; "
            "the entry point name must equal the proxy name"
        )
    PROXIES.add(name, proxy)


def get_proxy(name: str) -> Proxy:
    """The proxy registered as ``name`` (third-party entry points are loaded on demand)."""
    return PROXIES.get(name, on_load=_adopt_entry_point)


def list_proxies(pattern: str = "*") -> list[str]:
    """Names of the proxies matching a shell-style wildcard, e.g. ``"fish*"``."""
    return PROXIES.names(pattern)
