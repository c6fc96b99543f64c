"""The NAS-Bench-101 network in PyTorch, built as the official TensorFlow code builds it.

Network (official defaults): a 3x3 conv-BN-ReLU stem with 128 channels; three
stacks of three cells each; before the second and third stack a 2x2 max-pool
with stride 2 and a doubling of the channels; global average pooling; a dense
layer to the classes.

Inside a cell with ``C`` output channels:

* Channels per vertex (:func:`vertex_channels`): ``C`` is split among the
  interior vertices that feed the output, as evenly as possible, the remainder
  going one channel each to the earliest of them; every other interior vertex
  takes the largest channel count among its interior successors.
* An interior vertex sums its inputs: the outputs of earlier interior vertices,
  truncated to its own channel count (they have at most one channel more), and,
  if the cell input feeds it, a 1x1 conv-BN-ReLU projection of the cell input.
  It then applies its op: 3x3 or 1x1 conv-BN-ReLU, or a 3x3 max-pool (stride 1).
* The output concatenates (in vertex order) the vertices that feed it; if the
  cell input also feeds the output, a 1x1 projection of the input to ``C``
  channels is added. A cell of input and output only is that projection.

Convolutions have no bias; BatchNorm has a scale and a shift (two trainable
parameters per channel, TF's ``center=True, scale=True``), epsilon 1e-5 and
TF momentum 0.997 (PyTorch momentum 0.003). Weights are initialised as the
official code does: variance scaling (fan-in, truncated normal) for convs,
Glorot uniform for the dense layer, zero biases.

Each cell's output passes through a :class:`~zc_proxies.probes.BlockProbe`, so
``fisher_potential`` sees one block per cell (nine in all).

Nothing here is dead for any proxy (unlike NAS-Bench-201 cells, see
:meth:`zc_proxies.spaces.nb201.model.Cell.dead_ops`), so these cells offer no
ops to skip: a built cell is pruned (every vertex on an input -> output path),
there is no zero op, and every channel of every vertex is read (the output
concatenates a vertex whole; a vertex that does not feed the output has the
largest channel count among its successors, so one of them reads all of it).
``tests/test_live_pruning.py`` checks this on all 423,624 cells.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from ...probes import BlockProbe
from .spec import CONV1X1, CONV3X3, CellSpec

STEM_CHANNELS = 128
NUM_STACKS = 3
CELLS_PER_STACK = 3
BN_EPSILON = 1e-5
BN_MOMENTUM_TF = 0.997

DeviceLike = Union[torch.device, str, None]

# TF's truncated normal keeps draws within 2 standard deviations; dividing by this
# constant (the std of a unit normal truncated there) restores the requested variance.
_TRUNC_STD = 0.87962566103423978

# Interior ops that are a conv-BN-ReLU, by kernel size (max-pool has no parameters).
_KERNELS = {CONV3X3: 3, CONV1X1: 1}


def vertex_channels(in_channels: int, out_channels: int, matrix: Sequence[Sequence[int]]) -> list[int]:
    """Channel count of every vertex of a pruned cell (the official splitting rule)."""
    n = len(matrix)
    channels = [0] * n
    channels[0], channels[n - 1] = in_channels, out_channels
    if n == 2:
        return channels
    last = n - 1
    feeders = [v for v in range(1, last) if matrix[v][last]]
    share, extra = divmod(out_channels, len(feeders))
    for v in feeders:
        channels[v] = share + (1 if extra > 0 else 0)
        extra -= 1
    for v in range(last - 1, 0, -1):
        if not matrix[v][last]:
            channels[v] = max(channels[w] for w in range(v + 1, last) if matrix[v][w])
    return channels


@dataclass(frozen=True)
class ConvLayer:
    """One conv-BN-ReLU of a cell: which vertex it serves and its shape."""

    name: str  # "op<v>" for vertex v's own conv, "proj<v>" for the input projection feeding v
    in_channels: int
    out_channels: int
    kernel: int

    @property
    def num_params(self) -> int:
        """Conv weights (no bias) plus BatchNorm scale and shift."""
        return self.kernel * self.kernel * self.in_channels * self.out_channels + 2 * self.out_channels


def cell_layers(cell: CellSpec, in_channels: int, out_channels: int) -> list[ConvLayer]:
    """The conv-BN-ReLU layers that :class:`Cell` creates, in creation order.

    This is the single description of a cell's shape: :class:`Cell` builds its
    modules from it, and :func:`parameter_count` sums it without building.
    """
    n = cell.num_vertices
    ch = vertex_channels(in_channels, out_channels, cell.matrix)
    layers = [ConvLayer(f"op{v}", ch[v], ch[v], _KERNELS[cell.ops[v]])
              for v in range(1, n - 1) if cell.ops[v] in _KERNELS]
    layers += [ConvLayer(f"proj{v}", in_channels, ch[v], 1) for v in range(1, n) if cell.matrix[0][v]]
    return layers


def stack_channels(stem_channels: int = STEM_CHANNELS, num_stacks: int = NUM_STACKS,
                   cells_per_stack: int = CELLS_PER_STACK) -> list[tuple[int, int]]:
    """``(in_channels, out_channels)`` of every cell of the network, in order."""
    pairs = []
    in_ch = out_ch = stem_channels
    for stack in range(num_stacks):
        if stack > 0:
            out_ch *= 2
        for _ in range(cells_per_stack):
            pairs.append((in_ch, out_ch))
            in_ch = out_ch
    return pairs


def parameter_count(cell: CellSpec, num_classes: int = 10) -> int:
    """Trainable parameters of :class:`NB101Network` for ``cell``, summed from :func:`cell_layers`."""
    total = ConvLayer("stem", 3, STEM_CHANNELS, 3).num_params
    pairs = stack_channels()
    for (cin, cout), times in Counter(pairs).items():  # identical cells are counted once
        total += times * sum(layer.num_params for layer in cell_layers(cell, cin, cout))
    final = pairs[-1][1]
    return total + final * num_classes + num_classes


class _TFConv2d(nn.Conv2d):
    """Conv2d initialised as TF's ``variance_scaling_initializer()`` (fan-in, truncated normal)."""

    def reset_parameters(self) -> None:
        if self.weight.is_meta:  # nothing to draw; keeps meta-device builds cheap
            return
        std = math.sqrt(1.0 / self.weight[0].numel()) / _TRUNC_STD
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class _TFLinear(nn.Linear):
    """Linear initialised as TF's ``tf.layers.dense`` (Glorot uniform weights, zero bias)."""

    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class ConvBnRelu(nn.Sequential):
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU, as the official ``conv_bn_relu``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, device: DeviceLike = None) -> None:
        super().__init__(
            _TFConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False, device=device),
            nn.BatchNorm2d(out_channels, eps=BN_EPSILON, momentum=1.0 - BN_MOMENTUM_TF, device=device),
            nn.ReLU(inplace=False),
        )


class Cell(nn.Module):
    """One NAS-Bench-101 module (cell) for a pruned :class:`CellSpec`."""

    def __init__(self, cell: CellSpec, in_channels: int, out_channels: int, device: DeviceLike = None) -> None:
        super().__init__()
        n = cell.num_vertices
        self.num_vertices = n
        self.channels = vertex_channels(in_channels, out_channels, cell.matrix)
        self.interior_inputs = [[u for u in range(1, v) if cell.matrix[u][v]] for v in range(n)]
        self.from_input = [bool(cell.matrix[0][v]) for v in range(n)]
        self.to_output = [v for v in range(1, n - 1) if cell.matrix[v][n - 1]]
        convs = {layer.name: ConvBnRelu(layer.in_channels, layer.out_channels, layer.kernel, device)
                 for layer in cell_layers(cell, in_channels, out_channels)}
        self.ops = nn.ModuleList([nn.Identity()] + [
            convs[f"op{v}"] if f"op{v}" in convs else nn.MaxPool2d(3, stride=1, padding=1)
            for v in range(1, n - 1)
        ])
        # Projections of the cell input, keyed by the vertex they feed (the output included).
        self.proj = nn.ModuleDict({name[4:]: m for name, m in convs.items() if name.startswith("proj")})
        self.probe = BlockProbe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.num_vertices
        values: list[torch.Tensor] = [x]
        for v in range(1, n - 1):
            c = self.channels[v]
            terms = [values[u][:, :c] if values[u].shape[1] > c else values[u] for u in self.interior_inputs[v]]
            if self.from_input[v]:
                terms.append(self.proj[str(v)](x))
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            values.append(self.ops[v](total))
        if self.to_output:
            out = values[self.to_output[0]] if len(self.to_output) == 1 else torch.cat(
                [values[v] for v in self.to_output], dim=1)
            if self.from_input[n - 1]:
                out = out + self.proj[str(n - 1)](x)
        else:
            out = self.proj[str(n - 1)](x)
        return self.probe(out)


class NB101Network(nn.Module):
    """The full NAS-Bench-101 network for one pruned cell (official sizes).

    Parameters
    ----------
    cell
        A pruned, validated cell (see :func:`..spec.canonical_cell`).
    num_classes
        Outputs of the dense head.
    device
        Where to create the parameters; ``"meta"`` creates shapes only (no
        memory, no initialisation), which is enough to count parameters.
    """

    def __init__(self, cell: CellSpec, num_classes: int = 10, device: DeviceLike = None) -> None:
        super().__init__()
        self.cell = cell
        layers: list[nn.Module] = [ConvBnRelu(3, STEM_CHANNELS, 3, device)]
        previous_out = STEM_CHANNELS
        for cin, cout in stack_channels():
            if cout != previous_out:
                # Downsampling between stacks; TF 'same' padding rounds odd sizes up, as ceil_mode does.
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            layers.append(Cell(cell, cin, cout, device))
            previous_out = cout
        self.layers = nn.Sequential(*layers)
        # A module (not x.mean), so proxies that read the features before global pooling (zen) can find them.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _TFLinear(previous_out, num_classes, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.layers(x)).flatten(1))


def build_network(cell: CellSpec, num_classes: int = 10, device: DeviceLike = None) -> NB101Network:
    """Build the network for a pruned cell; ``device="meta"`` builds it without memory or init cost."""
    return NB101Network(cell, num_classes, device=device)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (works on the meta device)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
