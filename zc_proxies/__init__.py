"""zcbench: zero-cost proxies for neural architecture search, Fisher potential first.

The public face for NAS code::

    from zc_proxies import Batch, score
    s = score(model, (inputs, targets), proxy="fisher")
    s = score(model, Batch(inputs, targets, device="cuda"), proxy="fisher")   # model itself stays put
"""

from .batch import Batch
from .errors import ZCBenchError
from .probes import BlockProbe
from .proxies import get_proxy, list_proxies, register_proxy
from .score import score
from .spaces import get_space, list_spaces

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BlockProbe",
    "ZCBenchError",
    "get_proxy",
    "get_space",
    "list_proxies",
    "list_spaces",
    "register_proxy",
    "score",
    "__version__",
]
