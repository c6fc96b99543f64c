"""A proxy that takes its time, for tests that need a run to be still going (``--import sleepy_proxy``)."""

from __future__ import annotations

import os
import time

from zc_proxies.proxies import PROXIES, register_proxy

SECONDS = float(os.environ.get("SLEEPY_SECONDS", "1.5"))  # a test that needs a longer window sets more

if "sleepy" not in PROXIES:
    @register_proxy("sleepy", needs_labels=False, needs_grad=False, version="1")
    def sleepy(ctx) -> float:
        """The parameter count, after a pause."""
        time.sleep(SECONDS)
        return float(sum(p.numel() for p in ctx.model.parameters()))
