"""The proxy registry and the built-in proxies (imported here so they register)."""

from .base import PROXIES, Proxy, ProxySpec, ScoringContext, get_proxy, list_proxies, register_proxy
from . import fisher  # noqa: F401  (registers fisher, fisher_potential)

__all__ = ["PROXIES", "Proxy", "ProxySpec", "ScoringContext", "get_proxy", "list_proxies", "register_proxy"]
