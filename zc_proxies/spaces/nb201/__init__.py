"""NAS-Bench-201 (Dong & Yang, ICLR 2020): registers the ``"nb201"`` search space.

Modules: :mod:`.arch` (the arch string), :mod:`.ops` (the five cell ops),
:mod:`.model` (the network), :mod:`.bench` (stored results, table and official
``.pth``), :mod:`.space` (the :class:`~zc_proxies.spaces.base.SearchSpace`).
"""

from .arch import EDGES, NUM_ARCHS, OP_NAMES, format_arch, parse_arch
from .model import NB201Network, parameter_count
from .space import NB201Space, open_nb201

__all__ = ["EDGES", "NUM_ARCHS", "OP_NAMES", "NB201Network", "NB201Space", "format_arch", "open_nb201",
           "parameter_count", "parse_arch"]
