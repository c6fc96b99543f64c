"""The proxy registry and the built-in proxies, imported explicitly so they register."""

from . import (  # noqa: F401  (each module registers its proxies on import)
    az_nas,
    epe_nas,
    fisher,
    flops,
    grad_norm,
    gradsign,
    grasp,
    jacob_cov,
    l2_norm,
    meco,
    nasi,
    naswot,
    params,
    plain,
    snip,
    swap,
    synflow,
    te_nas,
    vkdnw,
    zen,
    zico,
)
from .base import PROXIES, Proxy, ProxySpec, ScoringContext, get_proxy, list_proxies, register_proxy

__all__ = ["PROXIES", "Proxy", "ProxySpec", "ScoringContext", "get_proxy", "list_proxies", "register_proxy"]
