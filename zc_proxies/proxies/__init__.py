"""The proxy registry and the built-in proxies (imported here so they register)."""

from .base import PROXIES, Proxy, ProxySpec, ScoringContext, get_proxy, list_proxies, register_proxy
from . import fisher  # noqa: F401  (registers fisher, fisher_potential)
from . import epe_nas, flops, grad_norm, grasp, jacob_cov, l2_norm, naswot, params, plain, snip, synflow, zen  # noqa

__all__ = ["PROXIES", "Proxy", "ProxySpec", "ScoringContext", "get_proxy", "list_proxies", "register_proxy"]
