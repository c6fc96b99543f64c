"""NDS (Radosavovic et al., ICCV 2019): the cell design spaces (DARTS, ENAS, NASNet, PNAS, Amoeba) and the
AnyNet ones (ResNet, ResNeXt, Vanilla), their networks and the official JSON reader.

Importing this package registers one space per NDS file (:data:`SWEEPS`):
``nds-darts`` ... ``nds-amoeba`` (CIFAR-10), ``nds-darts-imagenet`` ...
``nds-amoeba-imagenet``, ``nds-darts-fix-w-d-imagenet``,
``nds-darts-lr-wd-imagenet``, ``nds-resnext-a-imagenet``,
``nds-resnext-b-imagenet``, ``nds-resnet-lr-wd-imagenet``,
``nds-vanilla-lr-wd-imagenet``, ``nds-resnet-cifar10`` and
``nds-vanilla-cifar10`` (split ``test``). The data files are the user's:
``data.zip`` from the NDS release, its files placed under ``<data_root>/nds/``.

Modules: :mod:`.genotype` and :mod:`.ops` (cells), :mod:`.model` (the CIFAR
and ImageNet cell networks), :mod:`.anynet` (AnyNet networks), :mod:`.bench`
(files, records, spaces).
"""

from .anynet import AnyNetArch, anynet_flops, anynet_param_count, build_anynet
from .bench import (
    SPACE_FAMILIES,
    SWEEPS,
    NDSParamsWarning,
    NDSRecord,
    NDSSpace,
    ParamMismatch,
    Sweep,
    load_nds_space,
    read_nds_json,
)
from .genotype import Genotype, NDSArch, arch_to_json, parse_arch, parse_genotype
from .model import NDSNetwork, build_network, param_count
from .ops import OPS, VOCABULARIES

__all__ = [
    "OPS",
    "SPACE_FAMILIES",
    "SWEEPS",
    "AnyNetArch",
    "Sweep",
    "anynet_flops",
    "anynet_param_count",
    "build_anynet",
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
