"""NAS-Bench-101 (Ying et al., ICML 2019) without TensorFlow: registers the ``"nb101"`` search space.

Modules: :mod:`.spec` (cell validation and pruning), :mod:`.graph_hash` (the
official hash), :mod:`.model` (the network), :mod:`.tfrecord` (the official
record file: framing, checksums, JSON, metrics protobuf), :mod:`.bench`
(stored results from our tables, the record file or HDF5), :mod:`.convert`
(record file -> HDF5) and :mod:`.space` (the search space).
"""

from .graph_hash import cell_hash, graph_hash
from .model import NB101Network, parameter_count
from .space import NB101Space, open_nb101
from .spec import INTERIOR_OPS, CellSpec, canonical_cell, make_cell, prune

__all__ = [
    "INTERIOR_OPS",
    "CellSpec",
    "NB101Network",
    "NB101Space",
    "canonical_cell",
    "cell_hash",
    "graph_hash",
    "make_cell",
    "open_nb101",
    "parameter_count",
    "prune",
]
