"""What a proxy is: a scoring function plus the spec that says how to run it.

A proxy function takes a :class:`ScoringContext` and returns one float. The
context holds a private working copy of the caller's model (already in the
BatchNorm mode the spec asks for), the checked :class:`~zc_proxies.batch.Batch`
with its loss, and a seed, so a proxy may hook, re-mode or re-grad that copy
freely; it must not change the copy's weights in place (proxies that need other
weights, such as synflow's absolute values, make their own copy).

A proxy that needs only the loss calls :meth:`ScoringContext.forward_loss` and
works for every kind of batch (a detector's images and target dicts too); one
that reads :attr:`ScoringContext.inputs` needs the inputs as one tensor.

A spec also says which part of the network the score depends on
(:attr:`ProxySpec.network`): the whole network, or only the operations that can
reach the loss. For a proxy of the second kind :func:`~zc_proxies.score` runs a
working copy without the operations that cannot change its score, where the
model says which those are (:class:`DeadOps`; NAS-Bench-201 cells do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from .._registry import Registry
from ..batch import Batch, LossFn, model_device
from ..errors import BatchError, DuplicateNameError, UnknownNameError

BNMode = Literal["train", "eval"]

#: The part of a network a proxy's score depends on (:attr:`ProxySpec.network`), widest first.
WHOLE = "whole"
REACHING = "reaching"
LIVE = "live"
NETWORK_SCOPES: tuple[str, ...] = (WHOLE, REACHING, LIVE)
NetworkScope = Literal["whole", "reaching", "live"]


@runtime_checkable
class DeadOps(Protocol):
    """A module that knows which of its operations a proxy of a given network scope can do without.

    :func:`~zc_proxies.score` asks every submodule of a model that has these two
    methods (NAS-Bench-201's :class:`~zc_proxies.spaces.nb201.model.Cell`), on the
    caller's model, which ops it could drop for each scope among the proxies, and
    drops them on the private working copy of the proxies of that scope.
    """

    def dead_ops(self, scope: str) -> frozenset[int]:
        """Indices of this module's ops that a proxy of ``scope`` (see :class:`ProxySpec`) does not need.

        Must not change the module; must be empty for ``"whole"``.
        """

    def drop_ops(self, ops: frozenset[int]) -> None:
        """Stop computing ``ops`` (indices from :meth:`dead_ops`), in place, on a private copy."""


@dataclass(frozen=True)
class Component:
    """One named quantity a population proxy stores per architecture, and which way is better."""

    name: str
    higher_is_better: bool = True


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
    components
        For a population proxy (AZ-NAS, TE-NAS...): the named quantities its
        function returns per architecture (a ``{name: value}`` mapping), which
        are stored; empty for an ordinary proxy, whose function returns one float.
    aggregate
        For a population proxy: the registered aggregation
        (:mod:`zc_proxies.proxies.population`) that turns the component vectors
        of a whole population into its final scores, at report time.
    network
        Which operations of the network the score depends on, so which ones a
        scorer may skip without changing it (the score must be *exactly* the
        same, not nearly):

        ``"whole"`` (the default)
            Every operation. For proxies that read activations or weights
            wherever they are (naswot's ReLU codes, meco, l2_norm), count
            (params, flops), re-initialise the network by drawing weights in
            module order (zen, swap, az_nas, vkdnw), or pick parameters by
            position (vkdnw).
        ``"reaching"``
            The operations whose output can reach the loss through operations
            other than the zero op: one whose output is discarded or multiplied
            by zero has no gradient of anything, so a proxy computed from the
            loss or the outputs and their gradients (of activations or of any
            parameter) does not see it.
        ``"live"``
            As ``"reaching"``, and also without the operations whose output is
            identically zero because their input is (an op fed only through zero
            ops, or a ReLU-Conv-BN of zeros whose BatchNorm shift is 0). Such an
            op's conv weight has a zero gradient and its activations are zero,
            but its BatchNorm shift does get a gradient: only for proxies that
            read activations, activation-times-gradient products, Conv2d/Linear
            weights and their gradients, or the input jacobian; never for one
            that differentiates BatchNorm parameters.

        "Exactly" means to the last bit, in every memory layout the engine
        may use: grasp's Hessian-vector product is the same in exact
        arithmetic without the dead ops, but in channels_last its second
        backward pass rounds differently once the zero contributions of the
        dead ops are gone (about 1e-6 relative), so grasp needs the whole
        network.
    """

    name: str
    needs_labels: bool
    needs_grad: bool
    bn_mode: BNMode = "train"
    higher_is_better: bool = True
    version: str = "1"
    description: str = ""
    components: tuple[Component, ...] = ()
    aggregate: str | None = None
    network: NetworkScope = WHOLE

    def __post_init__(self) -> None:
        if self.bn_mode not in ("train", "eval"):
            raise ValueError(f"bn_mode must be 'train' or 'eval', got {self.bn_mode!r}")
        if self.network not in NETWORK_SCOPES:
            raise ValueError(f"proxy {self.name!r}: network must be one of {', '.join(map(repr, NETWORK_SCOPES))}, "
                             f"got {self.network!r}")
        if bool(self.components) != bool(self.aggregate):
            raise ValueError(f"proxy {self.name!r}: a population proxy declares both its components and its "
                             "aggregation; an ordinary one neither")
        names = [c.name for c in self.components]
        if len(set(names)) != len(names) or any(not n or "[" in n or "]" in n for n in names):
            raise ValueError(f"proxy {self.name!r}: component names must be distinct, non-empty, without brackets")

    @property
    def population(self) -> bool:
        """Whether the final score is relative to a population (aggregated from stored components)."""
        return bool(self.aggregate)


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
    batch
        The checked minibatch, on the working copy's device; it knows how to run
        the model to a loss (:meth:`forward_loss`).
    seed
        Seed for any randomness the proxy needs (random inputs, say).
    cache
        Scratch space shared by proxies scored together on the same batch.
    proxy
        Name of the proxy being scored, for error messages.
    """

    model: nn.Module
    batch: Batch
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    proxy: str = "this proxy"

    @property
    def inputs(self) -> torch.Tensor:
        """The batch's inputs as one tensor ``(N, ...)``; a :class:`BatchError` for a batch that holds other inputs."""
        inputs = self.batch.inputs
        if not isinstance(inputs, torch.Tensor):
            raise BatchError(
                f"{self.proxy} reads the inputs as one tensor (N, ...), but this {type(self.batch).__name__} holds "
                f"a {type(inputs).__name__}; score it with a proxy that only needs the loss (fisher, fisher_potential)"
            )
        return inputs

    @property
    def targets(self) -> Any:
        """The batch's targets (None for a batch without labels)."""
        return self.batch.targets

    @property
    def loss_fn(self) -> LossFn:
        """The batch's ``loss(outputs, targets)``, unchecked; :meth:`loss` checks that it gives one number."""
        return self.batch.loss

    @property
    def device(self) -> torch.device:
        """Where the working copy and the batch are."""
        return self.batch.device if self.batch.device is not None else model_device(self.model)

    def loss(self, outputs: Any) -> torch.Tensor:
        """The scalar loss of ``outputs`` (of a forward pass of :attr:`model`) on the batch's targets."""
        return self.batch.loss_of(outputs)

    def forward_loss(self) -> torch.Tensor:
        """Run :attr:`model` on the batch, the way this kind of batch calls it, and return the scalar loss."""
        return self.batch.forward_loss(self.model)

    def generator(self) -> torch.Generator:
        """A fresh generator on the scoring device, seeded with :attr:`seed`."""
        gen = torch.Generator(device=self.device)
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
    components: Sequence[Component | str] = (),
    aggregate: str | None = None,
    network: NetworkScope = WHOLE,
) -> Callable[[Callable[[ScoringContext], float]], Callable[[ScoringContext], float]]:
    """Decorator that registers a proxy function under ``name``.

    The function is returned unchanged (with the :class:`Proxy` attached as
    ``__zc_proxy__``), so it stays directly callable. A taken name raises
    :class:`~zc_proxies.errors.DuplicateNameError`. A population proxy passes
    ``components`` (names, or :class:`Component` for a lower-is-better one) and
    the name of its ``aggregate``; its function returns ``{component: value}``.
    ``network`` says which operations the score depends on (see :class:`ProxySpec`;
    the default, ``"whole"``, is always safe).
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
            components=tuple(c if isinstance(c, Component) else Component(c) for c in components),
            aggregate=aggregate,
            network=network,
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


def spec_of(name: str) -> ProxySpec:
    """The spec of a proxy, or of one component of a population proxy, named ``"proxy[component]"``.

    A component reads as a proxy of its own in tables (its sign is the
    component's), so reports can show the components beside the aggregate.
    """
    if name.endswith("]") and "[" in name:
        parent, component = name[:-1].split("[", 1)
        spec = get_proxy(parent).spec
        found = [c for c in spec.components if c.name == component]
        if not found:
            raise UnknownNameError(f"proxy {parent!r} has no component {component!r} "
                                   f"(has: {', '.join(c.name for c in spec.components) or 'none'})")
        return ProxySpec(name=name, needs_labels=spec.needs_labels, needs_grad=spec.needs_grad,
                         bn_mode=spec.bn_mode, higher_is_better=found[0].higher_is_better, version=spec.version,
                         description=f"the {component} component of {parent}", network=spec.network)
    return get_proxy(name).spec


def list_proxies(pattern: str = "*") -> list[str]:
    """Names of the proxies matching a shell-style wildcard, e.g. ``"fish*"``."""
    return PROXIES.names(pattern)
