"""Stride-1 average pooling as a depthwise convolution, for the networks a run scores in NHWC.

NAS-Bench-201's ``avg_pool_3x3`` (3x3, stride 1, padding 1, padding excluded
from the average) is one of its five cell operations. On the CPU in NHWC,
torch's own average-pooling kernels are slow for so little arithmetic
(``benchmarks/pooling_speed.py``, 1 thread, batch 64): on the 16 x 32 x 32 maps
of the first stage 2.1 ms forward and 1.8 ms for the input gradient, against
0.53 and 0.66 ms for the same window sums as a depthwise convolution with a
kernel of ones, divided in place by the number of pixels in each window; 1.9x
and 1.6x on the second stage's maps, even on the third's. Both divide the same
sums by the same integer counts; only the order of the additions in a window
differs (float32 differences up to 3.6e-7 on unit-variance maps).

Only what the convolution reproduces exactly in meaning is replaced: stride 1,
an odd kernel, padding of half the kernel ("same" size), no ``ceil_mode``, no
``divisor_override``; either ``count_include_pad``. Anything else, and any input
that is not a floating-point batch of maps (N, C, H, W), runs torch's kernel. As
:mod:`.batchnorm`, it is applied by :mod:`.layout` to networks the engine built
and scores in NHWC; the module keeps its class's parents (``nn.AvgPool2d``), so
FLOP counts, hooks and state dicts do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return (int(value[0]), int(value[-1])) if len(value) in (1, 2) else (-1, -1)


def box_eligible(module: nn.AvgPool2d) -> bool:
    """Whether ``module`` pools with stride 1 over odd windows padded to keep the size, and nothing more."""
    kernel, stride, padding = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
    return (stride == (1, 1) and all(k > 0 and k % 2 == 1 for k in kernel)
            and padding == (kernel[0] // 2, kernel[1] // 2)
            and not module.ceil_mode and module.divisor_override is None)


def window_counts(size: int, kernel: int, like: torch.Tensor) -> torch.Tensor:
    """Pixels of each stride-1 window of ``kernel`` (padded by half of it) that lie inside ``size``: (size,)."""
    half = kernel // 2
    index = torch.arange(size, device=like.device)
    counts = (index + half).clamp(max=size - 1) - (index - half).clamp(min=0) + 1
    return counts.to(like.dtype)


class BoxAvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d whose eligible pools (:func:`box_eligible`) run as a depthwise convolution of ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (box_eligible(self) and x.dim() == 4 and x.is_floating_point()):
            return super().forward(x)
        kh, kw = _pair(self.kernel_size)
        channels, height, width = x.shape[1], x.shape[2], x.shape[3]
        ones = x.new_ones(channels, 1, kh, kw)
        sums = F.conv2d(x, ones, padding=(kh // 2, kw // 2), groups=channels)
        # in place: the convolution's backward does not read its output, and a second map-sized buffer per
        # call costs page faults where the allocator hands freed memory back to the system
        if self.count_include_pad:
            return sums.div_(float(kh * kw))
        counts = window_counts(height, kh, x)[:, None] * window_counts(width, kw, x)[None, :]
        return sums.div_(counts)


def use_box_avgpool(model: nn.Module) -> nn.Module:
    """Make every plain, eligible nn.AvgPool2d of ``model`` (in place) a :class:`BoxAvgPool2d`; returns ``model``.

    Only for a network the caller owns (a fresh build): no parameters or
    buffers are involved, only the modules' class changes.
    """
    for module in model.modules():
        if type(module) is nn.AvgPool2d and box_eligible(module):
            module.__class__ = BoxAvgPool2d
    return model
