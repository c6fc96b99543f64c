"""Memory layout of the networks a run scores: NCHW (torch's default) or NHWC (channels-last).

On the CPU, oneDNN runs the small convolutions of cell-based benchmarks much
faster in NHWC. A different layout changes the order of float32 additions, so
scores move in their last digits (about 1e-3 relative for ``fisher`` on
NAS-Bench-201); it is chosen per space, only where it is faster *and* ranks
the space's architectures as NCHW does (``benchmarks/layout_check.py``
measures both). In NHWC every BatchNorm2d collects exact batch statistics
(:mod:`zc_proxies.runs.batchnorm`): torch's sequentially accumulated NHWC
statistics were what made NHWC rank NB101 architectures (``jacob_cov``) and
BlockSwap candidates differently from NCHW. Stride-1 average pools run there as
depthwise convolutions (:mod:`zc_proxies.runs.pooling`), which oneDNN does
several times faster than torch's NHWC pooling kernel. The layout is an execution detail like the device or the
thread count: it is recorded in every stored row, not in the store's settings.

A space states its CPU choice as the class attribute ``cpu_layout``
(``"nchw"`` when it states none), and may name in ``nchw_proxies`` the proxies
whose ranking NHWC was measured to change there: a run that scores any of
them stays in NCHW under ``auto``. On other devices ``auto`` means NCHW: no
measurement there supports anything else.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from .batchnorm import use_exact_batchnorm
from .pooling import use_box_avgpool

LAYOUTS = ("auto", "nchw", "nhwc")
_FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def resolve_layout(option: str, space: object, device: str | torch.device, proxies: Iterable[str] = ()) -> str:
    """``nchw`` or ``nhwc`` for ``--layout option`` on ``device`` (``auto``: the space's CPU choice for ``proxies``)."""
    if option not in LAYOUTS:
        raise ConfigError(f"--layout {option!r} is not a layout; use one of {', '.join(LAYOUTS)}")
    if option != "auto":
        return option
    if torch.device(device).type != "cpu":
        return "nchw"
    chosen = getattr(space, "cpu_layout", "nchw")
    if chosen not in _FORMATS:
        raise ConfigError(f"space {getattr(space, 'name', space)!r} declares cpu_layout {chosen!r}; "
                          f"use one of {', '.join(_FORMATS)}")
    if chosen == "nhwc" and set(proxies) & set(getattr(space, "nchw_proxies", ())):
        return "nchw"
    return chosen


def network_in_layout(model: nn.Module, layout: str) -> nn.Module:
    """``model`` (in place: a network the run owns) in ``layout``, for inputs that are not one 4-d tensor.

    NHWC also gives the model's BatchNorm2d layers exact batch statistics, and
    runs its stride-1 average pools as depthwise convolutions. Its first
    convolution then puts an NCHW input into NHWC, as oneDNN follows the
    weights' layout: how a detector, which batches its own images, runs in NHWC.
    """
    if layout not in _FORMATS:
        raise ConfigError(f"layout {layout!r} is not one of {', '.join(_FORMATS)}")
    if layout == "nchw":
        return model
    return use_box_avgpool(use_exact_batchnorm(model)).to(memory_format=_FORMATS[layout])


def apply_layout(model: nn.Module, inputs: torch.Tensor, layout: str) -> tuple[nn.Module, torch.Tensor]:
    """``model`` (in place: a network the run owns) and ``inputs`` in ``layout``; 4-d tensors only, as torch does.

    As :func:`network_in_layout`, with the inputs put in the layout too.
    """
    model = network_in_layout(model, layout)
    if layout != "nchw" and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=_FORMATS[layout])
    return model, inputs
