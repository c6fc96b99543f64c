"""The NDS CIFAR network: a stem, a stack of cells, a global-pool classifier.

The macro structure is the one the NDS cell models were trained with (pycls's
``NetworkCIFAR``, ported from DARTS):

* stem: 3x3 conv (no bias) from the image to ``3 * width`` channels, BatchNorm;
* ``depth`` cells; cells ``depth // 3`` and ``2 * depth // 3`` are reduction
  cells, which double the op width and halve the spatial size;
* each cell reads the outputs of the two previous cells (both the stem output
  for the first cell): the older one through a :class:`FactorizedReduce` when
  the previous cell reduced (so the two agree in size), through a 1x1
  ReLU-conv-BN otherwise; the newer one through a 1x1 ReLU-conv-BN;
* optional CIFAR auxiliary head on the output of cell ``2 * depth // 3``;
* global average pooling and a linear classifier.

Every cell's output (the concatenation of its concat states) passes through a
:class:`~zc_proxies.BlockProbe`, so ``fisher_potential`` sees one block per
cell. The forward pass returns the logits only; ``forward(x, return_aux=True)``
returns ``(logits, aux_logits)`` for training code that wants the auxiliary
loss. Drop-path is applied (in training mode only) with probability
``drop_prob``, 0 by default, so proxies see a deterministic network. Weights
keep PyTorch's default initialisation, as in pycls's NAS models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ArchError
from ...probes import BlockProbe
from .genotype import Genotype, NDSArch
from .ops import (
    FactorizedReduce,
    ReLUConvBN,
    factorized_reduce_param_count,
    make_op,
    op_param_count,
    relu_conv_bn_param_count,
)

STEM_MULTIPLIER = 3
AUX_CHANNELS = (128, 768)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, rescaling the rest (out of place)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


@dataclass(frozen=True)
class CellPlan:
    """Where a cell sits and its channel counts (shared by the builder and the parameter formula)."""

    index: int
    c_prev_prev: int
    c_prev: int
    channels: int
    reduction: bool
    reduction_prev: bool
    c_out: int


def reduction_indices(depth: int) -> tuple[int, ...]:
    """Indices of the reduction cells: ``depth // 3`` and ``2 * depth // 3`` (one cell if equal)."""
    return tuple(sorted({depth // 3, 2 * depth // 3}))


def aux_index(depth: int) -> int:
    """Index of the cell whose output feeds the auxiliary head."""
    return 2 * depth // 3


def cell_plans(genotype: Genotype, width: int, depth: int) -> Iterator[CellPlan]:
    """Channel bookkeeping of the cell stack, cell by cell."""
    c_prev_prev = c_prev = STEM_MULTIPLIER * width
    channels = width
    reduction_prev = False
    reductions = reduction_indices(depth)
    for i in range(depth):
        reduction = i in reductions
        if reduction:
            channels *= 2
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        plan = CellPlan(i, c_prev_prev, c_prev, channels, reduction, reduction_prev, len(concat) * channels)
        yield plan
        c_prev_prev, c_prev, reduction_prev = c_prev, plan.c_out, reduction


class Cell(nn.Module):
    """One NDS cell: preprocess both inputs, compute the nodes, concatenate the concat states."""

    def __init__(self, genotype: Genotype, plan: CellPlan) -> None:
        super().__init__()
        c = plan.channels
        if plan.reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(plan.c_prev_prev, c)
        else:
            self.preprocess0 = ReLUConvBN(plan.c_prev_prev, c, 1)
        self.preprocess1 = ReLUConvBN(plan.c_prev, c, 1)
        ops, concat = genotype.cell(plan.reduction)
        self.reduction = plan.reduction
        self.inputs = tuple(index for _, index in ops)
        self.concat = tuple(concat)
        self.ops = nn.ModuleList(
            make_op(name, c, 2 if plan.reduction and index < 2 else 1) for name, index in ops
        )
        self.out_channels = plan.c_out
        self.probe = BlockProbe()

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            node_sum = None
            for j in (2 * node, 2 * node + 1):
                op = self.ops[j]
                h = op(states[self.inputs[j]])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                node_sum = h if node_sum is None else node_sum + h
            states.append(node_sum)
        return self.probe(torch.cat([states[i] for i in self.concat], dim=1))


class AuxiliaryHeadCIFAR(nn.Module):
    """The CIFAR auxiliary classifier (expects an 8x8 input, as after two reductions of 32x32).

    Same layers as pycls/DARTS, except that the first ReLU is not in place: the
    head's input is also the next cells' input (and a BlockProbe's output).
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        mid, out = AUX_CHANNELS
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 2, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class NDSNetwork(nn.Module):
    """The NDS CIFAR network for one genotype, width and depth.

    Parameters
    ----------
    genotype
        Normal and reduction cells (a validated :class:`Genotype`).
    width
        Op channels of the first stage (``C``); the stem has ``3 * width``.
    depth
        Number of cells, reduction cells included.
    num_classes
        Classifier width.
    aux
        Whether to build the auxiliary head (its parameters count, but it is
        only run when ``forward(x, return_aux=True)`` asks for it).
    drop_prob
        Drop-path probability in training mode (0 by default).
    in_channels
        Image channels.
    """

    def __init__(
        self,
        genotype: Genotype,
        width: int,
        depth: int,
        num_classes: int = 10,
        aux: bool = False,
        drop_prob: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1 or num_classes < 1:
            raise ArchError(f"width, depth and num_classes must be positive, got {width}, {depth}, {num_classes}")
        self.genotype = genotype
        self.width = width
        self.depth = depth
        self.drop_prob = float(drop_prob)
        c_stem = STEM_MULTIPLIER * width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_stem),
        )
        self.cells = nn.ModuleList()
        c_aux = c_stem
        for plan in cell_plans(genotype, width, depth):
            self.cells.append(Cell(genotype, plan))
            if plan.index == aux_index(depth):
                c_aux = plan.c_out
        self.aux_index = aux_index(depth)
        self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes) if aux else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.cells[-1].out_channels, num_classes)

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        """Logits; with ``return_aux=True``, ``(logits, aux_logits)`` (None without an auxiliary head)."""
        s0 = s1 = self.stem(x)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_prob)
            if return_aux and i == self.aux_index and self.auxiliary_head is not None:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        return (logits, aux_logits) if return_aux else logits


def build_network(arch: NDSArch, num_classes: int = 10, drop_prob: float = 0.0) -> NDSNetwork:
    """A freshly initialised :class:`NDSNetwork` for a validated architecture."""
    return NDSNetwork(arch.genotype, arch.width, arch.depth, num_classes, aux=arch.aux, drop_prob=drop_prob)


def param_count(arch: NDSArch, num_classes: int = 10, in_channels: int = 3) -> int:
    """Trainable parameters of :func:`build_network`'s network, in closed form (no module built).

    Includes the auxiliary head when ``arch.aux`` is set (pycls counted every
    parameter of the model it trained, so NDS records do too).
    """
    width, depth, genotype = arch.width, arch.depth, arch.genotype
    c_stem = STEM_MULTIPLIER * width
    total = 9 * in_channels * c_stem + 2 * c_stem
    c_aux = c_stem
    c_last = c_stem
    for plan in cell_plans(genotype, width, depth):
        c = plan.channels
        if plan.reduction_prev:
            total += factorized_reduce_param_count(plan.c_prev_prev, c)
        else:
            total += relu_conv_bn_param_count(plan.c_prev_prev, c)
        total += relu_conv_bn_param_count(plan.c_prev, c)
        ops, _ = genotype.cell(plan.reduction)
        total += sum(op_param_count(name, c, 2 if plan.reduction and index < 2 else 1) for name, index in ops)
        if plan.index == aux_index(depth):
            c_aux = plan.c_out
        c_last = plan.c_out
    total += c_last * num_classes + num_classes
    if arch.aux:
        mid, out = AUX_CHANNELS
        total += c_aux * mid + 2 * mid + mid * out * 4 + 2 * out + out * num_classes + num_classes
    return total
