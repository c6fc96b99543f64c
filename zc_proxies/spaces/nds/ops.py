"""The candidate operations of the NDS cell spaces, and their parameter counts.

Every op used by the five NDS cell design spaces (Radosavovic et al., "On
Network Design Spaces for Visual Recognition", ICCV 2019) is built here with the
structure of the network code the NDS models were trained with (pycls's NAS
ops, themselves taken from DARTS, Liu et al. 2019):

* ``sep_conv_KxK``: twice (ReLU, depthwise KxK conv, pointwise 1x1 conv, BN);
  only the first depthwise conv has the op's stride.
* ``dil_conv_KxK``: once (ReLU, depthwise KxK conv with dilation 2, 1x1 conv, BN).
* ``dil_sep_conv_3x3``: ``sep_conv_3x3`` with both depthwise convs dilated by 2.
* ``conv_1x1`` / ``conv_3x3``: ReLU, conv, BN.
* ``conv_3x1_1x3`` / ``conv_7x1_1x7``: ReLU, a 1xK conv (stride along the width),
  a Kx1 conv (stride along the height), one BN.
* ``avg_pool_3x3`` (padding not counted), ``max_pool_KxK`` (K = 3, 5, 7).
* ``skip_connect``: identity, or a :class:`FactorizedReduce` when it must stride.
* ``none``: zeros of the (strided) input's shape.

All convolutions are bias-free and every BatchNorm is affine. Ops never change
the channel count; a stride of 2 halves the spatial size.

:func:`op_param_count` gives the number of parameters of each op in closed form,
so stored parameter counts can be checked for thousands of records without
building networks; the tests check it against the built modules.

:func:`op_flops` gives each op's FLOPs under the counting rule of the NDS
records (see :data:`FLOPS_RULE`), also in closed form.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import nn

from ...errors import ArchError

# The op vocabularies of the five spaces, as the NDS paper (Table 1 and its
# appendix) and pycls's ``nas/genotypes.py`` list them.
DARTS_OPS = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
ENAS_OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
NASNET_OPS = (
    "skip_connect", "conv_3x1_1x3", "conv_7x1_1x7", "dil_conv_3x3", "avg_pool_3x3",
    "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3",
    "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
)
PNAS_OPS = (
    "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7",
    "skip_connect", "avg_pool_3x3", "max_pool_3x3", "dil_conv_3x3",
)
AMOEBA_OPS = (
    "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
    "avg_pool_3x3", "max_pool_3x3", "dil_sep_conv_3x3", "conv_7x1_1x7",
)

#: Vocabulary of each NDS cell space, keyed by the family name used in the NDS file names.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "DARTS": DARTS_OPS,
    "ENAS": ENAS_OPS,
    "NASNet": NASNET_OPS,
    "PNAS": PNAS_OPS,
    "Amoeba": AMOEBA_OPS,
}


class ReLUConvBN(nn.Sequential):
    """ReLU, a bias-free KxK convolution, affine BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class FactorizedReduce(nn.Module):
    """Halve the spatial size without losing every other pixel.

    Two stride-2 1x1 convolutions, each producing half the output channels, see
    the input at even and at odd offsets (the second one's input is shifted by
    one pixel, zero-padded at the bottom/right); their outputs are concatenated
    and batch-normalised. ``c_out`` must be even.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ArchError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def _depthwise_pointwise(c: int, kernel: int, stride: int, dilation: int) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    return [
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, kernel, stride=stride, padding=padding, dilation=dilation, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
    ]


class SepConv(nn.Sequential):
    """Two stacked (ReLU, depthwise conv, 1x1 conv, BN) units; the first carries the stride."""

    def __init__(self, c: int, kernel: int, stride: int, dilation: int = 1) -> None:
        super().__init__(
            *_depthwise_pointwise(c, kernel, stride, dilation),
            *_depthwise_pointwise(c, kernel, 1, dilation),
        )


class DilConv(nn.Sequential):
    """One (ReLU, depthwise conv dilated by 2, 1x1 conv, BN) unit."""

    def __init__(self, c: int, kernel: int, stride: int) -> None:
        super().__init__(*_depthwise_pointwise(c, kernel, stride, 2))


class FactorizedConv(nn.Sequential):
    """ReLU, a 1xK conv striding along the width, a Kx1 conv striding along the height, BN."""

    def __init__(self, c: int, kernel: int, stride: int) -> None:
        pad = kernel // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, (1, kernel), stride=(1, stride), padding=(0, pad), bias=False),
            nn.Conv2d(c, c, (kernel, 1), stride=(stride, 1), padding=(pad, 0), bias=False),
            nn.BatchNorm2d(c),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the input, subsampled by the stride."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return x.mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


OpFactory = Callable[[int, int], nn.Module]

#: name -> factory(channels, stride) for every op of the five vocabularies.
OPS: dict[str, OpFactory] = {
    "none": lambda c, s: Zero(s),
    "skip_connect": lambda c, s: nn.Identity() if s == 1 else FactorizedReduce(c, c),
    "avg_pool_3x3": lambda c, s: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda c, s: nn.MaxPool2d(3, stride=s, padding=1),
    "max_pool_5x5": lambda c, s: nn.MaxPool2d(5, stride=s, padding=2),
    "max_pool_7x7": lambda c, s: nn.MaxPool2d(7, stride=s, padding=3),
    "conv_1x1": lambda c, s: ReLUConvBN(c, c, 1, s, 0),
    "conv_3x3": lambda c, s: ReLUConvBN(c, c, 3, s, 1),
    "conv_3x1_1x3": lambda c, s: FactorizedConv(c, 3, s),
    "conv_7x1_1x7": lambda c, s: FactorizedConv(c, 7, s),
    "sep_conv_3x3": lambda c, s: SepConv(c, 3, s),
    "sep_conv_5x5": lambda c, s: SepConv(c, 5, s),
    "sep_conv_7x7": lambda c, s: SepConv(c, 7, s),
    "dil_sep_conv_3x3": lambda c, s: SepConv(c, 3, s, dilation=2),
    "dil_conv_3x3": lambda c, s: DilConv(c, 3, s),
    "dil_conv_5x5": lambda c, s: DilConv(c, 5, s),
}


def unknown_op_message(name: object, known: tuple[str, ...] | list[str], where: str = "") -> str:
    """An error message for an op name outside ``known``, with close-match hints."""
    close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"{where}unknown op {name!r}{hint} (known: {', '.join(known)})"


def make_op(name: str, channels: int, stride: int) -> nn.Module:
    """Build op ``name`` for ``channels`` channels; ``stride`` is 1 or 2."""
    if name not in OPS:
        raise ArchError(unknown_op_message(name, tuple(OPS)))
    if stride not in (1, 2):
        raise ArchError(f"op stride must be 1 or 2, got {stride}")
    return OPS[name](channels, stride)


def _bn(c: int) -> int:
    return 2 * c


def op_param_count(name: str, channels: int, stride: int) -> int:
    """Trainable parameters of op ``name`` at ``channels`` channels, in closed form."""
    c = channels
    if name not in OPS:
        raise ArchError(unknown_op_message(name, tuple(OPS)))
    if name in ("none", "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else factorized_reduce_param_count(c, c)
    if name in ("conv_1x1", "conv_3x3"):
        k = 1 if name == "conv_1x1" else 3
        return k * k * c * c + _bn(c)
    if name in ("conv_3x1_1x3", "conv_7x1_1x7"):
        k = 3 if name == "conv_3x1_1x3" else 7
        return 2 * k * c * c + _bn(c)
    kernel = int(name[-1])
    unit = kernel * kernel * c + c * c + _bn(c)  # depthwise + pointwise + BN
    if name.startswith("dil_conv"):
        return unit
    return 2 * unit  # sep_conv_*, dil_sep_conv_3x3


def factorized_reduce_param_count(c_in: int, c_out: int) -> int:
    """Parameters of :class:`FactorizedReduce` (two 1x1 convs to ``c_out // 2`` each, BN)."""
    return 2 * c_in * (c_out // 2) + _bn(c_out)


def relu_conv_bn_param_count(c_in: int, c_out: int, kernel: int = 1) -> int:
    """Parameters of :class:`ReLUConvBN`."""
    return kernel * kernel * c_in * c_out + _bn(c_out)


# -- FLOPs, as the NDS records count them -----------------------------------------------------
#: The counting rule behind the ``flops`` of the NDS records (reverse-engineered: it reproduces
#: every record of the five ImageNet cell sweeps and the two DARTS ImageNet reruns). Each module
#: is counted from the spatial size of its input, one image:
FLOPS_RULE = """\
conv:   kh * kw * (c_in / groups) * c_out * h_out * w_out, where h_out = (h + 2 * pad - kh) // stride + 1
        ignores the dilation (a dilated conv counts a larger output than it makes); convs here have no bias
pool:   k * k * c * h_out * w_out for avg / max pooling; the global average pool counts c * h * w
relu:   one per input element
linear: c_in * c_out + c_out (the bias counts)
batchnorm, identity, zero, sums, concatenations, dropout: nothing"""

Size = tuple[int, int]


def conv_out(size: Size, kernel: int | Size, stride: int | Size = 1, padding: int | Size = 0) -> Size:
    """Output size by the counting rule: ``(h + 2 * pad - k) // stride + 1`` (dilation ignored)."""
    k, s, p = (_pair(v) for v in (kernel, stride, padding))
    return ((size[0] + 2 * p[0] - k[0]) // s[0] + 1, (size[1] + 2 * p[1] - k[1]) // s[1] + 1)


def _pair(v: int | Size) -> Size:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def strided(size: Size, stride: int) -> Size:
    """Spatial size every op (and :class:`FactorizedReduce`) outputs at ``stride``: ``ceil(size / stride)``."""
    return ((size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1)


def conv_flops(c_in: int, c_out: int, kernel: int | Size, stride: int | Size, padding: int | Size,
               size: Size, groups: int = 1) -> int:
    """FLOPs of a bias-free conv on a ``size`` input, by the counting rule (dilation ignored)."""
    k = _pair(kernel)
    h, w = conv_out(size, k, stride, padding)
    return k[0] * k[1] * (c_in // groups) * c_out * h * w


def relu_flops(c: int, size: Size) -> int:
    """FLOPs of a ReLU on ``c`` channels of ``size``: one per element."""
    return c * size[0] * size[1]


def factorized_reduce_flops(c_in: int, c_out: int, size: Size) -> int:
    """FLOPs of :class:`FactorizedReduce` on a ``size`` input (ReLU, two stride-2 1x1 convs)."""
    return relu_flops(c_in, size) + 2 * conv_flops(c_in, c_out // 2, 1, 2, 0, size)


def relu_conv_bn_flops(c_in: int, c_out: int, size: Size, kernel: int = 1, stride: int = 1, padding: int = 0) -> int:
    """FLOPs of :class:`ReLUConvBN` on a ``size`` input."""
    return relu_flops(c_in, size) + conv_flops(c_in, c_out, kernel, stride, padding, size)


def _dw_pw_flops(c: int, kernel: int, stride: int, dilation: int, size: Size) -> tuple[int, Size]:
    """FLOPs and real output size of one (ReLU, depthwise conv, 1x1 conv, BN) unit."""
    padding = dilation * (kernel - 1) // 2
    out = strided(size, stride)
    flops = relu_flops(c, size) + conv_flops(c, c, kernel, stride, padding, size, groups=c) + c * c * out[0] * out[1]
    return flops, out


def op_flops(name: str, channels: int, stride: int, size: Size) -> int:
    """FLOPs of op ``name`` at ``channels`` channels on a ``size`` (h, w) input, by :data:`FLOPS_RULE`."""
    c = channels
    if name not in OPS:
        raise ArchError(unknown_op_message(name, tuple(OPS)))
    out = strided(size, stride)
    if name == "none":
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else factorized_reduce_flops(c, c, size)
    if "pool" in name:  # avg_pool_3x3, max_pool_KxK
        kernel = int(name[-1])
        return kernel * kernel * c * out[0] * out[1]
    if name in ("conv_1x1", "conv_3x3"):
        k = 1 if name == "conv_1x1" else 3
        return relu_conv_bn_flops(c, c, size, k, stride, k // 2)
    if name in ("conv_3x1_1x3", "conv_7x1_1x7"):
        k = 3 if name == "conv_3x1_1x3" else 7
        mid = (size[0], out[1])  # the 1xk conv strides along the width only
        return (relu_flops(c, size) + conv_flops(c, c, (1, k), (1, stride), (0, k // 2), size)
                + conv_flops(c, c, (k, 1), (stride, 1), (k // 2, 0), mid))
    kernel = int(name[-1])
    dilation = 2 if name.startswith("dil") else 1
    first, mid = _dw_pw_flops(c, kernel, stride, dilation, size)
    if name.startswith("dil_conv"):
        return first
    second, _ = _dw_pw_flops(c, kernel, 1, dilation, mid)  # sep_conv_*, dil_sep_conv_3x3
    return first + second
