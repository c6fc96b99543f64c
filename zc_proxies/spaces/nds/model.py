"""The NDS cell networks: CIFAR and ImageNet variants of a stem, a stack of cells, a classifier.

The macro structures are the ones the NDS cell models were trained with:
pycls's NAS models (``pycls/models/nas/nas.py``, ported from DARTS), whose
``NetworkCIFAR`` builds the CIFAR network and ``NetworkImageNet`` the ImageNet
one. Both share the cell stack:

* ``depth`` cells; cells ``depth // 3`` and ``2 * depth // 3`` are reduction
  cells, which double the op width and halve the spatial size;
* each cell reads the outputs of the two previous cells: the older one through
  a :class:`FactorizedReduce` when the previous cell reduced (so the two agree
  in size), through a 1x1 ReLU-conv-BN otherwise; the newer one through a 1x1
  ReLU-conv-BN;
* optional auxiliary head on the output of cell ``2 * depth // 3``;
* global average pooling and a linear classifier.

They differ in the stem (and the auxiliary head):

* CIFAR (``imagenet=False``): a 3x3 conv (no bias) from the image to
  ``3 * width`` channels and a BatchNorm; both inputs of the first cell are its
  output. Auxiliary head for an 8x8 input.
* ImageNet (``imagenet=True``): three stride-2 3x3 convs, 224 px -> 28 px.
  ``stem0`` = conv s2 to ``width // 2`` channels, BN, ReLU, conv s2 to
  ``width``, BN (56 px); ``stem1`` = ReLU, conv s2, BN (28 px). The first cell
  reads ``stem0`` as its older input and ``stem1`` as its newer one, so it
  starts as if after a reduction (``FactorizedReduce`` on ``stem0``). Its cells
  run at 28, 14 and 7 px; the auxiliary head (pycls's ``AuxiliaryHeadImageNet``:
  ReLU, 5x5 average pool stride 2, 1x1 conv to 128, BN, ReLU, 2x2 conv to 768,
  ReLU, linear; no BatchNorm after the 768-channel conv, as in pycls and the
  DARTS ImageNet experiments) expects the 7x7 map of a 224 px image. The
  global pool is adaptive (pycls's classifier; the DARTS original's
  ``AvgPool2d(7)`` is the same at 224 px), so other input sizes work too.

Every cell's output (the concatenation of its concat states) passes through a
:class:`~zc_proxies.BlockProbe`, so ``fisher_potential`` sees one block per
cell. The forward pass returns the logits only; ``forward(x, return_aux=True)``
returns ``(logits, aux_logits)`` for training code that wants the auxiliary
loss. Drop-path is applied (in training mode only) with probability
``drop_prob``, 0 by default, so proxies see a deterministic network. Weights
keep PyTorch's default initialisation, as in pycls's NAS models.

:func:`param_count` and :func:`flops_count` give the parameters and FLOPs of a
network in closed form; with ``imagenet=True`` they equal the ``params`` and
``flops`` of every record of the NDS ImageNet cell sweeps.
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
    Size,
    conv_flops,
    factorized_reduce_flops,
    factorized_reduce_param_count,
    make_op,
    op_flops,
    op_param_count,
    relu_conv_bn_flops,
    relu_conv_bn_param_count,
    relu_flops,
    strided,
)

STEM_MULTIPLIER = 3
AUX_CHANNELS = (128, 768)
CIFAR_CLASSES = 10
IMAGENET_CLASSES = 1000
CIFAR_IMAGE_SIZE = 32
IMAGENET_IMAGE_SIZE = 224


def default_num_classes(imagenet: bool) -> int:
    """Classifier width of a variant: 1000 for ImageNet, 10 for CIFAR-10."""
    return IMAGENET_CLASSES if imagenet else CIFAR_CLASSES


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


def cell_plans(genotype: Genotype, width: int, depth: int, imagenet: bool = False) -> Iterator[CellPlan]:
    """Channel bookkeeping of the cell stack, cell by cell.

    CIFAR: both inputs of the first cell are the ``3 * width``-channel stem.
    ImageNet: they are ``stem0`` and ``stem1`` (``width`` channels each, the
    older one twice the size), so the first cell starts with ``reduction_prev``.
    """
    if imagenet:
        c_prev_prev = c_prev = width
        reduction_prev = True
    else:
        c_prev_prev = c_prev = STEM_MULTIPLIER * width
        reduction_prev = False
    channels = width
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


class AuxiliaryHeadImageNet(nn.Module):
    """The ImageNet auxiliary classifier of pycls (from DARTS), for the 7x7 map of a 224 px image.

    No BatchNorm after the 768-channel conv: DARTS left it out of the network
    its ImageNet experiments used, and pycls keeps it out. The first ReLU is
    not in place (see :class:`AuxiliaryHeadCIFAR`).
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        mid, out = AUX_CHANNELS
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def aux_head_param_count(channels: int, num_classes: int, imagenet: bool = False) -> int:
    """Parameters of the auxiliary head on a ``channels``-channel input."""
    mid, out = AUX_CHANNELS
    total = channels * mid + 2 * mid + mid * out * 4 + out * num_classes + num_classes
    return total if imagenet else total + 2 * out  # the CIFAR head has a BatchNorm after the 768-channel conv


def imagenet_stems(in_channels: int, width: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``stem0`` (conv s2 to ``width // 2``, BN, ReLU, conv s2 to ``width``, BN) and ``stem1`` (ReLU, conv s2, BN).

    pycls's ``stem1`` starts with an in-place ReLU, which also rectifies
    ``stem0``'s output, the first cell's older input; that input goes through a
    :class:`FactorizedReduce`, which starts with a ReLU, so the ReLU here is
    not in place and the result is the same.
    """
    half = width // 2
    stem0 = nn.Sequential(
        nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
    )
    stem1 = nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
    )
    return stem0, stem1


class NDSNetwork(nn.Module):
    """The NDS CIFAR or ImageNet network for one genotype, width and depth.

    Parameters
    ----------
    genotype
        Normal and reduction cells (a validated :class:`Genotype`).
    width
        Op channels of the first stage (``C``); the CIFAR stem has ``3 * width``,
        the ImageNet stems ``width // 2`` and ``width``.
    depth
        Number of cells, reduction cells included.
    num_classes
        Classifier width (default: 10 for CIFAR, 1000 for ImageNet).
    aux
        Whether to build the auxiliary head (its parameters count, but it is
        only run when ``forward(x, return_aux=True)`` asks for it).
    drop_prob
        Drop-path probability in training mode (0 by default).
    in_channels
        Image channels.
    imagenet
        Build pycls's ImageNet network (stride-2 stems ``stem0``/``stem1``,
        ImageNet auxiliary head) instead of the CIFAR one (``stem``).
    """

    def __init__(
        self,
        genotype: Genotype,
        width: int,
        depth: int,
        num_classes: int | None = None,
        aux: bool = False,
        drop_prob: float = 0.0,
        in_channels: int = 3,
        *,
        imagenet: bool = False,
    ) -> None:
        super().__init__()
        if num_classes is None:
            num_classes = default_num_classes(imagenet)
        if width < 1 or depth < 1 or num_classes < 1:
            raise ArchError(f"width, depth and num_classes must be positive, got {width}, {depth}, {num_classes}")
        if imagenet and width < 2:
            raise ArchError(f"the ImageNet network needs width >= 2 (its first stem conv has width // 2 channels), got {width}")
        self.genotype = genotype
        self.width = width
        self.depth = depth
        self.imagenet = bool(imagenet)
        self.drop_prob = float(drop_prob)
        if imagenet:
            self.stem0, self.stem1 = imagenet_stems(in_channels, width)
            c_aux = width
        else:
            c_aux = STEM_MULTIPLIER * width
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c_aux, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_aux),
            )
        self.cells = nn.ModuleList()
        for plan in cell_plans(genotype, width, depth, imagenet):
            self.cells.append(Cell(genotype, plan))
            if plan.index == aux_index(depth):
                c_aux = plan.c_out
        self.aux_index = aux_index(depth)
        head = AuxiliaryHeadImageNet if imagenet else AuxiliaryHeadCIFAR
        self.auxiliary_head = head(c_aux, num_classes) if aux else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.cells[-1].out_channels, num_classes)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first cell's two inputs: ``(stem, stem)`` for CIFAR, ``(stem0, stem1)`` for ImageNet."""
        if self.imagenet:
            s0 = self.stem0(x)
            return s0, self.stem1(s0)
        s = self.stem(x)
        return s, s

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        """Logits; with ``return_aux=True``, ``(logits, aux_logits)`` (None without an auxiliary head)."""
        s0, s1 = self.stems(x)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_prob)
            if return_aux and i == self.aux_index and self.auxiliary_head is not None:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        return (logits, aux_logits) if return_aux else logits


def build_network(
    arch: NDSArch, num_classes: int | None = None, drop_prob: float = 0.0, *, imagenet: bool = False
) -> NDSNetwork:
    """A freshly initialised :class:`NDSNetwork` for a validated architecture.

    ``imagenet=True`` builds the ImageNet network (``num_classes`` defaults to
    1000 then, to 10 for CIFAR).
    """
    return NDSNetwork(
        arch.genotype, arch.width, arch.depth, num_classes, aux=arch.aux, drop_prob=drop_prob, imagenet=imagenet
    )


def param_count(arch: NDSArch, num_classes: int | None = None, in_channels: int = 3, *, imagenet: bool = False) -> int:
    """Trainable parameters of :func:`build_network`'s network, in closed form (no module built).

    Includes the auxiliary head when ``arch.aux`` is set (pycls counted every
    parameter of the model it trained, so NDS records do too).
    """
    if num_classes is None:
        num_classes = default_num_classes(imagenet)
    width, depth, genotype = arch.width, arch.depth, arch.genotype
    if imagenet:
        half = width // 2
        total = 9 * in_channels * half + 2 * half + 9 * half * width + 2 * width  # stem0
        total += 9 * width * width + 2 * width  # stem1
        c_aux = c_last = width
    else:
        c_stem = STEM_MULTIPLIER * width
        total = 9 * in_channels * c_stem + 2 * c_stem
        c_aux = c_last = c_stem
    for plan in cell_plans(genotype, width, depth, imagenet):
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
        total += aux_head_param_count(c_aux, num_classes, imagenet)
    return total


def _cell_flops(genotype: Genotype, plan: CellPlan, size0: Size, size1: Size) -> tuple[int, Size]:
    """FLOPs of one cell whose inputs are ``size0`` (older) and ``size1`` (newer); and its output size."""
    c = plan.channels
    if plan.reduction_prev:
        total = factorized_reduce_flops(plan.c_prev_prev, c, size0)
    else:
        total = relu_conv_bn_flops(plan.c_prev_prev, c, size0)
    total += relu_conv_bn_flops(plan.c_prev, c, size1)
    out = strided(size1, 2) if plan.reduction else size1
    ops, _ = genotype.cell(plan.reduction)
    for name, index in ops:
        stride = 2 if plan.reduction and index < 2 else 1
        total += op_flops(name, c, stride, size1 if index < 2 else out)
    return total, out


def flops_count(
    arch: NDSArch,
    num_classes: int | None = None,
    in_channels: int = 3,
    *,
    imagenet: bool = False,
    image_size: int | Size | None = None,
) -> int:
    """FLOPs of :func:`build_network`'s network for one image, as the NDS records count them.

    The rule (:data:`~zc_proxies.spaces.nds.ops.FLOPS_RULE`) counts conv and
    linear multiply-adds (a dilated conv as if its output were larger, a
    linear's bias too), ``k * k`` per output element of a pooling op, one per
    element of a ReLU's input and of the global pool's input, nothing for
    BatchNorm, sums and concatenations. It is the network in evaluation mode:
    the auxiliary head, which runs only in training, is not counted.
    ``image_size`` defaults to 224 for ImageNet and 32 for CIFAR.

    With ``imagenet=True`` this equals the stored ``flops`` of every record of
    the NDS ImageNet cell sweeps (DARTS, ENAS, NASNet, PNAS, Amoeba and the
    DARTS fixed-width/depth and lr-wd reruns). The CIFAR count applies the same
    rule to the CIFAR network; no CIFAR record was available to check it on.
    """
    if num_classes is None:
        num_classes = default_num_classes(imagenet)
    if image_size is None:
        image_size = IMAGENET_IMAGE_SIZE if imagenet else CIFAR_IMAGE_SIZE
    size: Size = (image_size, image_size) if isinstance(image_size, int) else (image_size[0], image_size[1])
    width, depth, genotype = arch.width, arch.depth, arch.genotype
    if imagenet:
        half = width // 2
        size_a = strided(size, 2)
        size0 = strided(size_a, 2)
        size1 = strided(size0, 2)
        total = conv_flops(in_channels, half, 3, 2, 1, size) + relu_flops(half, size_a)
        total += conv_flops(half, width, 3, 2, 1, size_a)
        total += relu_flops(width, size0) + conv_flops(width, width, 3, 2, 1, size0)
        c_last = width
    else:
        c_last = STEM_MULTIPLIER * width
        total = conv_flops(in_channels, c_last, 3, 1, 1, size)
        size0 = size1 = size
    for plan in cell_plans(genotype, width, depth, imagenet):
        cell, out = _cell_flops(genotype, plan, size0, size1)
        total += cell
        size0, size1 = size1, out
        c_last = plan.c_out
    total += c_last * size1[0] * size1[1]  # global average pool
    return total + c_last * num_classes + num_classes
