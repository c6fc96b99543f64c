"""What :func:`~zc_proxies.score` is given, checked so that mistakes are named before torch sees them.

A :class:`Batch` is one minibatch together with how a model turns it into a
loss: which call runs the model (:meth:`Batch.forward`), which loss reads its
outputs, what must be checked against the model and where it is scored. The
default is a classification batch, ``loss(model(inputs), targets)`` with
cross-entropy over class indices; a task whose models are called differently (a
torchvision detector, ``model(images, targets)`` returning a dict of losses)
subclasses it, and every proxy that scores through :meth:`Batch.forward_loss`
(``fisher``, ``fisher_potential``) works for it unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import is_lazy

from .errors import BatchError, ModelError
from .runs.device import check_device

LossFn = Callable[[Any, Any], torch.Tensor]
"""``loss(outputs, targets)``: one scalar tensor to differentiate."""


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


def to_device(tensor: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor`` on ``device`` (as ``dtype``); a host tensor bound for a GPU goes through pinned memory.

    The copy from page-locked memory is asynchronous, so the host goes on
    (building the next network, launching kernels) while it runs; torch's
    caching host allocator reuses the pinned block once the copy is done.
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu" and torch.cuda.is_available():
        return tensor.pin_memory().to(device, dtype, non_blocking=True)
    return tensor.to(device, dtype)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_model(model: object) -> nn.Module:
    """``model``, if proxies can copy, hook and run it; else a :class:`ModelError` that says why not.

    Proxies work on a deep copy of the model and find the layers they measure by
    their module type (``nn.Conv2d``, ``BlockProbe``...), so the model must be a
    plain ``nn.Module`` whose tensors hold data: inside a TorchScript module
    layers have no such types (a proxy would silently measure less of the
    network), and a model on the ``meta`` device or with uninitialised lazy
    parameters has no weights to run.
    """
    if isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise ModelError(f"the model is a TorchScript {type(model).__name__} (torch.jit.script/trace): scripted "
                         "models can't be probed or copied by the proxies; pass the original nn.Module")
    if not isinstance(model, nn.Module):
        raise ModelError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    scripted = _first(model, (torch.jit.ScriptModule,))
    if scripted is not None:
        raise ModelError(f"submodule {scripted[0]!r} is a TorchScript module: scripted models can't be probed or "
                         "copied by the proxies; build the model from the original nn.Modules")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if is_lazy(tensor):
            raise ModelError(f"the model's {name!r} is an uninitialised lazy parameter: run the model once on a "
                             "batch (or use non-lazy layers) before scoring it")
        if tensor.is_meta:
            raise ModelError(f"the model's {name!r} is on the meta device and holds no data: materialise the "
                             "model (e.g. model.to_empty(device='cpu') and load its weights) before scoring it")
    return model


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


def scalar_loss(value: object) -> torch.Tensor:
    """``value`` as a 0-dim floating tensor, or a :class:`BatchError` naming what the loss returned instead.

    Gradients are taken of this one number; a per-sample loss vector, an
    integer or a Python float cannot be differentiated, so they are refused here
    rather than deep inside autograd.
    """
    if not isinstance(value, torch.Tensor):
        raise BatchError(f"the loss must return a scalar tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise BatchError(f"the loss must return a scalar tensor (one number), got a tensor of shape "
                         f"{tuple(value.shape)}; reduce it, e.g. with .mean()")
    if not value.is_floating_point():
        raise BatchError(f"the loss must return a floating-point scalar tensor, got dtype {value.dtype}")
    return value if value.dim() == 0 else value.reshape(())


@dataclass(frozen=True, eq=False)
class Batch:
    """One minibatch to score a model on, and how the model turns it into a loss.

    This class is the classification batch: the model is called as
    ``model(inputs)`` and ``loss(outputs, targets)`` is the loss. Batches of
    other tasks subclass it and override :meth:`forward` (how the model is
    called), :meth:`check` and :meth:`to` (what they hold), and the default loss.

    Attributes
    ----------
    inputs
        A floating-point tensor ``(N, ...)``.
    targets
        Integer class indices ``(N,)`` for the default loss; whatever ``loss``
        takes otherwise (rows must match ``inputs``); None for proxies that need
        no labels.
    loss
        ``loss(outputs, targets)`` returning one scalar tensor; by default the
        cross-entropy, after checking that the outputs are (N, classes) logits
        that cover the targets.
    device
        Where to score (``"cuda"``, ``"cpu"``...): the private working copy of the
        model and the batch are moved there, the caller's model is neither moved
        nor changed. None scores on the device of the model's first parameter.
        A device that is not available raises a :class:`~zc_proxies.errors.ConfigError`.
    """

    inputs: Any
    targets: Any = None
    loss: LossFn = checked_cross_entropy
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        if not callable(self.loss):
            raise BatchError(f"the loss must be callable as loss(outputs, targets), got {type(self.loss).__name__}")
        if self.device is not None:
            object.__setattr__(self, "device", torch.device(check_device(self.device, "device")))

    @property
    def num_samples(self) -> int:
        """How many samples the batch holds (the length of the inputs' first axis)."""
        return int(self.inputs.shape[0])

    def check(self, model: nn.Module, *, needs_labels: bool) -> Batch:
        """Validate the batch against ``model``; return it ready to score, on the scoring device.

        The inputs are cast to the model's floating dtype and, for the default
        loss, the targets to ``long``.

        Raises
        ------
        BatchError
            Naming the problem: not tensors, empty, wrong rank or channel count
            for the model's first Conv2d/Linear, non-finite inputs, targets that
            are missing although needed, or that are not integer class indices of
            the batch's length (for the default loss).
        """
        inputs, targets = self.inputs, self.targets
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            raise BatchError(f"inputs must be a floating-point tensor, got {type(inputs).__name__}"
                             + (f" of dtype {inputs.dtype}" if isinstance(inputs, torch.Tensor) else ""))
        if inputs.dim() == 0 or inputs.shape[0] == 0:
            raise BatchError(f"inputs hold no samples (shape {tuple(inputs.shape)})")
        _check_first_layer(model, inputs)
        if not torch.isfinite(inputs).all():
            raise BatchError("inputs contain NaN or infinite values")
        device = self.device if self.device is not None else model_device(model)
        n = inputs.shape[0]
        if targets is None:
            if needs_labels:
                raise BatchError("this proxy needs targets: pass batch=(inputs, targets)")
        elif not isinstance(targets, torch.Tensor):
            raise BatchError(f"targets must be a tensor of class indices, got {type(targets).__name__}")
        elif self.loss is not checked_cross_entropy:
            if targets.shape[:1] != (n,):
                raise BatchError(f"targets hold {targets.shape[:1]} rows for {n} inputs")
            targets = to_device(targets, device)
        else:
            if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
                raise BatchError(f"targets must be integer class indices, got dtype {targets.dtype}")
            if targets.dim() != 1 or targets.shape[0] != n:
                raise BatchError(
                    f"targets must have shape ({n},) to match {n} inputs, got {tuple(targets.shape)}"
                )
            if (targets < 0).any():
                raise BatchError(f"targets must be class indices >= 0, found {int(targets.min())}")
            targets = to_device(targets, device, torch.long)
        inputs = to_device(inputs, device, model_dtype(model))
        return dataclasses.replace(self, inputs=inputs, targets=targets, device=inputs.device)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with its tensors on ``device`` (which it then scores on)."""
        device = torch.device(device)
        targets = self.targets.to(device) if isinstance(self.targets, torch.Tensor) else self.targets
        return dataclasses.replace(self, inputs=self.inputs.to(device), targets=targets, device=device)

    def forward(self, model: nn.Module) -> Any:
        """Run ``model`` on the batch: ``model(inputs)``."""
        return model(self.inputs)

    def loss_of(self, outputs: Any) -> torch.Tensor:
        """``loss(outputs, targets)``, checked to be one floating-point number (see :func:`scalar_loss`)."""
        return scalar_loss(self.loss(outputs, self.targets))

    def forward_loss(self, model: nn.Module) -> torch.Tensor:
        """The scalar loss of ``model`` on the batch: :meth:`loss_of` of :meth:`forward`."""
        return self.loss_of(self.forward(model))


def _check_first_layer(model: nn.Module, inputs: torch.Tensor) -> None:
    """Refuse inputs whose rank or channel count cannot feed the model's first Conv2d or Linear."""
    first = _first(model, (nn.Conv2d, nn.Linear))
    if first is None:
        return
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


def as_batch(batch: Batch | tuple[Any, Any] | list[Any] | torch.Tensor, loss_fn: LossFn | None = None) -> Batch:
    """``batch`` as a :class:`Batch`: a Batch as it is, ``(inputs, targets)`` or an inputs tensor wrapped.

    ``loss_fn`` is the loss of a wrapped pair (cross-entropy when None); a
    :class:`Batch` carries its own, so giving both is refused rather than one
    silently winning.
    """
    if isinstance(batch, Batch):
        if loss_fn is not None:
            raise BatchError(f"the {type(batch).__name__} carries its own loss: pass Batch(..., loss=...) "
                             "rather than loss_fn=")
        return batch
    loss = checked_cross_entropy if loss_fn is None else loss_fn
    if isinstance(batch, torch.Tensor):
        return Batch(batch, None, loss)
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return Batch(batch[0], batch[1], loss)
    got = f"{type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
    raise BatchError(f"batch must be a pair (inputs, targets) of tensors, an inputs tensor or a zc_proxies.Batch, "
                     f"got {got}")


def _uses_batch_statistics(module: _BatchNorm) -> bool:
    # as nn.BatchNorm*.forward decides: batch statistics in train mode, or when no running ones are kept
    return module.training or (module.running_mean is None and module.running_var is None)


@contextmanager
def batchnorm_guard(model: nn.Module, batch: Batch) -> Iterator[None]:
    """While active, refuse a one-sample ``batch`` at any BatchNorm of ``model`` that would see one value per channel.

    Such a BatchNorm, in train mode (or keeping no running statistics), has
    nothing to normalise over; torch refuses it deep in the forward pass
    ("Expected more than 1 value per channel when training"), here it is a
    :class:`BatchError` that names the layer. A BatchNorm2d over one sample
    still has H x W values per channel and runs as torch runs it. Nothing is
    hooked for batches of two or more samples.
    """
    if batch.num_samples != 1:
        yield
        return
    with single_value_guard(model, lambda layer, kind, shape: BatchError(
            f"the batch holds 1 sample, but train-mode BatchNorm needs at least 2 samples per batch: {layer!r} "
            f"({kind}) would see one value per channel (input shape {shape})")):
        yield


@contextmanager
def single_value_guard(model: nn.Module, make_error: Callable[[str, str, tuple], Exception]) -> Iterator[None]:
    """While active, raise ``make_error(layer name, layer type, input shape)`` where a BatchNorm of ``model`` that
    uses batch statistics would see one value per channel.

    Torch refuses that deep in the forward pass ("Expected more than 1 value per channel when training") without
    saying which layer, or which caller's split of the batch, caused it.
    """
    names = {module: name for name, module in model.named_modules() if isinstance(module, _BatchNorm)}

    def guard(module: _BatchNorm, args: tuple) -> None:
        x = args[0] if args else None
        if (isinstance(x, torch.Tensor) and x.dim() >= 2 and _uses_batch_statistics(module)
                and x.shape[0] * math.prod(x.shape[2:]) == 1):
            raise make_error(names.get(module, "a layer"), type(module).__name__, tuple(x.shape))

    handles = [module.register_forward_pre_hook(guard) for module in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
