"""The torch device a run asks for, checked before the run starts."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def check_device(text: str, option: str = "--device") -> str:
    """``text`` as a canonical torch device string, or a :class:`ConfigError` saying why it cannot be used."""
    try:
        device = torch.device(str(text))
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{option} {text!r} is not a torch device; use cpu, cuda, cuda:1, mps...") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {text}: CUDA is not available on this machine (torch {torch.__version__}, "
                              f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{option} {text}: Apple's MPS backend is not available on this machine")
    elif device.type != "cpu":
        raise ConfigError(f"{option} {text}: zcbench runs on cpu, cuda or mps devices, not {device.type!r}")
    return str(device)
