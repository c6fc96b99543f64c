"""NDS cell design spaces (DARTS, ENAS, NASNet, PNAS, Amoeba): networks and the official JSON reader.

Importing this package registers the spaces ``nds-darts``, ``nds-enas``,
``nds-nasnet``, ``nds-pnas`` and ``nds-amoeba`` (dataset ``cifar10``, split
``test``). The data files are the user's: ``data.zip`` from the NDS release,
with ``<FAMILY>.json`` placed under ``<data_root>/nds/``.
"""

from .bench import (
    SPACE_FAMILIES,
    NDSParamsWarning,
    NDSRecord,
    NDSSpace,
    ParamMismatch,
    load_nds_space,
    read_nds_json,
)
from .genotype import Genotype, NDSArch, arch_to_json, parse_arch, parse_genotype
from .model import NDSNetwork, build_network, param_count
from .ops import OPS, VOCABULARIES

__all__ = [
    "OPS",
    "SPACE_FAMILIES",
    "VOCABULARIES",
    "Genotype",
    "NDSArch",
    "NDSNetwork",
    "NDSParamsWarning",
    "NDSRecord",
    "NDSSpace",
    "ParamMismatch",
    "arch_to_json",
    "build_network",
    "load_nds_space",
    "param_count",
    "parse_arch",
    "parse_genotype",
    "read_nds_json",
]
