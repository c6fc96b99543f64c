"""The NAS-Bench-201 network: the benchmark's own macro skeleton around a searched cell.

Layout (Dong & Yang, ICLR 2020, with C = 16 and N = 5)::

    stem    conv3x3(3 -> C, no bias) + BN
    stage 1 N cells on C channels
            residual reduction block C -> 2C (stride 2)
    stage 2 N cells on 2C channels
            residual reduction block 2C -> 4C (stride 2)
    stage 3 N cells on 4C channels
    head    BN -> ReLU -> global average pool -> Linear(4C -> num_classes)

A cell computes node j = sum over i < j of op_{j<-i}(node i) and outputs
node 3. A reduction block is ReLU-Conv3x3(stride 2)-BN -> ReLU-Conv3x3-BN,
added to a shortcut of 2x2 average pooling (stride 2) and a bias-free 1x1
conv. The network returns logits only.

Blocks for ``fisher_potential``: each of the 15 cells and each of the 2
reduction blocks carries one :class:`~zc_proxies.BlockProbe`, 17 in all.

* In a cell the probe sits on the cell output (the summed node 3). The cell
  has no residual add of its own (any identity path is the searched
  ``skip_connect`` op, part of the block), so its output is the block output.
* In a reduction block the probe sits after the second conv + BN, before the
  shortcut is added, as BlockSwap places it in ResNet blocks.

Skipping dead ops: a :class:`Cell` says which of its edges cannot change the
score of a proxy of a given network scope (:meth:`Cell.dead_ops`, rules in
:mod:`.liveness`), and :func:`~zc_proxies.score` drops those on its private copy
for the proxies that allow it (:attr:`~zc_proxies.proxies.base.ProxySpec.network`).
The network is always built whole, so the weights of the ops that stay are the
ones the whole network has.

Weights use PyTorch's default initialisation (the benchmark applies none of
its own). Module names match the official ``TinyNetwork`` (``stem``,
``cells.<k>.layers.<e>``, ``cells.<k>.conv_a`` ..., ``lastact``,
``classifier``), so an official trained state dict loads with
``load_state_dict``; the probes hold no parameters or buffers.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ModelError
from ...probes import BlockProbe
from ...proxies.base import LIVE
from .arch import EDGES, NUM_NODES, parse_arch
from .liveness import ZERO_PRESERVING, dead_ops
from .ops import ReLUConvBN, make_op

#: Channels of the first stage and cells per stage, as in the benchmark.
C_STEM = 16
CELLS_PER_STAGE = 5

#: Kernel size of each cell op that holds parameters (a ReLU-Conv-BN); the other ops hold none.
CONV_KERNELS: dict[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class DroppedOp(nn.Module):
    """Stands in for a cell op that was dropped because it cannot change the score (holds nothing)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ModelError(f"the {self.op} op of this cell was dropped (it cannot change the score of the proxies "
                         "this copy is for) and cannot run")

    def extra_repr(self) -> str:
        return f"dropped {self.op}"


def _shift_is_zero(op: nn.Module) -> bool:
    """Whether a ReLU-Conv-BN maps zeros to zeros: conv bias (if any), BatchNorm shift and running mean all 0."""
    conv, bn = op.op[1], op.op[2]
    zero = [t for t in (conv.bias, bn.bias, bn.running_mean) if t is not None]
    return all(not bool(t.detach().any()) for t in zero)


class Cell(nn.Module):
    """One searched cell on ``channels`` channels (stride 1), probed at its output.

    Parameters
    ----------
    ops
        Six op names in :data:`~zc_proxies.spaces.nb201.arch.EDGES` order.
    channels
        Channels of the input, of every node and of the output.

    Attributes
    ----------
    kept
        Per edge, whether ``forward`` computes it; all True unless
        :meth:`drop_ops` dropped some. A node without a computed edge is zeros.
    """

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        super().__init__()
        self.ops = tuple(ops)
        self.layers = nn.ModuleList(make_op(op, channels) for op in self.ops)
        self.probe = BlockProbe()
        self.kept: tuple[bool, ...] = (True,) * len(self.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # node j = op_{j<-0}(node 0) + op_{j<-1}(node 1) + ..., added left to right; dropped edges add
        # exact zeros in the whole cell, so leaving them out changes no value
        nodes: list[torch.Tensor | None] = [x]
        k = 0
        for j in range(1, NUM_NODES + 1):
            total = None
            for i in range(j):
                if self.kept[k + i]:
                    source = nodes[i] if nodes[i] is not None else x.mul(0.0)
                    term = self.layers[k + i](source)
                    total = term if total is None else total + term
            nodes.append(total)
            k += j
        out = nodes[-1]
        # an output of zeros stays tied to the input, as the zero op ties it in the whole cell
        return self.probe(out if out is not None else x.mul(0.0))

    def dead_ops(self, scope: str) -> frozenset[int]:
        """Edges holding an op other than ``none`` that a proxy of network ``scope`` does not need (:mod:`.liveness`).

        Whether a ReLU-Conv-BN of zeros gives zeros is read off its weights
        (conv bias, BatchNorm shift and running mean 0, as initialised), so a
        cell with trained weights drops only what stays exact for it. ``none``
        edges are not listed: skipping one saves only a multiplication by zero,
        so a cell with nothing else to drop is scored whole, with the proxies
        that need it whole (one shared copy instead of two).
        """
        zero_preserving = None
        if scope == LIVE:  # only "live" skips ops because their input is zeros
            zero_preserving = [op in ZERO_PRESERVING or (isinstance(layer, ReLUConvBN) and _shift_is_zero(layer))
                               for op, layer in zip(self.ops, self.layers)]
        return frozenset(k for k in dead_ops(self.ops, scope, zero_preserving) if self.kept[k])

    def drop_ops(self, ops: frozenset[int]) -> None:
        """Stop computing the edges ``ops`` (from :meth:`dead_ops`) and every ``none`` edge, in place.

        The dropped ops' modules become :class:`DroppedOp`. A ``none`` edge adds
        zeros and passes no gradient, so it is left out too: that is exact for
        every scope but ``"whole"``, for which nothing is ever dropped.
        """
        for k in ops:
            self.layers[k] = DroppedOp(self.ops[k])
        self.kept = tuple(keep and k not in ops and op != "none"
                          for k, (op, keep) in enumerate(zip(self.ops, self.kept)))

    def extra_repr(self) -> str:
        return ", ".join(f"{j}<-{i}: {op}" + ("" if keep else " (dropped)")
                         for (j, i), op, keep in zip(EDGES, self.ops, self.kept))


class ReductionBlock(nn.Module):
    """The ResNet basic block between stages: halves the resolution, sets ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, stride=1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )
        self.probe = BlockProbe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.probe(self.conv_b(self.conv_a(x)))


class NB201Network(nn.Module):
    """A NAS-Bench-201 network for one cell; ``forward`` returns ``(N, num_classes)`` logits.

    Parameters
    ----------
    arch
        The official arch string (checked; see :func:`~zc_proxies.spaces.nb201.arch.parse_arch`).
    num_classes
        Outputs of the classifier: 10 (CIFAR-10), 100 (CIFAR-100), 120 (ImageNet16-120).
    channels, cells_per_stage
        C and N of the skeleton; the benchmark's values are the defaults.
    """

    def __init__(self, arch: str, num_classes: int, channels: int = C_STEM,
                 cells_per_stage: int = CELLS_PER_STAGE) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("channels", channels),
                            ("cells_per_stage", cells_per_stage)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"{name} must be a positive int, got {value!r}")
        self.arch = arch
        self.num_classes = num_classes
        ops = parse_arch(arch)
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                blocks.append(ReductionBlock(c, 2 * c))
                c *= 2
            blocks.extend(Cell(ops, c) for _ in range(cells_per_stage))
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.cells:
            x = block(x)
        x = self.global_pooling(self.lastact(x)).flatten(1)
        return self.classifier(x)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}"


def _conv_bn_params(c_in: int, c_out: int, kernel: int) -> int:
    """A bias-free ``kernel`` x ``kernel`` conv and an affine BatchNorm (scale and shift per channel)."""
    return kernel * kernel * c_in * c_out + 2 * c_out


def parameter_count(arch: str, num_classes: int, channels: int = C_STEM,
                    cells_per_stage: int = CELLS_PER_STAGE) -> int:
    """Trainable parameters of ``NB201Network(arch, num_classes, ...)``, in closed form (no module built).

    Loading the stored table compares its parameter counts with this on a few
    rows, which must cost microseconds, not the ~20 ms of building a network
    (even on the ``meta`` device). It follows :class:`NB201Network` layer by
    layer: stem conv + BN; per stage, each cell's conv ops; each reduction
    block's two conv + BN and its 1x1 shortcut conv; the last BN and the
    classifier. The tests check it against built networks.
    """
    ops = parse_arch(arch)
    total = _conv_bn_params(3, channels, 3)
    c = channels
    for stage in range(3):
        if stage > 0:
            total += _conv_bn_params(c, 2 * c, 3) + _conv_bn_params(2 * c, 2 * c, 3) + c * 2 * c
            c *= 2
        total += cells_per_stage * sum(_conv_bn_params(c, c, CONV_KERNELS[op]) for op in ops if op in CONV_KERNELS)
    return total + 2 * c + c * num_classes + num_classes
