"""Population proxies: components stored per architecture, final scores made over the whole population.

AZ-NAS, TE-NAS and VKDNW's aggregated form do not score an architecture on its
own: each measures a few quantities per architecture (the *components*) and
ranks the candidates by combining their ranks over all candidates. So a
population proxy's function returns ``{component: value}``; the evaluator
stores that per architecture (``score`` is null, ``components`` holds the
values; rows stay independent and resumable), and the final scores are made
at report time by the proxy's declared *aggregation* over the architectures
being reported (:func:`with_population_scores`). The tables say which scores
are population-relative, and show each component beside the aggregate as
``proxy[component]``.

Aggregations are registered here by name; a proxy module may register its own
with :func:`register_aggregation`. An aggregation takes the (n, k) matrix of
component values, each column oriented so that higher is better, and returns
n scores (higher is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .._registry import Registry
from .base import ProxySpec, get_proxy

Aggregation = Callable[[np.ndarray], np.ndarray]
AGGREGATIONS: Registry[Aggregation] = Registry("aggregation")


def register_aggregation(name: str) -> Callable[[Aggregation], Aggregation]:
    """Decorator registering ``fn(oriented: (n, k) array) -> (n,) scores`` as aggregation ``name``."""

    def decorate(fn: Aggregation) -> Aggregation:
        AGGREGATIONS.add(name, fn)
        return fn

    return decorate


def ranks(oriented: np.ndarray) -> np.ndarray:
    """Per column, the rank of each value, 1 for the worst and n for the best (ties share their mean rank)."""
    return np.column_stack([rankdata(col, method="average") for col in oriented.T]) if oriented.size else oriented


@register_aggregation("rank_sum")
def rank_sum(oriented: np.ndarray) -> np.ndarray:
    """The sum over components of each architecture's rank (TE-NAS's combination)."""
    return ranks(oriented).sum(axis=1)


@register_aggregation("log_rank_sum")
def log_rank_sum(oriented: np.ndarray) -> np.ndarray:
    """The sum over components of log(rank / n) (AZ-NAS's combination: a last place costs most)."""
    n = oriented.shape[0]
    return np.log(ranks(oriented) / n).sum(axis=1) if n else np.zeros(0)


def aggregate(spec: ProxySpec, components: Sequence[Mapping[str, float]]) -> np.ndarray:
    """The final scores of a population whose members' components are ``components``."""
    if not spec.population:
        raise ValueError(f"proxy {spec.name!r} is not a population proxy")
    matrix = np.array([[float(c[comp.name]) for comp in spec.components] for c in components], dtype=np.float64)
    matrix = matrix.reshape(len(components), len(spec.components))
    signs = np.array([1.0 if comp.higher_is_better else -1.0 for comp in spec.components])
    return np.asarray(AGGREGATIONS.get(spec.aggregate)(matrix * signs), dtype=np.float64)


def component_names(spec: ProxySpec) -> list[str]:
    """``["proxy[component]", ...]``: how tables name a population proxy's components."""
    return [f"{spec.name}[{c.name}]" for c in spec.components]


def _finite(components: Any, spec: ProxySpec) -> bool:
    return isinstance(components, Mapping) and all(
        isinstance(components.get(c.name), (int, float)) and math.isfinite(components[c.name])
        for c in spec.components)


def with_population_scores(rows: Iterable[Mapping[str, Any]], proxies: Sequence[str], seed: int,
                           indices: Iterable[int] | None = None) -> tuple[list[dict], list[str], list[str]]:
    """Rows in which every population proxy has final scores, and each of its components a row of its own.

    For each population proxy among ``proxies``, the ``ok`` rows of run seed
    ``seed`` (of the architectures in ``indices``, when given) form the
    population: their ``score`` becomes the aggregate over it, and a row per
    component (proxy ``"name[component]"``, score the component's value) is
    added. Rows of other proxies are returned as they are.

    Returns ``(rows, proxies, population)``: the rows, the proxy list with the
    component names after each population proxy, and the population proxies
    found (for the table's footnote).
    """
    rows = [dict(r) for r in rows]
    wanted = None if indices is None else {int(i) for i in indices}
    out_proxies: list[str] = []
    population: list[str] = []
    extra: list[dict] = []
    for name in proxies:
        out_proxies.append(name)
        try:
            spec = get_proxy(name).spec
        except Exception:  # noqa: BLE001 - an unknown name is reported by the table, not here
            continue
        if not spec.population:
            continue
        population.append(name)
        out_proxies += component_names(spec)
        members = [r for r in rows if r.get("proxy") == name and int(r["seed"]) == int(seed)
                   and (wanted is None or int(r["index"]) in wanted)]
        ok = [r for r in members if r.get("status") == "ok" and _finite(r.get("components"), spec)]
        scores = aggregate(spec, [r["components"] for r in ok]) if ok else np.zeros(0)
        for r, value in zip(ok, scores):
            r["score"] = float(value)
        fine_ids = {id(r) for r in ok}
        for r in members:
            fine = id(r) in fine_ids
            for comp in spec.components:
                value = (r.get("components") or {}).get(comp.name)
                extra.append({**r, "proxy": f"{name}[{comp.name}]", "score": float(value) if fine else None,
                              "status": r["status"] if r["status"] != "ok" or fine else "nan"})
    return rows + extra, out_proxies, population
