"""The proxy registry and the built-in proxies, imported explicitly so they register."""

from . import (  # noqa: F401  (each module registers its proxies on import)
    epe_nas,
    fisher,
    flops,
    grad_norm,
    grasp,
    jacob_cov,
    l2_norm,
    naswot,
    params,
    plain,
    snip,
    synflow,
    zen,
)
from .base import PROXIES, Proxy, ProxySpec, ScoringContext, get_proxy, list_proxies, register_proxy

__all__ = ["PROXIES", "Proxy", "ProxySpec", "ScoringContext", "get_proxy", "list_proxies", "register_proxy"]
