"""Computations several proxies share, done once per scoring call and kept in ``ctx.cache``.

Most zero-cost proxies in train-mode BatchNorm need the same single forward pass
and differ only in what they read off it:

=====================  ===========================================  =====================
artifact               what it is                                   used by
=====================  ===========================================  =====================
``weight_grads``       dL/dW for every Conv2d/Linear weight          grad_norm, snip, plain
``hessian_grad``       H g for those weights (g = dL/dW, detached)   grasp
``input_jacobian``     d(sum of all outputs)/d(inputs), (N, D)       jacob_cov, epe_nas
``relu_kernel``        NASWOT's kernel of ReLU activation codes      naswot
``param_grads``        dL/dtheta for every parameter of the model    nasi
``conv_saliencies``    per Conv2d/Linear call, the channel           fisher
                       saliencies g[n, c] (:mod:`zc_proxies.probes`)
=====================  ===========================================  =====================

:func:`train_pass` computes the artifacts a proxy asks for *and* those that the
other proxies of the same :func:`~zc_proxies.score` call have declared (with
:func:`declare`), all from one forward pass on the shared working copy: the loss
is differentiated for the weight gradients (with ``create_graph`` when grasp needs
the Hessian-gradient product, and for Fisher's channel saliencies beside the weight
gradients in the same backward pass), and the sum of the outputs for the input jacobian;
ReLU codes are read by pre-forward hooks during the same pass. Every artifact
equals what its proxy would compute alone, because train-mode BatchNorm makes the
forward pass independent of the running statistics, and asking for the gradient
of the inputs does not change the gradients of the weights.

A second shared computation, :func:`sample_pass`, runs the model on *each sample
alone* (a batch of one, train-mode BatchNorm normalising over that sample's
positions, as GradSign's official code does) and reads per-sample gradients off
each single-sample pass:

=======================  =========================================================  ==========
artifact                 what it is                                                 used by
=======================  =========================================================  ==========
``sample_grad_signs``    per Conv2d/Linear weight, sum over samples of               gradsign
                         sign(d loss_i / dW), loss_i the sample's own loss
``sample_logit_norms``   per sample, ||d f_{y_i}(x_i) / d theta||^2 over every       ntk_trace
                         parameter (f_{y_i} the logit of the sample's target class)
=======================  =========================================================  ==========

Both come from the same single-sample forward passes (one per sample), so
gradsign and ntk_trace scored together cost N forward passes instead of 2N. The
per-sample gradients are exact: one autograd backward per sample and quantity,
as the official loop does (torch.func.vmap over single-sample batches agrees up
to float rounding, which flips the sign of a few near-zero float32 gradients,
and measured slower on CPU). They are reduced on the fly (signs summed, squared
norms accumulated in float64), so no (N, parameters) tensor is ever held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..batch import Batch, scalar_loss
from ..batch import single_value_guard as batch_single_value_guard
from ..errors import BatchError, ModelError, ZCBenchError
from ..probes import SaliencyProbes, channel_saliencies
from .base import ScoringContext

# Key under which score() lists the names of the proxies scored together on one working copy.
TOGETHER = "_zc_proxies_together"
_PASS = "_zc_train_pass"
_SAMPLE_PASS = "_zc_sample_pass"

BATCH_ARTIFACTS = ("weight_grads", "hessian_grad", "input_jacobian", "relu_kernel", "param_grads",
                   "conv_saliencies")
SAMPLE_ARTIFACTS = ("sample_grad_signs", "sample_logit_norms")
ARTIFACTS = BATCH_ARTIFACTS + SAMPLE_ARTIFACTS
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
# Activations whose sign pattern NASWOT reads (NAS-Bench-Suite-Zero hooks every module whose
# type name contains "ReLU"); for all of them, output > 0 exactly when input > 0.
RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU)

_DECLARED: dict[str, frozenset[str]] = {}


def declare(proxy_name: str, *artifacts: str) -> None:
    """Record that ``proxy_name`` reads these artifacts, so a shared pass can compute them early."""
    unknown = set(artifacts) - set(ARTIFACTS)
    if unknown:
        raise ValueError(f"unknown shared artifacts {sorted(unknown)}; known: {', '.join(ARTIFACTS)}")
    _DECLARED[proxy_name] = frozenset(artifacts)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Every Conv2d and Linear module, in ``model.modules()`` order (NAS-Bench-Suite-Zero's layer set)."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def all_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``model`` (each shared one once), in ``model.parameters()`` order: the NTK's theta."""
    return list(model.parameters())


def require_weight_layers(model: nn.Module, proxy: str) -> list[nn.Module]:
    """:func:`weight_layers`, or a :class:`ModelError` naming ``proxy`` when there are none."""
    layers = weight_layers(model)
    if not layers:
        raise ModelError(f"{proxy} sums over nn.Conv2d and nn.Linear weights, but "
                         f"{type(model).__name__} contains neither")
    return layers


def corrcoef(rows: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between the rows of ``rows`` (as numpy.corrcoef), in float64, clipped to [-1, 1].

    A row with zero variance gives NaN entries, as in numpy.
    """
    x = rows.double()
    x = x - x.mean(dim=1, keepdim=True)
    cov = x @ x.T
    std = cov.diagonal().sqrt()
    return (cov / std[:, None] / std[None, :]).clamp(-1.0, 1.0)


def model_output(out: object, proxy: str) -> torch.Tensor:
    """The model's output as one tensor, or a :class:`ModelError` that says what came back."""
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{proxy} needs the model to return one tensor of outputs, got {type(out).__name__}")
    return out


@dataclass
class TrainPass:
    """Results of one shared forward pass; an artifact that was not computed is None."""

    layers: list[nn.Module]
    artifacts: set[str] = field(default_factory=set)
    weight_grads: list[torch.Tensor] | None = None
    hessian_grad: list[torch.Tensor] | None = None
    input_jacobian: torch.Tensor | None = None
    relu_kernel: torch.Tensor | None = None
    param_grads: list[torch.Tensor] | None = None  # one per all_parameters(model), zeros where unused
    conv_saliencies: list[tuple[nn.Module, torch.Tensor]] | None = None  # (layer, g (N, C)) per layer call
    relu_calls: int = 0
    num_outputs: int = 0  # size of the outputs' last axis (the number of classes for a classifier)

    def merge(self, other: TrainPass) -> TrainPass:
        for name in other.artifacts:
            setattr(self, name, getattr(other, name))
        if "relu_kernel" in other.artifacts:
            self.relu_calls = other.relu_calls
        self.artifacts |= other.artifacts
        self.num_outputs = other.num_outputs
        return self


def in_logical_order(tensor: torch.Tensor, draw: Callable[[torch.Tensor], object]) -> torch.Tensor:
    """Fill ``tensor`` in place with ``draw`` (an in-place random initialiser) in its logical element order.

    torch's in-place samplers fill memory in storage order, so the same generator gives a channels-last
    weight other numbers at each index than a contiguous one; drawing into a contiguous tensor and
    copying keeps a proxy's randomness the same whatever the model's memory format.
    """
    if tensor.is_contiguous():
        draw(tensor)
    else:
        fresh = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
        draw(fresh)
        tensor.copy_(fresh)
    return tensor


def plain_batch(ctx: ScoringContext) -> bool:
    """Whether the batch runs the model as ``model(inputs)`` on one tensor with the standard loss call.

    Only such a batch can go through :func:`train_pass`, which calls the model itself; other kinds
    (a detector's batch) are scored by proxies that run :meth:`ScoringContext.forward_loss` alone.
    """
    kind = type(ctx.batch)
    return (kind.forward is Batch.forward and kind.forward_loss is Batch.forward_loss
            and kind.loss_of is Batch.loss_of and isinstance(ctx.batch.inputs, torch.Tensor))


def companions(ctx: ScoringContext) -> set[str]:
    """Artifacts declared by the proxies scored together with the current one."""
    wanted: set[str] = set()
    for name in ctx.cache.get(TOGETHER, ()):
        wanted |= _DECLARED.get(name, frozenset())
    return wanted


def train_pass(ctx: ScoringContext, *artifacts: str) -> TrainPass:
    """The shared pass holding ``artifacts`` (computed now, with the companions' needs, if not cached)."""
    unknown = set(artifacts) - set(BATCH_ARTIFACTS)
    if unknown:
        raise ValueError(f"unknown shared artifacts of the batch pass {sorted(unknown)}")
    have: TrainPass | None = ctx.cache.get(_PASS)
    done = have.artifacts if have is not None else set()
    if set(artifacts) <= done:
        return have  # type: ignore[return-value]
    todo = (set(artifacts) | (companions(ctx) & set(BATCH_ARTIFACTS))) - done
    new = _run(ctx, todo, set(artifacts))
    merged = new if have is None else have.merge(new)
    ctx.cache[_PASS] = merged
    return merged


def _zeros_for(grads: Iterable[torch.Tensor | None], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(w) if g is None else g.detach() for g, w in zip(grads, weights)]


def _kernel_dtype(device: torch.device) -> torch.dtype:
    # 0/1 codes summed over at most 2**24 positions are exact in float32 on CPU; on CUDA a
    # TF32 setting could round them, so use float64 there.
    return torch.float64 if device.type == "cuda" else torch.float32


_LOSS_ARTIFACTS = frozenset({"weight_grads", "hessian_grad", "param_grads", "conv_saliencies"})
_WEIGHT_ARTIFACTS = frozenset({"weight_grads", "hessian_grad", "param_grads"})


def _loss_again(ctx: ScoringContext) -> torch.Tensor:
    """Another forward pass of the working copy to its loss (for probes overwritten in place in the first)."""
    with torch.enable_grad():
        return ctx.loss(model_output(ctx.model(ctx.inputs.detach()), "this proxy"))


def _run(ctx: ScoringContext, todo: set[str], requested: set[str]) -> TrainPass:
    model = ctx.model
    layers = weight_layers(model)
    weights = [m.weight for m in layers]
    # An artifact that only a companion wants and that this model cannot give is left out: its own proxy
    # refuses the model when it runs, and the proxy asking now must not fail (nor differ) for it.
    cannot = set()
    if not layers:
        cannot |= {"weight_grads", "hessian_grad", "conv_saliencies"}
    if not any(isinstance(m, RELU_LIKE) for m in model.modules()):
        cannot.add("relu_kernel")
    todo = todo - (cannot - requested)
    result = TrainPass(layers=layers, artifacts=set(todo))
    need_loss = bool(todo & _LOSS_ARTIFACTS)
    need_weights = bool(todo & _WEIGHT_ARTIFACTS)
    need_params = "param_grads" in todo
    # every other parameter, after the weights: one backward gives both (the weights' gradients are the same
    # numbers whether or not more inputs are asked for)
    weight_ids = {id(w) for w in weights}
    others = [p for p in all_parameters(model) if id(p) not in weight_ids] if need_params else []
    need_jac = "input_jacobian" in todo
    need_kernel = "relu_kernel" in todo
    if todo & {"weight_grads", "hessian_grad", "conv_saliencies"} and not layers:
        # (the proxies that read weight gradients refuse such a model first, with require_weight_layers)
        raise ModelError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear weights to differentiate")
    n = ctx.inputs.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=ctx.inputs.device)
    calls = 0

    def count_codes(_module: nn.Module, inputs: tuple) -> None:
        nonlocal kernel, calls
        a = inputs[0].detach().reshape(n, -1)
        codes = (a > 0).to(_kernel_dtype(a.device))
        agree = codes @ codes.T  # positions where both are active
        active = codes.sum(dim=1)
        # sum_d [c_id c_jd + (1 - c_id)(1 - c_jd)] = 2 c_i.c_j - |c_i| - |c_j| + D
        kernel = kernel + (2 * agree - active[:, None] - active[None, :] + codes.shape[1]).double()
        calls += 1

    handles = []
    if need_kernel:
        handles = [m.register_forward_pre_hook(count_codes) for m in model.modules() if isinstance(m, RELU_LIKE)]
        if not handles:
            raise ModelError(
                f"naswot reads the activation pattern of nn.ReLU modules, but {type(model).__name__} has none "
                "(functional F.relu calls cannot be observed); use nn.ReLU modules"
            )
    if need_weights:
        for w in [*weights, *others]:
            w.requires_grad_(True)  # the working copy's flags are restored after the proxy
    # Fisher's probes change no value and no other gradient (zc_proxies.probes)
    probes = SaliencyProbes(layers if "conv_saliencies" in todo else ())
    x = ctx.inputs.detach().clone().requires_grad_(need_jac)
    try:
        with torch.set_grad_enabled(need_loss or need_jac), probes:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    out = model_output(out, "this proxy")
    result.num_outputs = int(out.shape[-1]) if out.dim() else 1
    if need_kernel:
        result.relu_kernel, result.relu_calls = kernel, calls
    if need_loss:
        try:
            loss = ctx.loss(out)
        except ZCBenchError:
            if requested & _LOSS_ARTIFACTS:
                raise
            need_loss = False  # only companions wanted the loss; they will meet this error themselves
            result.artifacts -= _LOSS_ARTIFACTS
    if need_loss:
        hessian = "hessian_grad" in todo
        inputs = [*weights, *others] if need_weights else []
        targets = probes.targets if probes.intact else []  # overwritten in place: saliencies from a rerun below
        if loss.requires_grad and (inputs or targets):
            everything = torch.autograd.grad(loss, [*inputs, *targets], allow_unused=True,
                                             create_graph=hessian, retain_graph=hessian or need_jac)
        else:
            everything = (None,) * (len(inputs) + len(targets))
        if "conv_saliencies" in todo:
            result.conv_saliencies = (probes.saliencies(everything[len(inputs):]) if probes.intact
                                      else channel_saliencies(model, layers, lambda: _loss_again(ctx)))
        everything = everything[:len(inputs)]
        grads = everything[:len(weights)]
        if need_weights:
            result.weight_grads = _zeros_for(grads, weights)
        if need_params:
            by_id = {id(t): g for t, g in zip(inputs, everything)}
            params = all_parameters(model)
            result.param_grads = _zeros_for((by_id[id(p)] for p in params), params)
        if hessian:
            terms = [(g.detach() * g).sum() for g in grads if g is not None and g.requires_grad]
            if terms:
                hg = torch.autograd.grad(torch.stack(terms).sum(), weights, allow_unused=True,
                                         retain_graph=need_jac)
            else:
                hg = (None,) * len(weights)
            result.hessian_grad = _zeros_for(hg, weights)
    if need_jac:
        if out.requires_grad:
            (jx,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), allow_unused=True)
        else:
            jx = None
        jac = torch.zeros_like(x) if jx is None else jx.detach()
        result.input_jacobian = jac.reshape(n, -1)
    return result


@dataclass
class SamplePass:
    """Results of the shared single-sample passes; an artifact that was not computed is None.

    ``grad_signs`` holds, per Conv2d/Linear weight (in :func:`weight_layers` order), the sum over samples of
    sign(d loss_i / dW) as int64; ``logit_norms`` holds ||d f_{y_i}(x_i) / d theta||^2 per sample (float64).
    ``signs_finite`` is False when some per-sample loss gradient was NaN or infinite (gradsign then returns NaN;
    a non-finite logit gradient shows as a non-finite norm).
    """

    layers: list[nn.Module]
    artifacts: set[str] = field(default_factory=set)
    grad_signs: list[torch.Tensor] | None = None
    logit_norms: torch.Tensor | None = None
    signs_finite: bool = True

    def merge(self, other: SamplePass) -> SamplePass:
        if "sample_grad_signs" in other.artifacts:
            self.grad_signs, self.signs_finite = other.grad_signs, other.signs_finite
        if "sample_logit_norms" in other.artifacts:
            self.logit_norms = other.logit_norms
        self.artifacts |= other.artifacts
        return self


def sample_pass(ctx: ScoringContext, *artifacts: str) -> SamplePass:
    """The shared single-sample passes holding ``artifacts`` (computed now, with the companions' needs)."""
    unknown = set(artifacts) - set(SAMPLE_ARTIFACTS)
    if unknown:
        raise ValueError(f"unknown shared artifacts of the single-sample passes {sorted(unknown)}")
    have: SamplePass | None = ctx.cache.get(_SAMPLE_PASS)
    done = have.artifacts if have is not None else set()
    if set(artifacts) <= done:
        return have  # type: ignore[return-value]
    todo = (set(artifacts) | (companions(ctx) & set(SAMPLE_ARTIFACTS))) - done
    new = _run_samples(ctx, todo, set(artifacts))
    merged = new if have is None else have.merge(new)
    ctx.cache[_SAMPLE_PASS] = merged
    return merged


@contextmanager
def single_value_guard(model: nn.Module, error: type[Exception], why: str) -> Iterator[None]:
    """Raise ``error`` (with ``why``) where a batch-statistics BatchNorm of ``model`` would see one value per channel.

    The batch layer's guard, with a message that names the proxy that split the batch.
    """
    with batch_single_value_guard(model, lambda layer, kind, shape: error(
            f"{why}, but train-mode BatchNorm {layer!r} ({kind}) would see one value per channel "
            f"(input shape {shape})")):
        yield


def class_targets(ctx: ScoringContext, num_outputs: int, proxy: str) -> torch.Tensor:
    """The batch's targets as class indices 0..num_outputs-1, or a :class:`BatchError` saying why they are not."""
    y = ctx.targets
    n = ctx.inputs.shape[0]
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool \
            or y.shape != (n,):
        got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise BatchError(f"{proxy} reads the logit of each sample's target class, so the targets must be {n} integer "
                         f"class indices, got {got}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_outputs):
        raise BatchError(f"{proxy}: targets range over {int(y.min())}..{int(y.max())}, but the model has "
                         f"{num_outputs} outputs (classes 0..{num_outputs - 1})")
    return y


def _run_samples(ctx: ScoringContext, todo: set[str], requested: set[str]) -> SamplePass:
    model = ctx.model
    layers = weight_layers(model)
    weights = [m.weight for m in layers]
    params = all_parameters(model)
    x = ctx.inputs.detach()
    n = x.shape[0]
    targets = ctx.targets
    if targets is None:
        raise BatchError("the per-sample gradients need targets: pass batch=(inputs, targets)")
    need_signs = "sample_grad_signs" in todo
    need_logit = "sample_logit_norms" in todo

    def drop(artifact: str, error: ZCBenchError) -> bool:
        """Leave out a companion's artifact this model or batch cannot give (its proxy will raise ``error``)."""
        if artifact in requested:
            raise error
        return False

    if need_signs and not layers:
        need_signs = drop("sample_grad_signs", ModelError(
            f"gradsign sums over nn.Conv2d and nn.Linear weights, but {type(model).__name__} contains neither"))
    if need_signs and not (isinstance(targets, torch.Tensor) and targets.shape[:1] == (n,)):
        need_signs = drop("sample_grad_signs", BatchError(
            f"gradsign takes each sample's own loss, so the targets must be a tensor with one row per sample "
            f"({n}), got {type(targets).__name__}"))
    if need_logit and not params:
        need_logit = drop("sample_logit_norms", ModelError(
            f"ntk_trace differentiates with respect to the model's parameters, but {type(model).__name__} has none"))
    signs = [torch.zeros(w.shape, dtype=torch.int64, device=w.device) for w in weights]
    norms = torch.zeros(n, dtype=torch.float64)
    nonfinite = torch.zeros((), dtype=torch.bool, device=x.device)  # checked once at the end (no sync per sample)
    y = targets
    for p in params:
        p.requires_grad_(True)  # the working copy's flags are restored after the proxy
    why = f"{ctx.proxy} runs the model on each sample alone (a batch of one, as GradSign's official code does)"
    with single_value_guard(model, ModelError, why), torch.enable_grad():
        for i in range(n):
            if not (need_signs or need_logit):
                break
            out = model_output(model(x[i:i + 1]), ctx.proxy)
            loss = None
            if need_signs:
                try:
                    loss = scalar_loss(ctx.loss_fn(out, targets[i:i + 1]))
                except ZCBenchError as exc:
                    need_signs = drop("sample_grad_signs", exc)
            if need_logit and i == 0:
                try:
                    if out.dim() != 2 or out.shape[0] != 1:
                        raise ModelError(f"{ctx.proxy} reads one logit per sample, so the model must return "
                                         f"(N, classes) outputs; for one sample it returned {tuple(out.shape)}")
                    y = class_targets(ctx, int(out.shape[1]), "ntk_trace")
                except ZCBenchError as exc:
                    need_logit = drop("sample_logit_norms", exc)
            if need_signs:
                grads = (torch.autograd.grad(loss, weights, allow_unused=True, retain_graph=need_logit)
                         if loss.requires_grad else (None,) * len(weights))
                for acc, g in zip(signs, grads):
                    if g is not None:
                        nonfinite = nonfinite | ~torch.isfinite(g).all()
                        acc += torch.sign(g).to(torch.int64)
            if need_logit:
                logit = out[0, int(y[i])]
                grads = (torch.autograd.grad(logit, params, allow_unused=True)
                         if logit.requires_grad else (None,) * len(params))
                total = torch.zeros((), dtype=torch.float64, device=x.device)
                for g in grads:
                    if g is not None:
                        total = total + g.double().pow(2).sum()
                norms[i] = total.cpu()
    result = SamplePass(layers=layers, artifacts=set())
    if need_signs:
        result.artifacts.add("sample_grad_signs")
        result.grad_signs, result.signs_finite = signs, not bool(nonfinite)
    if need_logit:
        result.artifacts.add("sample_logit_norms")
        result.logit_norms = norms
    return result


def layer_sum(values: Iterable[torch.Tensor]) -> float:
    """Sum of per-layer tensors, accumulated in float64 (as one Python float)."""
    total = torch.zeros((), dtype=torch.float64)
    for v in values:
        total = total + v.double().sum().cpu()
    return float(total)


def on_relu_maps(net: nn.Module, x: torch.Tensor, hook: Callable[[torch.Tensor], None]) -> int:
    """Run ``net`` on ``x`` without gradients, calling ``hook`` on the output of every nn.ReLU whose
    input is a 4-D map; return how many such outputs there were (0: the net has no observable ReLU,
    e.g. it calls F.relu)."""
    calls = 0

    def on_output(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal calls
        if isinstance(inputs, tuple) and inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 4:
            calls += 1
            hook(output.detach())

    handles = [m.register_forward_hook(on_output) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return calls
