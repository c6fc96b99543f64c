"""Checks that a minibatch fits a model, so mistakes are named before torch sees them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import BatchError


def _first(model: nn.Module, kinds: tuple[type, ...]) -> tuple[str, nn.Module] | None:
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            return name or type(module).__name__, module
    return None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_batch(
    model: nn.Module, batch: Any, *, needs_labels: bool, class_targets: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``batch = (inputs, targets)`` against ``model``; return it on the model's device.

    Raises
    ------
    BatchError
        Naming the problem: not a pair, not tensors, empty, wrong rank or
        channel count for the model's first Conv2d/Linear, non-finite inputs,
        targets that are not integer class indices of the batch's length.
    """
    if isinstance(batch, torch.Tensor):
        inputs, targets = batch, None
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, targets = batch
    else:
        raise BatchError("batch must be a pair (inputs, targets) of tensors")
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise BatchError(f"inputs must be a floating-point tensor, got {type(inputs).__name__}"
                         + (f" of dtype {inputs.dtype}" if isinstance(inputs, torch.Tensor) else ""))
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise BatchError(f"inputs hold no samples (shape {tuple(inputs.shape)})")
    first = _first(model, (nn.Conv2d, nn.Linear))
    if first is not None:
        name, layer = first
        if isinstance(layer, nn.Conv2d):
            if inputs.dim() != 4:
                raise BatchError(
                    f"inputs have shape {tuple(inputs.shape)} (rank {inputs.dim()}), but the model's first "
                    f"convolution {name!r} needs rank 4 (N, C, H, W)"
                )
            if inputs.shape[1] != layer.in_channels:
                raise BatchError(
                    f"inputs have {inputs.shape[1]} channels (shape {tuple(inputs.shape)}), but the model's "
                    f"first convolution {name!r} expects {layer.in_channels}"
                )
        elif inputs.shape[-1] != layer.in_features and inputs.dim() == 2:
            raise BatchError(
                f"inputs have {inputs.shape[-1]} features, but the model's first linear layer {name!r} "
                f"expects {layer.in_features}"
            )
    if not torch.isfinite(inputs).all():
        raise BatchError("inputs contain NaN or infinite values")
    n = inputs.shape[0]
    if targets is None:
        if needs_labels:
            raise BatchError("this proxy needs targets: pass batch=(inputs, targets)")
    else:
        if not isinstance(targets, torch.Tensor):
            raise BatchError(f"targets must be a tensor of class indices, got {type(targets).__name__}")
        if not class_targets:
            if targets.shape[:1] != (n,):
                raise BatchError(f"targets hold {targets.shape[:1]} rows for {n} inputs")
            return inputs.to(model_device(model), model_dtype(model)), targets.to(model_device(model))
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise BatchError(f"targets must be integer class indices, got dtype {targets.dtype}")
        if targets.dim() != 1 or targets.shape[0] != n:
            raise BatchError(
                f"targets must have shape ({n},) to match {n} inputs, got {tuple(targets.shape)}"
            )
        if (targets < 0).any():
            raise BatchError(f"targets must be class indices >= 0, found {int(targets.min())}")
        targets = targets.to(model_device(model), torch.long)
    inputs = inputs.to(model_device(model), model_dtype(model))
    return inputs, targets


def checked_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, after checking that outputs are (N, K) logits that cover the targets."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise BatchError(f"the model must return logits of shape (N, classes), got {shape}")
    k = outputs.shape[1]
    if targets.numel() and int(targets.max()) >= k:
        raise BatchError(
            f"targets go up to {int(targets.max())}, but the model has only {k} outputs (classes 0..{k - 1})"
        )
    return F.cross_entropy(outputs, targets)
