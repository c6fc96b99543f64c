"""Activation-based attention transfer (Zagoruyko & Komodakis, ICLR 2017), as BlockSwap uses it.

BlockSwap's last step trains the chosen mixed-block student with attention
transfer (AT) from the original network: besides cross-entropy on the labels,
the student is pulled towards the teacher's *spatial attention maps* at the
end of every stage.

Attention map
    Of an activation ``A`` of shape (N, C, H, W): per sample, the mean over
    channels of ``A**2`` (the paper's F_sum^p with p = 2, scaled by 1/C),
    flattened to H*W values and divided by its L2 norm. Channel counts of
    student and teacher may differ; only N, H and W must agree.
AT loss of one pair
    The mean, over the N x H*W entries, of the squared difference of the two
    normalised maps. The teacher's map is detached: no gradient reaches it.
Total loss
    ``CE + w * sum over stages of AT``, with ``w = beta * 3 / stages`` and
    ``beta = 1000``. This is the authors' code: BlockSwap's ``train.py`` adds
    ``(beta * 3 / len(activations)) * at_loss`` per activation, and the AT
    code (``cifar.py``) adds ``beta * sum(at_losses)`` over a WRN's three
    groups; for the three stages of a WRN both are ``beta * sum``. The AT
    paper's eq. 2 writes ``beta / 2`` in front of a norm of the difference and
    divides beta by the map size and batch size; the code's mean of squares
    is what produced the published accuracies, so it is what we follow.
ImageNet
    BlockSwap's Section 6 sets "beta to 750 using the output of each of the
    four sections" of ResNet-34. That is the per-stage weight above with the
    code's ``beta = 1000``: ``1000 * 3 / 4 = 750`` (``main.py`` adds
    ``(beta * 3 / len(ints_student)) * at_loss`` per section), just as the
    CIFAR section's "beta is set to 1000" is ``1000 * 3 / 3``. So one ``beta``
    (1000) gives the paper's weight for both networks.
Matched layers
    The output of each stage (group, section): the output of the stage's last
    block, after the residual add and before the next stage (the ``g0, g1,
    g2`` of the AT code, the ``activations`` of BlockSwap's WideResNet, the
    outputs of ``block1`` .. ``block4`` of its ResNet). They are caught with
    forward hooks (:class:`StageTaps`), so the networks are used as they are.
Mixed precision
    Under autocast the activations may be float16; their attention maps and
    the AT loss are computed in float32 (:func:`attention_map`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .networks import BlockSwapNet

#: The AT weight of the AT paper's CIFAR experiments and of BlockSwap's code.
BETA = 1e3
#: Stage count the weight ``beta`` was tuned for (a WRN's three groups).
REFERENCE_STAGES = 3


def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """The normalised spatial attention map, shape (N, H*W), of an (N, C, H, W) activation.

    Half-precision activations (from a mixed-precision forward pass) are
    taken to float32 first: squares of float16 values overflow at 256 and the
    normalisation divides small numbers. Other dtypes are kept.
    """
    if activation.dim() != 4:
        raise ModelError(f"an attention map needs an (N, C, H, W) activation, got shape {tuple(activation.shape)}")
    if activation.dtype in (torch.float16, torch.bfloat16):
        activation = activation.float()
    return F.normalize(activation.pow(2).mean(dim=1).flatten(1), p=2.0, dim=1)


def at_loss(student: torch.Tensor, teacher: torch.Tensor, stage: int | None = None) -> torch.Tensor:
    """Mean squared difference of the two normalised attention maps (teacher detached).

    Raises
    ------
    ModelError
        If the two activations differ in batch size or spatial size (naming
        ``stage`` when given, and both shapes).
    """
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[0] != teacher.shape[0] \
            or student.shape[2:] != teacher.shape[2:]:
        where = f"stage {stage}: " if stage is not None else ""
        raise ModelError(f"{where}student activation {tuple(student.shape)} and teacher activation "
                         f"{tuple(teacher.shape)} cannot be compared: attention transfer needs (N, C, H, W) "
                         "activations with the same N, H and W (channels may differ)")
    return (attention_map(student) - attention_map(teacher.detach())).pow(2).mean()


def at_weight(beta: float, stages: int) -> float:
    """Weight of each stage's AT loss: ``beta * 3 / stages`` (BlockSwap's rescaling to three groups)."""
    if stages < 1:
        raise ModelError("attention transfer needs at least one matched stage")
    return beta * REFERENCE_STAGES / stages


@dataclass
class DistillationLoss:
    """The student's loss on one minibatch and its parts.

    ``total = ce + weight * sum(at)``; ``at`` holds one AT loss per stage.
    """

    total: torch.Tensor
    ce: torch.Tensor
    at: list[torch.Tensor]
    weight: float


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, student_acts: Sequence[torch.Tensor],
                      teacher_acts: Sequence[torch.Tensor], beta: float = BETA) -> DistillationLoss:
    """Cross-entropy plus weighted attention transfer over matched stage outputs.

    Raises
    ------
    ModelError
        If student and teacher have different numbers of stages, or a pair
        of stage outputs that differ in batch or spatial size.
    """
    if len(student_acts) != len(teacher_acts):
        raise ModelError(f"the student has {len(student_acts)} stages but the teacher has {len(teacher_acts)}: "
                         "attention transfer matches stage outputs one to one")
    ce = F.cross_entropy(logits, targets)
    terms = [at_loss(s, t, stage=i) for i, (s, t) in enumerate(zip(student_acts, teacher_acts))]
    weight = at_weight(beta, len(terms))
    return DistillationLoss(ce + weight * torch.stack(terms).sum(), ce, terms, weight)


# -- capturing stage outputs ----------------------------------------------------------------
def stage_ends(net: BlockSwapNet) -> list[nn.Module]:
    """The last block of each stage of ``net``, in stage order (from its spec's slots)."""
    slots = net.spec.slots
    ends = [net.blocks[i] for i, slot in enumerate(slots) if i + 1 == len(slots) or slots[i + 1].stage != slot.stage]
    if not ends:
        raise ModelError(f"{net.spec.name} has no blocks, so no stage outputs to transfer attention from")
    return ends


class StageTaps:
    """Forward hooks on the last block of each stage; ``outputs`` holds their latest outputs.

    Use as a context manager: the hooks are removed on exit, leaving the
    network as it was. Call :meth:`clear` before each forward pass.
    """

    def __init__(self, net: nn.Module) -> None:
        if not isinstance(net, BlockSwapNet):
            raise ModelError(f"stage outputs are found from a BlockSwap network's spec; got {type(net).__name__}")
        self.net = net
        self.modules = stage_ends(net)
        self.outputs: list[torch.Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        self.outputs.append(output)

    def clear(self) -> None:
        self.outputs = []

    def __enter__(self) -> StageTaps:
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs = []

    def capture(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the network on ``x``: (logits, stage outputs in order)."""
        self.clear()
        logits = self.net(x)
        if len(self.outputs) != len(self.modules):
            raise ModelError(f"expected {len(self.modules)} stage outputs from {self.net.spec.name}, caught "
                             f"{len(self.outputs)} (is a stage's last block run more than once or not at all?)")
        outputs, self.outputs = self.outputs, []
        return logits, outputs
