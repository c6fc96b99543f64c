"""The networks BlockSwap cheapens: pre-activation WRN-depth-width (CIFAR) and ResNet-34 (ImageNet).

A :class:`NetSpec` is the fixed skeleton (stem, stages, widths, strides, head);
a configuration chooses one block type per block (not per stage). Parameter
counts follow the paper's Table 2 convention, which is every trainable
parameter: conv weights (1x1 shortcut convs included), BatchNorm weights and
biases, and the classifier's weights and bias. With all-standard blocks this
gives WRN-40-2 2,243,546 (2,243.5K), WRN-16-2 691,674, WRN-40-1 563,930,
WRN-16-1 175,066 with 10 classes, and ResNet-34 21,794,984 (21.8M) with 1000.

WRN (Zagoruyko & Komodakis 2016, as in the authors' moonshine/blockswap code):
3x3 conv 3->16, three stages of ``(depth - 4) / 6`` blocks of widths 16k, 32k,
64k (strides 1, 2, 2), then BN-ReLU, global average pool, linear.
ResNet-34 (the authors' pre-activation rewrite of torchvision's): 7x7/2 conv
3->64, BN-ReLU, 3x3/2 max-pool, stages of 3, 4, 6, 3 blocks of widths 64, 128,
256, 512 (strides 1, 2, 2, 2), global average pool, linear (no final BN, as
in their code).

Weights are initialised as in their code: conv weights ~ N(0, 2 / (k*k*out)),
BN weight 1 and bias 0, linear weight U(+-1/sqrt(fan_in)) and bias 0.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArchError, UnknownNameError
from .blocks import PAPER_POOL, Block, BlockType, parse_block


@dataclass(frozen=True)
class Slot:
    """One block position of a network: its stage, channels and stride."""

    stage: int
    index: int
    in_channels: int
    out_channels: int
    stride: int


@dataclass(frozen=True)
class NetSpec:
    """A network skeleton whose blocks are chosen one by one.

    Attributes
    ----------
    name
        Canonical name, e.g. ``"wrn-40-2"`` or ``"resnet-34"``.
    family
        ``"wrn"`` or ``"resnet"``.
    slots
        The block positions, in forward order.
    stem_channels, head_channels
        Channels after the stem and into the classifier.
    num_classes
        Default head size (10 for WRN on CIFAR-10, 1000 for ResNet on ImageNet).
    input_size
        Side of the input images the network is meant for.
    """

    name: str
    family: str
    slots: tuple[Slot, ...]
    stem_channels: int
    head_channels: int
    num_classes: int
    input_size: int

    def __len__(self) -> int:
        return len(self.slots)

    #: The memory layout candidates are scored in on the CPU with ``--layout auto``: NHWC, with exact
    #: BatchNorm statistics (``benchmarks/layout_check.py --space blockswap``, 1 thread, NHWC vs NCHW):
    #: WRN-40-2 at 800K on CIFAR-10, batch 128, 1.30x as fast over 40 candidates; ResNet-34 at 8M on
    #: ImageNet, batch 64, 1.24x as fast over 20. Spearman 1.0 with NCHW and with float64 for both.
    #: The COCO search puts its whole Mask R-CNN in this layout: 1.12x as fast over 12 detectors at 10M,
    #: Spearman 1.0 with NCHW (``--dataset coco``; both layouts equally far from float64).
    cpu_layout: ClassVar[str] = "nhwc"

    @property
    def default_dataset(self) -> str:
        """The training images its candidates are scored on when none are named: CIFAR-10 or ImageNet."""
        return "cifar10" if self.family == "wrn" else "imagenet"

    # -- configurations -------------------------------------------------------------
    def check(self, config: Sequence[str | BlockType]) -> tuple[BlockType, ...]:
        """Parse ``config`` (one block name per slot) and check that each type fits its slot.

        Raises
        ------
        ArchError
            Wrong length, or a block type that does not fit its slot's channels.
        UnknownNameError
            A name that is no block type.
        """
        if isinstance(config, (str, bytes)) or not isinstance(config, Sequence):
            raise ArchError(f"a {self.name} configuration is a list of {len(self)} block names, "
                            f"got {type(config).__name__}")
        if len(config) != len(self.slots):
            raise ArchError(f"{self.name} has {len(self.slots)} blocks, but the configuration names {len(config)}")
        types = tuple(parse_block(c) for c in config)
        for i, (slot, bt) in enumerate(zip(self.slots, types)):
            try:
                bt.conv_groups(slot.in_channels, slot.out_channels)
            except ArchError as exc:
                raise ArchError(f"{self.name} block {i} (stage {slot.stage}): {exc}") from None
        return types

    def options(self, pool: Iterable[str | BlockType] = PAPER_POOL) -> list[tuple[BlockType, ...]]:
        """For each slot, the types of ``pool`` that fit it."""
        types = [parse_block(p) for p in pool]
        out = []
        for i, slot in enumerate(self.slots):
            fit = tuple(t for t in types if t.fits(slot.in_channels, slot.out_channels))
            if not fit:
                raise ArchError(f"no block type of the pool fits {self.name} block {i} "
                                f"({slot.in_channels}->{slot.out_channels} channels)")
            out.append(fit)
        return out

    # -- parameter counts -------------------------------------------------------------
    def fixed_params(self, num_classes: int | None = None) -> int:
        """Parameters outside the blocks: stem, final BN (WRN) and classifier."""
        k = self.num_classes if num_classes is None else num_classes
        head = self.head_channels * k + k
        if self.family == "wrn":
            return 3 * self.stem_channels * 9 + 2 * self.head_channels + head
        return 3 * self.stem_channels * 49 + 2 * self.stem_channels + head

    def params(self, config: Sequence[str | BlockType], num_classes: int | None = None) -> int:
        """Exact trainable-parameter count of ``build(config, num_classes)``, without building it."""
        types = self.check(config)
        return self.fixed_params(num_classes) + sum(
            bt.params(s.in_channels, s.out_channels, s.stride) for s, bt in zip(self.slots, types)
        )

    def standard(self) -> tuple[BlockType, ...]:
        """The all-``S`` configuration (the original network)."""
        return (BlockType("S"),) * len(self.slots)

    # -- modules ------------------------------------------------------------------------
    def build(self, config: Sequence[str | BlockType] | None = None, num_classes: int | None = None,
              generator: torch.Generator | None = None) -> BlockSwapNet:
        """The network with ``config``'s blocks (all ``S`` when None), freshly initialised."""
        types = self.standard() if config is None else self.check(config)
        net = BlockSwapNet(self, types, self.num_classes if num_classes is None else num_classes)
        init_weights(net, generator)
        return net


class BlockSwapNet(nn.Module):
    """A network of :class:`NetSpec`'s skeleton with one chosen block type per slot.

    ``forward`` returns the logits.
    """

    def __init__(self, spec: NetSpec, types: Sequence[BlockType], num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ArchError(f"num_classes must be positive, got {num_classes}")
        self.spec = spec
        self.config = tuple(t.name for t in types)
        self.num_classes = num_classes
        if spec.family == "wrn":
            self.stem: nn.Module = nn.Conv2d(3, spec.stem_channels, 3, padding=1, bias=False)
            self.head_bn: nn.BatchNorm2d | None = nn.BatchNorm2d(spec.head_channels)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, spec.stem_channels, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(spec.stem_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
            self.head_bn = None
        self.blocks = nn.Sequential(*[
            Block(t, s.in_channels, s.out_channels, s.stride) for s, t in zip(spec.slots, types)
        ])
        self.fc = nn.Linear(spec.head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        if self.head_bn is not None:
            out = F.relu(self.head_bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (the paper's Table 2 convention)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def init_weights(net: nn.Module, generator: torch.Generator | None = None) -> None:
    """The authors' initialisation (see module docstring), drawn from ``generator``."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=generator)
                m.bias.zero_()


# -- the named skeletons ------------------------------------------------------------------
def wrn(depth: int, width: int, num_classes: int = 10) -> NetSpec:
    """Pre-activation WRN-``depth``-``width`` for 32x32 images."""
    if depth < 10 or (depth - 4) % 6:
        raise ArchError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
    if width < 1:
        raise ArchError(f"WRN width must be a positive integer, got {width}")
    n = (depth - 4) // 6
    widths = (16 * width, 32 * width, 64 * width)
    slots, cin = [], 16
    for stage, (cout, stride) in enumerate(zip(widths, (1, 2, 2))):
        for i in range(n):
            slots.append(Slot(stage, i, cin, cout, stride if i == 0 else 1))
            cin = cout
    return NetSpec(f"wrn-{depth}-{width}", "wrn", tuple(slots), 16, widths[-1], num_classes, 32)


def resnet34(num_classes: int = 1000) -> NetSpec:
    """Pre-activation ResNet-34 for 224x224 images."""
    slots, cin = [], 64
    for stage, (count, cout, stride) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2))):
        for i in range(count):
            slots.append(Slot(stage, i, cin, cout, stride if i == 0 else 1))
            cin = cout
    return NetSpec("resnet-34", "resnet", tuple(slots), 64, 512, num_classes, 224)


_KNOWN = ("wrn-40-2", "wrn-16-2", "wrn-40-1", "wrn-16-1", "resnet-34")


def get_net(name: str | NetSpec) -> NetSpec:
    """The skeleton named ``name``: ``wrn-<depth>-<width>`` or ``resnet-34``.

    Raises
    ------
    UnknownNameError
        For any other name.
    ArchError
        For a WRN depth that is not 6n + 4.
    """
    if isinstance(name, NetSpec):
        return name
    text = str(name).strip().lower()
    m = re.fullmatch(r"wrn[-_]?(\d+)[-_](\d+)", text)
    if m:
        return wrn(int(m[1]), int(m[2]))
    if re.fullmatch(r"resnet[-_]?34", text):
        return resnet34()
    close = difflib.get_close_matches(text, _KNOWN, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown network {name!r}{hint} (known: wrn-<depth>-<width> such as "
                           f"{', '.join(_KNOWN[:4])}, and resnet-34)")
