"""BlockSwap's block types (Turner et al., ICLR 2020), as pre-activation residual blocks.

A BlockSwap network keeps the skeleton of a large network (its stages, widths
and strides) and swaps each residual block for a cheaper one. The block types,
named as in the paper, are

``S``
    standard: BN-ReLU, 3x3 conv, BN-ReLU, 3x3 conv.
``G(g)``
    each of S's two 3x3 convs becomes a grouped 3x3 conv with ``g`` groups on
    the conv's input channels, BN-ReLU, then a pointwise 1x1 conv to its output
    channels. ``g`` is a fixed count (``G(4)``) or a fraction of the input
    channel count ``N`` (``G(N/4)``; ``G(N)`` is depthwise).
``B(b)``
    one bottleneck in place of both convs: 1x1 conv down to ``M = out / b``
    channels, BN-ReLU, 3x3 conv, BN-ReLU, 1x1 conv up to ``out``.
``BG(b,g)``
    ``B(b)`` with a grouped 3x3 conv; ``g`` is a fixed count or a fraction of
    ``M`` (``BG(2,M/4)``; ``BG(2,M)`` is depthwise).

The structure follows the authors' code (BayesWatch/pytorch-blockswap): the
grouped-plus-pointwise unit carries its own BN-ReLU between the two convs; a
block whose input and output shapes agree adds its raw input, one that changes
them passes the pre-activated input through a 1x1 (strided) shortcut conv, as
in Zagoruyko & Komodakis' wide ResNets; the stride sits on the (first) 3x3 conv.

Every block ends in a :class:`~zc_proxies.BlockProbe` on the output of its last
conv, before the residual add: where BlockSwap measures Fisher potential.

Names are the JSON form of a block type. :func:`parse_block` also reads the
class names of the authors' code (``Conv``, ``DConvA4``, ``DConvG2``, ``DConv``,
``ConvB2``, ``A4B2``, ``G4B2``, ``DConvB2``) so their genotype files can be read.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from ..errors import ArchError, UnknownNameError
from ..probes import BlockProbe

FAMILIES = ("S", "G", "B", "BG")


@dataclass(frozen=True)
class Groups:
    """The group count of a grouped 3x3 conv: fixed (``count``) or ``channels / divisor``.

    Exactly one of ``count`` and ``divisor`` is set. A fixed count must divide
    the channels; a divisor must divide them (``divisor == 1`` is depthwise).
    """

    count: int | None = None
    divisor: int | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.divisor is None):
            raise ArchError("a group spec has either a fixed count or a divisor of the channels, not both")
        value = self.count if self.count is not None else self.divisor
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ArchError(f"group counts and divisors are positive integers, got {value!r}")

    def resolve(self, channels: int) -> int | None:
        """Groups for a conv on ``channels`` input channels, or None if this spec does not fit them."""
        if self.count is not None:
            return self.count if channels % self.count == 0 else None
        assert self.divisor is not None
        return channels // self.divisor if channels % self.divisor == 0 else None

    def label(self, symbol: str) -> str:
        """``"4"``, ``"N/4"`` or ``"N"`` (with ``symbol`` standing for the channel count)."""
        if self.count is not None:
            return str(self.count)
        return symbol if self.divisor == 1 else f"{symbol}/{self.divisor}"


@dataclass(frozen=True)
class BlockType:
    """One of BlockSwap's block types; build it for given channels with :meth:`build`."""

    family: str
    groups: Groups | None = None
    bottleneck: int | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ArchError(f"block family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        wants_groups = self.family in ("G", "BG")
        wants_b = self.family in ("B", "BG")
        if wants_groups != (self.groups is not None):
            raise ArchError(f"block family {self.family} {'needs' if wants_groups else 'takes no'} group spec")
        if wants_b != (self.bottleneck is not None):
            raise ArchError(f"block family {self.family} {'needs' if wants_b else 'takes no'} bottleneck factor")
        if wants_b and (not isinstance(self.bottleneck, int) or isinstance(self.bottleneck, bool)
                        or self.bottleneck < 1):
            raise ArchError(f"a bottleneck factor is a positive integer, got {self.bottleneck!r}")

    # -- naming -------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The canonical name: ``S``, ``G(4)``, ``G(N/2)``, ``B(2)``, ``BG(2,M/4)``..."""
        if self.family == "S":
            return "S"
        if self.family == "G":
            assert self.groups is not None
            return f"G({self.groups.label('N')})"
        if self.family == "B":
            return f"B({self.bottleneck})"
        assert self.groups is not None
        return f"BG({self.bottleneck},{self.groups.label('M')})"

    def __str__(self) -> str:
        return self.name

    # -- shapes ---------------------------------------------------------------------
    def conv_groups(self, in_channels: int, out_channels: int) -> tuple[int, ...]:
        """Groups of each grouped 3x3 conv of the block (empty for S and B).

        Raises
        ------
        ArchError
            If the block type does not fit these channels (a group count that
            does not divide them, a bottleneck factor that does not divide the
            output channels).
        """
        where = f"{in_channels}->{out_channels} channels"
        if self.family == "S":
            return ()
        if self.family == "G":
            assert self.groups is not None
            out = []
            for n in (in_channels, out_channels):  # conv1 groups on its input, conv2 on out_channels
                g = self.groups.resolve(n)
                if g is None:
                    raise ArchError(f"block {self.name} does not fit {where}: a grouped conv on {n} channels "
                                    f"cannot have {self.groups.label(str(n))} groups")
                out.append(g)
            return tuple(out)
        mid = self.mid_channels(in_channels, out_channels)
        if self.family == "B":
            return ()
        assert self.groups is not None
        g = self.groups.resolve(mid)
        if g is None:
            raise ArchError(f"block {self.name} does not fit {where}: its bottleneck has M = {mid} channels, "
                            f"which cannot be split into {self.groups.label(str(mid))} groups")
        return (g,)

    def mid_channels(self, in_channels: int, out_channels: int) -> int:
        """Bottleneck width ``M = out / b`` (B and BG only)."""
        if self.bottleneck is None:
            raise ArchError(f"block {self.name} has no bottleneck")
        if out_channels % self.bottleneck:
            raise ArchError(f"block {self.name} does not fit {in_channels}->{out_channels} channels: "
                            f"{out_channels} is not divisible by the bottleneck factor {self.bottleneck}")
        return out_channels // self.bottleneck

    def fits(self, in_channels: int, out_channels: int) -> bool:
        """Whether this block type can be built for these channels."""
        try:
            self.conv_groups(in_channels, out_channels)
        except ArchError:
            return False
        return True

    def params(self, in_channels: int, out_channels: int, stride: int = 1) -> int:
        """Exact trainable-parameter count of :meth:`build`'s block (conv weights, BN affine).

        Computed from the shapes alone; a test checks it against the built module.
        """
        cin, cout = in_channels, out_channels
        groups = self.conv_groups(cin, cout)
        total = 2 * cin  # bn1
        if has_shortcut_conv(cin, cout, stride):
            total += cin * cout
        if self.family == "S":
            total += 9 * cin * cout + 2 * cout + 9 * cout * cout
        elif self.family == "G":
            total += _grouped_pointwise_params(cin, cout, groups[0]) + 2 * cout
            total += _grouped_pointwise_params(cout, cout, groups[1])
        else:
            mid = self.mid_channels(cin, cout)
            g = groups[0] if groups else 1
            total += cin * mid + 2 * mid + 9 * mid * (mid // g) + 2 * mid + mid * cout
        return total

    def build(self, in_channels: int, out_channels: int, stride: int = 1) -> Block:
        """A fresh :class:`Block` of this type."""
        return Block(self, in_channels, out_channels, stride)


def _grouped_pointwise_params(cin: int, cout: int, groups: int) -> int:
    return 9 * cin * (cin // groups) + 2 * cin + cin * cout


def has_shortcut_conv(in_channels: int, out_channels: int, stride: int) -> bool:
    """Whether a block needs a 1x1 shortcut conv (its input and output shapes differ)."""
    return in_channels != out_channels or stride != 1


# -- modules ----------------------------------------------------------------------------
def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, padding=0, bias=False)


class GroupedPointwise(nn.Module):
    """``G``'s replacement for one 3x3 conv: grouped 3x3 (cin->cin), BN-ReLU, pointwise 1x1 (cin->cout)."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        self.grouped = conv3x3(cin, cin, stride, groups)
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.pointwise = conv1x1(cin, cout)

    @property
    def last(self) -> nn.Conv2d:
        return self.pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.relu(self.bn(self.grouped(x))))


class Bottleneck(nn.Module):
    """``B``/``BG``'s replacement for both 3x3 convs: 1x1 down to M, BN-ReLU, 3x3 (grouped), BN-ReLU, 1x1 up."""

    def __init__(self, cin: int, cout: int, stride: int, mid: int, groups: int = 1) -> None:
        super().__init__()
        self.reduce = conv1x1(cin, mid)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv = conv3x3(mid, mid, stride, groups)
        self.bn2 = nn.BatchNorm2d(mid)
        self.expand = conv1x1(mid, cout)
        self.relu = nn.ReLU(inplace=True)

    @property
    def last(self) -> nn.Conv2d:
        return self.expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.reduce(x)))
        out = self.relu(self.bn2(self.conv(out)))
        return self.expand(out)


class Block(nn.Module):
    """A pre-activation residual block of a given :class:`BlockType`.

    ``forward``: ``h = ReLU(BN(x))``; branch ``r = conv2(ReLU(BN(conv1(h))))``
    (or ``r = conv1(h)`` for bottleneck types); ``probe(r)``; output
    ``x + r`` when shapes agree, else ``shortcut(h) + r``.
    """

    def __init__(self, block_type: BlockType, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ArchError(f"block stride must be 1 or 2, got {stride}")
        groups = block_type.conv_groups(in_channels, out_channels)  # raises ArchError if it does not fit
        self.block_type = block_type
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.bn2: nn.BatchNorm2d | None = None
        self.conv2: nn.Module | None = None
        fam = block_type.family
        if fam == "S":
            self.conv1: nn.Module = conv3x3(in_channels, out_channels, stride)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.conv2 = conv3x3(out_channels, out_channels)
        elif fam == "G":
            self.conv1 = GroupedPointwise(in_channels, out_channels, stride, groups[0])
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.conv2 = GroupedPointwise(out_channels, out_channels, 1, groups[1])
        else:
            mid = block_type.mid_channels(in_channels, out_channels)
            self.conv1 = Bottleneck(in_channels, out_channels, stride, mid, groups[0] if groups else 1)
        self.probe = BlockProbe()
        self.shortcut = (conv1x1(in_channels, out_channels, stride)
                         if has_shortcut_conv(in_channels, out_channels, stride) else None)

    @property
    def last_conv(self) -> nn.Conv2d:
        """The conv whose output the probe sees."""
        unit = self.conv2 if self.conv2 is not None else self.conv1
        return unit if isinstance(unit, nn.Conv2d) else unit.last  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"{self.block_type.name}, {self.in_channels}->{self.out_channels}, stride={self.stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(h)
        out = self.conv1(h)
        if self.conv2 is not None:
            assert self.bn2 is not None
            out = self.conv2(self.relu(self.bn2(out)))
        return skip + self.probe(out)


# -- names ---------------------------------------------------------------------------
def _fixed_or_fraction(text: str, symbol: str) -> Groups:
    if text == symbol:
        return Groups(divisor=1)
    if text.startswith(symbol + "/"):
        return Groups(divisor=int(text[len(symbol) + 1:]))
    return Groups(count=int(text))


_NUM = r"(\d+)"
_CANONICAL = [
    (re.compile(r"S"), lambda m: BlockType("S")),
    (re.compile(r"G\((N|N/\d+|\d+)\)"), lambda m: BlockType("G", _fixed_or_fraction(m[1], "N"))),
    (re.compile(rf"B\({_NUM}\)"), lambda m: BlockType("B", bottleneck=int(m[1]))),
    (re.compile(rf"BG\({_NUM},(M|M/\d+|\d+)\)"),
     lambda m: BlockType("BG", _fixed_or_fraction(m[2], "M"), bottleneck=int(m[1]))),
]
# Class names of the authors' code (models/blocks.py there).
_ALIASES = [
    (re.compile(r"Conv"), lambda m: BlockType("S")),
    (re.compile(rf"DConvA{_NUM}"), lambda m: BlockType("G", Groups(count=int(m[1])))),
    (re.compile(rf"DConvG{_NUM}"), lambda m: BlockType("G", Groups(divisor=int(m[1])))),
    (re.compile(r"DConv"), lambda m: BlockType("G", Groups(divisor=1))),
    (re.compile(rf"ConvB{_NUM}"), lambda m: BlockType("B", bottleneck=int(m[1]))),
    (re.compile(rf"A{_NUM}B{_NUM}"), lambda m: BlockType("BG", Groups(count=int(m[1])), bottleneck=int(m[2]))),
    (re.compile(rf"G{_NUM}B{_NUM}"), lambda m: BlockType("BG", Groups(divisor=int(m[1])), bottleneck=int(m[2]))),
    (re.compile(rf"DConvB{_NUM}"), lambda m: BlockType("BG", Groups(divisor=1), bottleneck=int(m[1]))),
]


@cache
def _parse(text: str) -> BlockType:
    compact = re.sub(r"\s+", "", text)
    for pattern, make in _CANONICAL + _ALIASES:
        match = pattern.fullmatch(compact)
        if match:
            return make(match)
    known = [b.name for b in PAPER_POOL]
    close = difflib.get_close_matches(compact, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(
        f"unknown block name {text!r}{hint} (block names are S, G(g), G(N/k), G(N), B(b), BG(b,g), "
        f"BG(b,M/k), BG(b,M); the paper's pool: {', '.join(known)})"
    )


def parse_block(name: str | BlockType) -> BlockType:
    """The :class:`BlockType` named ``name`` (canonical name, or the authors' class name).

    Raises
    ------
    UnknownNameError
        For a name that is no block type, with close matches.
    ArchError
        For a well-formed name with impossible numbers (``G(0)``, ``B(0)``).
    """
    if isinstance(name, BlockType):
        return name
    if not isinstance(name, str):
        raise UnknownNameError(f"a block name must be a string, got {type(name).__name__} {name!r}")
    return _parse(name)


def _pool() -> tuple[BlockType, ...]:
    fixed = (2, 4, 8, 16)
    fractions = (16, 8, 4, 2, 1)
    pool = [BlockType("S")]
    pool += [BlockType("G", Groups(count=g)) for g in fixed]
    pool += [BlockType("G", Groups(divisor=k)) for k in fractions]
    pool += [BlockType("B", bottleneck=b) for b in (2, 4)]
    pool += [BlockType("BG", Groups(count=g), bottleneck=2) for g in fixed]
    pool += [BlockType("BG", Groups(divisor=k), bottleneck=2) for k in fractions]
    return tuple(pool)


#: The paper's substitution pool (21 types): S; G(g) for g in 2, 4, 8, 16, N/16, N/8,
#: N/4, N/2, N; B(2), B(4); BG(2, g) for g in 2, 4, 8, 16, M/16, ..., M.
PAPER_POOL: tuple[BlockType, ...] = _pool()
