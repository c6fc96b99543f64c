"""The five NAS-Bench-201 cell operations, as the benchmark trained them.

Inside a cell every edge maps C channels to C channels at stride 1:

``none``
    The zero op: the input times 0 (kept in the graph, as in the benchmark's
    code, so gradients through it are exactly zero rather than absent).
``skip_connect``
    Identity.
``nor_conv_1x1`` / ``nor_conv_3x3``
    ReLU -> Conv (bias-free, 'same' padding) -> BatchNorm (affine, with
    running statistics).
``avg_pool_3x3``
    3x3 average pooling, stride 1, padding 1, ``count_include_pad=False``.

Attribute names (``op`` holding a ReLU-Conv-BN ``Sequential``) follow the
benchmark's modules so that state dicts of the official trained networks load
into ours unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ArchError
from .arch import OP_NAMES


class ReLUConvBN(nn.Module):
    """ReLU, bias-free convolution, affine BatchNorm: the benchmark's conv op."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: an all-zero output of the input's shape (``x * 0``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class AvgPool3x3(nn.Module):
    """The ``avg_pool_3x3`` op: stride 1, padding 1, padding excluded from the average."""

    def __init__(self) -> None:
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def make_op(name: str, channels: int) -> nn.Module:
    """A freshly initialised module for cell operation ``name`` on ``channels`` channels."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return AvgPool3x3()
    raise ArchError(f"unknown NAS-Bench-201 op {name!r} (ops: {', '.join(OP_NAMES)})")
