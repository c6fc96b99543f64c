"""The NDS AnyNet design spaces (ResNet, Vanilla, ResNeXt-A, ResNeXt-B): networks, parameters, flops.

The NDS records (Radosavovic et al., "On Network Design Spaces for Visual
Recognition", ICCV 2019) of ``ResNet_*``, ``Vanilla_*`` and ``ResNeXt-{A,B}_in``
describe each network by a pycls AnyNet ``net`` config::

    {"block_type": "res_bottleneck_block", "ds": [1, 2, 2, 2], "ws": [64, 16, 128, 128],
     "ss": [8, 1, 2, 2], "bot_muls": [1.0, 0.25, 0.5, 0.25], "num_gs": [1, 2, 4, 2]}

The blocks, stages and head follow the first public pycls release,
facebookresearch/pycls commit ``996cb1d98a4479733359a23f0b5de9124310e3ea``
(2019-10-25, "Initial commit"), ``pycls/models/anynet.py``, the version of the
NDS era. In that version ``num_gs`` is the *number of groups* of the 3x3
convolution (pycls later replaced it by a group width, commit 708d429). The NDS
configs differ from that release in one way: the stem is not a separate
``STEM_TYPE``/``STEM_W`` setting but the FIRST entry of ``ds``/``ws``/``ss``
(with depth 1, and multiplier 1.0 and 1 group where those lists are given); the
remaining entries are the stages. The stride of that first entry says which stem:

========  ===========  =========================================================
``ss[0]``  stem          layers (conv without bias; each conv is followed by BN, ReLU)
========  ===========  =========================================================
1          CIFAR         3x3 conv stride 1, 3 -> ``ws[0]`` (pycls ``ResStemCifar``)
4          ImageNet      7x7 conv stride 2, 3 -> ``ws[0]``, then 3x3 max-pool stride 2
                         (pycls ``ResStemIN``); the ResNet and Vanilla ``_in`` files
8          ImageNet      three 3x3 convs, each stride 2: 3 -> ``ws[0] // 2`` ->
                         ``ws[0]`` -> ``ws[0]``; the ResNeXt-A/B files (all have
                         ``ws[0] = 64``, so widths 32, 64, 64)
========  ===========  =========================================================

The stride-8 stem is in no public pycls version; it is what the ResNeXt records'
own counts pin down. Reading ResNeXt like ResNet (a 7x7 stem) leaves every one
of the 294 records exactly 46,944 parameters short; three 3x3 convs 3-32-64-64
close that gap (864 + 18,432 + 36,864 weights + 448 BN = 56,480 = 9,536 + 46,944),
and the flops gap is closed by exactly one of the 27 ways to give the three
convs output sizes among 112/56/28 px: all three at stride 2 (112, 56, 28 px).
Only ``ws[0] = 64`` occurs in the records, so the first conv's width
``ws[0] // 2`` (rather than a fixed 32) is a choice, not a finding.

Blocks (pycls 996cb1d):

* ``double_plain_block`` (pycls ``VanillaBlock``): [3x3 conv, BN, ReLU] x 2, the
  first conv carrying the stride; no shortcut;
* ``res_basic_block``: ``relu(shortcut(x) + F(x))``, F = 3x3 conv (stride), BN,
  ReLU, 3x3 conv, BN;
* ``res_bottleneck_block``: F = 1x1 conv to ``w_b = int(round(w * bot_mul))``,
  BN, ReLU, 3x3 conv with ``num_gs`` groups (stride), BN, ReLU, 1x1 conv to
  ``w``, BN;

where the shortcut is a 1x1 conv (stride) + BN when the width or the stride
changes (also when only the stride does), and the identity otherwise. Stride
and input width apply to a stage's first block only. Head: global average pool
and a linear layer with bias. All convolutions are bias-free.

Flops: the records' ``flops`` are multiply-adds of every convolution
(``k*k*c_in*c_out/groups`` per output position, projection shortcuts included),
of the fc layer (``c*num_classes``) plus its ``num_classes`` biases, plus 5 per
BatchNorm output element, at 224 px (ImageNet) or 32 px (CIFAR); pooling,
ReLU and additions count nothing. This is not the rule of pycls 996cb1d's
``metrics.flops_count`` (which counts no BN and no fc bias), but it reproduces
all 1,688 records of the six files exactly, so the records were counted that
way (an internal counter).

Each block holds a :class:`~zc_proxies.BlockProbe` on the output of its last
BatchNorm, before the residual addition (and before the final ReLU of a plain
block), so ``fisher_potential`` sees one block per AnyNet block, as BlockSwap
places them. Probes hold no parameters.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import ArchError
from ...probes import BlockProbe

#: Block types of the NDS AnyNet records.
BLOCK_TYPES = ("res_basic_block", "res_bottleneck_block", "double_plain_block")

#: Stem kinds, by the stride of the first ``ss`` entry: (name, is ImageNet).
STEMS: dict[int, tuple[str, bool]] = {
    1: ("res_stem_cifar", False),
    4: ("res_stem_in", True),
    8: ("deep_stem_in", True),
}

#: Input resolution the records' flops were counted at.
IMAGENET_SIZE = 224
CIFAR_SIZE = 32

#: Flops the records charge per BatchNorm output element.
BN_FLOPS_PER_ELEMENT = 5

_NET_KEYS = ("block_type", "ds", "ws", "ss", "bot_muls", "num_gs")


# -- architecture ------------------------------------------------------------------------
@dataclass(frozen=True)
class AnyNetStage:
    """One stage: ``depth`` blocks of output width ``width``; the first has stride ``stride``.

    ``bot_mul`` (bottleneck width multiplier) and ``groups`` (number of groups
    of the 3x3 convolution) matter to ``res_bottleneck_block`` only and are
    1.0 and 1 for the other block types.
    """

    depth: int
    width: int
    stride: int
    bot_mul: float = 1.0
    groups: int = 1

    @property
    def bottleneck_width(self) -> int:
        """``int(round(width * bot_mul))``, the width of a bottleneck block's 3x3 conv (pycls 996cb1d)."""
        return int(round(self.width * self.bot_mul))


@dataclass(frozen=True)
class AnyNetArch:
    """An NDS AnyNet network, independent of the number of classes.

    Attributes
    ----------
    block_type
        One of :data:`BLOCK_TYPES`.
    stem
        ``"res_stem_cifar"``, ``"res_stem_in"`` or ``"deep_stem_in"`` (see the module docstring).
    stem_width
        Output channels of the stem (``ws[0]``).
    stages
        The stages after the stem, in order.
    """

    block_type: str
    stem: str
    stem_width: int
    stages: tuple[AnyNetStage, ...]

    @classmethod
    def from_net(cls, net: Mapping[str, Any], imagenet: bool | None = None) -> AnyNetArch:
        """Validate an NDS AnyNet ``net`` config; see :func:`from_net`."""
        return from_net(net, imagenet)

    @property
    def imagenet(self) -> bool:
        """Whether the stem is an ImageNet stem (224 px, stride 4 or 8) rather than the CIFAR one."""
        return self.stem != "res_stem_cifar"

    @property
    def stem_stride(self) -> int:
        """Total stride of the stem (1, 4 or 8): the ``ss[0]`` of the config."""
        return {name: stride for stride, (name, _) in STEMS.items()}[self.stem]

    @property
    def num_blocks(self) -> int:
        """Number of blocks (and of BlockProbes in the built network)."""
        return sum(s.depth for s in self.stages)

    @property
    def out_width(self) -> int:
        """Channels fed to the classifier."""
        return self.stages[-1].width if self.stages else self.stem_width

    def to_json(self) -> dict[str, Any]:
        """The canonical ``net`` dict, in the records' layout; :func:`from_net` reads it back.

        ``bot_muls`` and ``num_gs`` are empty for the block types that ignore
        them (as in the records) and list the stem entry (1.0, 1) first for
        bottleneck blocks.
        """
        stem_entry = (1, self.stem_width, self.stem_stride, 1.0, 1)
        rows = [stem_entry] + [(s.depth, s.width, s.stride, float(s.bot_mul), s.groups) for s in self.stages]
        bottleneck = self.block_type == "res_bottleneck_block"
        return {
            "block_type": self.block_type,
            "ds": [r[0] for r in rows],
            "ws": [r[1] for r in rows],
            "ss": [r[2] for r in rows],
            "bot_muls": [r[3] for r in rows] if bottleneck else [],
            "num_gs": [r[4] for r in rows] if bottleneck else [],
        }

    def key(self) -> str:
        """A hashable key: the canonical JSON of :meth:`to_json`, sorted keys, no spaces.

        The stem (and so ImageNet vs CIFAR) is fixed by ``ss[0]``, so the key is unambiguous.
        """
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_list(net: Mapping[str, Any], name: str) -> list[int]:
    values = net[name]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ArchError(f"AnyNet net[{name!r}] must be a list of positive integers, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if not _is_int(v) or v < 1:
            raise ArchError(f"AnyNet net[{name!r}][{i}] must be a positive integer, got {v!r}")
        out.append(int(v))
    return out


def _optional_list(net: Mapping[str, Any], name: str, n: int, integer: bool) -> list | None:
    values = net.get(name)
    if values is None or (isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and not values):
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ArchError(f"AnyNet net[{name!r}] must be a list (or empty), got {type(values).__name__}")
    if len(values) != n:
        raise ArchError(f"AnyNet net[{name!r}] has {len(values)} entries but 'ds' has {n} (one per entry, or empty)")
    out = []
    for i, v in enumerate(values):
        if integer:
            if not _is_int(v) or v < 1:
                raise ArchError(f"AnyNet net[{name!r}][{i}] must be a positive integer, got {v!r}")
            out.append(int(v))
        else:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise ArchError(f"AnyNet net[{name!r}][{i}] must be a positive finite number, got {v!r}")
            out.append(float(v))
    return out


def from_net(net: Mapping[str, Any] | AnyNetArch, imagenet: bool | None = None) -> AnyNetArch:
    """Validate an NDS AnyNet ``net`` config (a record's ``net``, or :meth:`AnyNetArch.to_json`).

    Parameters
    ----------
    net
        A dict with ``block_type``, ``ds``, ``ws``, ``ss`` and, optionally (may
        be empty), ``bot_muls`` and ``num_gs``, one entry per stem + stage. An
        :class:`AnyNetArch` is returned as it is (after the ``imagenet`` check).
    imagenet
        ``True`` for the ``_in`` files (224 px, stem stride 4 or 8), ``False``
        for the CIFAR-10 files (stem stride 1); ``None`` accepts either.

    Returns
    -------
    AnyNetArch

    Raises
    ------
    ArchError
        Naming the problem: not a dict, a missing or unknown key, an unknown
        block type, lists of different lengths, a non-positive or non-integer
        entry, a stem entry that is not depth 1 / multiplier 1 / 1 group, a stem
        stride other than 1, 4 or 8 (or not fitting ``imagenet``), a
        multiplier or group count on a block type that has none, or a
        bottleneck width that is zero or not divisible by its groups.
    """
    if isinstance(net, AnyNetArch):
        arch = net
    else:
        arch = _parse(net)
    if imagenet is not None and arch.imagenet != bool(imagenet):
        want = "an ImageNet stem (ss[0] = 4 or 8)" if imagenet else "the CIFAR stem (ss[0] = 1)"
        raise ArchError(f"AnyNet stem stride ss[0] = {arch.stem_stride} ({arch.stem}) does not fit "
                        f"imagenet={bool(imagenet)}: expected {want}")
    return arch


def _parse(net: Any) -> AnyNetArch:
    if not isinstance(net, Mapping):
        raise ArchError(f"an AnyNet net config must be a dict with {', '.join(_NET_KEYS)}, got {type(net).__name__}")
    missing = [k for k in ("block_type", "ds", "ws", "ss") if k not in net]
    if missing:
        raise ArchError(f"AnyNet net config lacks {', '.join(map(repr, missing))} "
                        f"(has: {', '.join(map(str, net)) or 'nothing'})")
    unknown = [str(k) for k in net if k not in _NET_KEYS]
    if unknown:
        raise ArchError(f"AnyNet net config has unknown keys {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(_NET_KEYS)})")
    block_type = net["block_type"]
    if block_type not in BLOCK_TYPES:
        raise ArchError(f"unknown AnyNet block_type {block_type!r} (known: {', '.join(BLOCK_TYPES)})")
    ds, ws, ss = (_int_list(net, k) for k in ("ds", "ws", "ss"))
    if not len(ds) == len(ws) == len(ss):
        raise ArchError(f"AnyNet 'ds', 'ws' and 'ss' must have one entry each per stem + stage, "
                        f"got {len(ds)}, {len(ws)} and {len(ss)}")
    if len(ds) < 2:
        raise ArchError(f"AnyNet net config needs a stem entry and at least one stage, got {len(ds)} entries")
    n = len(ds)
    bms = _optional_list(net, "bot_muls", n, integer=False)
    gss = _optional_list(net, "num_gs", n, integer=True)
    bottleneck = block_type == "res_bottleneck_block"
    if not bottleneck:
        if bms is not None and any(b != 1.0 for b in bms):
            raise ArchError(f"{block_type} has no bottleneck: bot_muls must be empty or all 1.0, got {bms}")
        if gss is not None and any(g != 1 for g in gss):
            raise ArchError(f"{block_type} has no grouped conv: num_gs must be empty or all 1, got {gss}")
    bms = bms or [1.0] * n
    gss = gss or [1] * n
    if ss[0] not in STEMS:
        raise ArchError(f"AnyNet stem stride ss[0] = {ss[0]} is not one of the NDS stems: 1 (CIFAR 3x3), "
                        "4 (ImageNet 7x7 + max-pool), 8 (ImageNet three stride-2 3x3 convs)")
    stem, _ = STEMS[ss[0]]
    if ds[0] != 1 or bms[0] != 1.0 or gss[0] != 1:
        raise ArchError(f"the first AnyNet entry is the stem: it needs ds[0] = 1, bot_muls[0] = 1.0 and num_gs[0] "
                        f"= 1, got {ds[0]}, {bms[0]} and {gss[0]}")
    if stem == "deep_stem_in" and ws[0] % 2:
        raise ArchError(f"the stride-8 stem's first conv has ws[0] // 2 channels, so ws[0] must be even, got {ws[0]}")
    stages = []
    for i in range(1, n):
        stage = AnyNetStage(ds[i], ws[i], ss[i], bms[i], gss[i])
        if bottleneck:
            wb = stage.bottleneck_width
            if wb < 1:
                raise ArchError(f"AnyNet stage {i}: bottleneck width round({ws[i]} * {bms[i]}) = {wb} is not positive")
            if wb % gss[i]:
                raise ArchError(f"AnyNet stage {i}: bottleneck width {wb} = round({ws[i]} * {bms[i]}) is not "
                                f"divisible by num_gs = {gss[i]} groups")
        stages.append(stage)
    return AnyNetArch(block_type, stem, ws[0], tuple(stages))


# -- the layers, once: (kind, c_in, c_out, kernel, stride, groups) -----------------------------
@dataclass(frozen=True)
class _Block:
    w_in: int
    w_out: int
    stride: int
    stage: AnyNetStage


def _blocks(arch: AnyNetArch) -> Iterator[_Block]:
    w_in = arch.stem_width
    for stage in arch.stages:
        for i in range(stage.depth):
            yield _Block(w_in if i == 0 else stage.width, stage.width, stage.stride if i == 0 else 1, stage)
        w_in = stage.width


def _has_proj(block_type: str, b: _Block) -> bool:
    return block_type != "double_plain_block" and (b.w_in != b.w_out or b.stride != 1)


def _stem_convs(arch: AnyNetArch) -> list[tuple[int, int, int, int]]:
    """The stem's convolutions as ``(c_in, c_out, kernel, stride)``, each followed by BN + ReLU."""
    w = arch.stem_width
    if arch.stem == "res_stem_cifar":
        return [(3, w, 3, 1)]
    if arch.stem == "res_stem_in":
        return [(3, w, 7, 2)]
    return [(3, w // 2, 3, 2), (w // 2, w, 3, 2), (w, w, 3, 2)]


def _block_convs(block_type: str, b: _Block) -> list[tuple[int, int, int, int, int]]:
    """A block's main-branch convs as ``(c_in, c_out, kernel, stride, groups)``, each followed by BN."""
    if block_type == "res_bottleneck_block":
        wb = b.stage.bottleneck_width
        return [(b.w_in, wb, 1, 1, 1), (wb, wb, 3, b.stride, b.stage.groups), (wb, b.w_out, 1, 1, 1)]
    return [(b.w_in, b.w_out, 3, b.stride, 1), (b.w_out, b.w_out, 3, 1, 1)]


# -- closed forms ----------------------------------------------------------------------------
def _check_classes(num_classes: int) -> int:
    if not _is_int(num_classes) or num_classes < 1:
        raise ArchError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def anynet_param_count(arch: AnyNetArch, num_classes: int) -> int:
    """Trainable parameters of :func:`build_anynet`'s network, in closed form (no module built).

    Conv weights (``k*k*c_in*c_out/groups``, no biases), two per BatchNorm
    channel, and the fc layer's weights and biases. Equals the records'
    ``params`` for all 1,688 records of the six NDS AnyNet files (1,000 classes
    for ``_in``, 10 for CIFAR-10).
    """
    num_classes = _check_classes(num_classes)
    total = sum(k * k * ci * co + 2 * co for ci, co, k, _ in _stem_convs(arch))
    for b in _blocks(arch):
        if _has_proj(arch.block_type, b):
            total += b.w_in * b.w_out + 2 * b.w_out
        total += sum(k * k * ci * co // g + 2 * co for ci, co, k, _, g in _block_convs(arch.block_type, b))
    return total + arch.out_width * num_classes + num_classes


def _out_size(size: int, stride: int) -> int:
    # every conv and pool here has padding (kernel - 1) // 2 with an odd kernel: ceil(size / stride)
    return (size - 1) // stride + 1


def anynet_flops(arch: AnyNetArch, num_classes: int, imagenet: bool | None = None) -> int:
    """Flops as the NDS records count them, in closed form.

    Multiply-adds of every conv (projections included) and of the fc layer,
    plus the fc's ``num_classes`` biases, plus :data:`BN_FLOPS_PER_ELEMENT` (5)
    per BatchNorm output element; pooling, ReLU and additions are free.

    Parameters
    ----------
    arch
        The architecture.
    num_classes
        Classifier width (1,000 for the ``_in`` records, 10 for CIFAR-10).
    imagenet
        Input of 224 px if true, 32 px if false; ``None`` (default) takes the
        one the stem is for (:attr:`AnyNetArch.imagenet`).

    Returns
    -------
    int
        Equal to the records' ``flops`` for all 1,688 records of the six files.
    """
    num_classes = _check_classes(num_classes)
    size = IMAGENET_SIZE if (arch.imagenet if imagenet is None else imagenet) else CIFAR_SIZE
    total = 0

    def conv(ci: int, co: int, k: int, s: int, g: int, h: int) -> tuple[int, int]:
        h_out = _out_size(h, s)
        return k * k * ci * co // g * h_out * h_out + BN_FLOPS_PER_ELEMENT * co * h_out * h_out, h_out

    for ci, co, k, s in _stem_convs(arch):
        f, size = conv(ci, co, k, s, 1, size)
        total += f
    if arch.stem == "res_stem_in":
        size = _out_size(size, 2)  # 3x3 max-pool, stride 2
    for b in _blocks(arch):
        if _has_proj(arch.block_type, b):
            total += conv(b.w_in, b.w_out, 1, b.stride, 1, size)[0]
        for ci, co, k, s, g in _block_convs(arch.block_type, b):
            f, size = conv(ci, co, k, s, g, size)
            total += f
    return total + arch.out_width * num_classes + num_classes


# -- the network ----------------------------------------------------------------------------------
def _conv_bn(ci: int, co: int, k: int, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(ci, co, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(co)


class AnyStem(nn.Sequential):
    """The stem: conv/BN/ReLU triples (and the max-pool of ``res_stem_in``)."""

    def __init__(self, arch: AnyNetArch) -> None:
        layers: list[nn.Module] = []
        for ci, co, k, s in _stem_convs(arch):
            layers += [*_conv_bn(ci, co, k, s), nn.ReLU()]
        if arch.stem == "res_stem_in":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        super().__init__(*layers)


class PlainBlock(nn.Module):
    """``double_plain_block`` (pycls ``VanillaBlock``): [3x3 conv, BN, ReLU] x 2, probed before the last ReLU."""

    def __init__(self, w_in: int, w_out: int, stride: int) -> None:
        super().__init__()
        self.a, self.a_bn = _conv_bn(w_in, w_out, 3, stride)
        self.a_relu = nn.ReLU()
        self.b, self.b_bn = _conv_bn(w_out, w_out, 3)
        self.probe = BlockProbe()
        self.b_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        return self.b_relu(self.probe(self.b_bn(self.b(x))))


class ResBlock(nn.Module):
    """``relu(shortcut(x) + F(x))`` for ``res_basic_block`` and ``res_bottleneck_block``.

    ``F`` is an ``nn.Sequential`` of conv/BN(/ReLU) ending in a :class:`BlockProbe`;
    ``proj``/``bn`` (1x1 conv with the stride, BN) exist when the width or stride changes.
    """

    def __init__(self, block_type: str, w_in: int, w_out: int, stride: int, stage: AnyNetStage) -> None:
        super().__init__()
        self.proj_block = w_in != w_out or stride != 1
        if self.proj_block:
            self.proj, self.bn = _conv_bn(w_in, w_out, 1, stride)
        convs = _block_convs(block_type, _Block(w_in, w_out, stride, stage))
        layers: list[nn.Module] = []
        for i, (ci, co, k, s, g) in enumerate(convs):
            layers += _conv_bn(ci, co, k, s, g)
            if i < len(convs) - 1:
                layers.append(nn.ReLU())
        layers.append(BlockProbe())
        self.f = nn.Sequential(*layers)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.bn(self.proj(x)) if self.proj_block else x
        return self.relu(shortcut + self.f(x))


class AnyNet(nn.Module):
    """An NDS AnyNet: stem, stages ``s1..sN`` of blocks ``b1..bD``, global average pool and fc.

    Parameters
    ----------
    arch
        A validated :class:`AnyNetArch`.
    num_classes
        Classifier width.
    pycls_init
        Initialise as pycls 996cb1d's ``init_weights`` does (conv weights
        N(0, 2 / (k*k*c_out)), BN weight 1 and bias 0, fc weight N(0, 0.01^2)
        and bias 0); if false, PyTorch's default initialisation is kept.
    """

    def __init__(self, arch: AnyNetArch, num_classes: int, pycls_init: bool = True) -> None:
        super().__init__()
        num_classes = _check_classes(num_classes)
        self.arch = arch
        self.stem = AnyStem(arch)
        w_in = arch.stem_width
        self.stages = nn.ModuleList()
        for stage in arch.stages:
            blocks = nn.Sequential()
            for i in range(stage.depth):
                b_in, b_stride = (w_in, stage.stride) if i == 0 else (stage.width, 1)
                if arch.block_type == "double_plain_block":
                    block: nn.Module = PlainBlock(b_in, stage.width, b_stride)
                else:
                    block = ResBlock(arch.block_type, b_in, stage.width, b_stride, stage)
                blocks.add_module(f"b{i + 1}", block)
            self.stages.append(blocks)
            w_in = stage.width
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(arch.out_width, num_classes, bias=True)
        if pycls_init:
            self.apply(_pycls_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.avg_pool(x), 1))


@torch.no_grad()
def _pycls_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.normal_(mean=0.0, std=math.sqrt(2.0 / fan_out))
    elif isinstance(m, nn.BatchNorm2d):
        m.weight.fill_(1.0)
        m.bias.zero_()
    elif isinstance(m, nn.Linear):
        m.weight.normal_(mean=0.0, std=0.01)
        m.bias.zero_()


def build_anynet(arch: AnyNetArch, num_classes: int, pycls_init: bool = True) -> AnyNet:
    """A freshly initialised :class:`AnyNet` for ``arch`` (on torch's current default device).

    It has exactly :func:`anynet_param_count` ``(arch, num_classes)`` parameters
    and one :class:`~zc_proxies.BlockProbe` per block (:attr:`AnyNetArch.num_blocks`).
    """
    return AnyNet(arch, num_classes, pycls_init=pycls_init)


__all__ = [
    "BLOCK_TYPES",
    "BN_FLOPS_PER_ELEMENT",
    "CIFAR_SIZE",
    "IMAGENET_SIZE",
    "STEMS",
    "AnyNet",
    "AnyNetArch",
    "AnyNetStage",
    "anynet_flops",
    "anynet_param_count",
    "build_anynet",
    "from_net",
]
