"""BlockSwap for detection: mixed-block ResNet-34 backbones in torchvision's Mask R-CNN, ranked on COCO.

The backbone
    The BlockSwap ResNet-34 skeleton (:func:`~zc_proxies.blockswap.networks.resnet34`)
    with one block type per block, without its classifier: the stem and the
    four stages, whose outputs C2..C5 (64, 128, 256, 512 channels at strides
    4, 8, 16, 32) feed torchvision's feature pyramid (256 channels, plus the
    max-pooled P6 level) through ``BackboneWithFPN``; the detector is
    ``torchvision.models.detection.MaskRCNN`` with that backbone. The blocks are
    pre-activation blocks, so a stage output is the raw residual sum (the
    classification network has no final BN either); BatchNorm layers are
    ordinary, trainable ones (torchvision freezes them only for pretrained
    backbones). The head size follows torchvision's COCO convention, 91
    classes indexed by COCO category id (see :mod:`.coco`).
The parameter budget
    counts the backbone *body*: stem and blocks, i.e. what torchvision's
    ``resnet34`` has without its ``fc`` -- the part BlockSwap changes. The
    feature pyramid adds a fixed 2,607,104 parameters and the Mask R-CNN heads
    a fixed amount (with 91 classes: 41,491,185 in all for an all-``S``
    backbone); both are recorded with every candidate. An all-``S`` body
    has 21,281,984 parameters, 2,688 fewer than torchvision's ``resnet34``
    without ``fc`` (21,284,672): a pre-activation block normalises its input
    (``cin`` channels) and its middle (``cout``), while torchvision's
    post-activation block normalises the outputs of both convs (``2 cout``) and
    its downsampling shortcut (``cout``): ``3 cout`` more BN weights and biases
    in each of the three blocks that double the width, 3 x (128 + 256 + 512) =
    2,688 (all other blocks have equally many). The same 2,688 separate this
    backbone with its pyramid (23,889,088) from torchvision's
    ``resnet_fpn_backbone("resnet34", trainable_layers=5)`` with ordinary
    BatchNorm (23,891,776).
The score
    BlockSwap's Fisher potential (the ``fisher_potential`` proxy) over the
    backbone's BlockProbes, with the sum of Mask R-CNN's five training losses
    on one minibatch of COCO images and targets as the loss; see
    :func:`detection_fisher_potential`.
The search
    :func:`search_detection`: the classification search's rejection sampler,
    per-candidate seeds and resumable candidate store, with this score.
"""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArchError, BatchError, DataError, NonFiniteScoreError
from ..proxies import get_proxy
from ..proxies.base import ScoringContext
from .blocks import PAPER_POOL
from .coco import COCO_NUM_CLASSES, CocoDataset, load_coco
from .config import Configuration
from .networks import BlockSwapNet, NetSpec, count_parameters, get_net
from .search import PROXY, Sampler, SearchResult, check_search_fields, draw_candidate, run_search, scored_row

TASK = "coco-mask-rcnn"
FPN_CHANNELS = 256
RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
"""The losses torchvision's Mask R-CNN returns in train mode (RPN: objectness and box; heads: the rest)."""

Images = list[torch.Tensor]
Targets = list[dict[str, torch.Tensor]]


# -- the backbone -----------------------------------------------------------------------------------
class ResNetBody(nn.Module):
    """The stem and four stages (``layer1``..``layer4``) of a BlockSwap ResNet, without the classifier.

    Its children are in forward order, as torchvision's ``IntermediateLayerGetter``
    (inside ``BackboneWithFPN``) requires; ``forward`` returns the four stage
    outputs keyed ``"0"``..``"3"``, as ``BackboneWithFPN``'s body does.
    """

    def __init__(self, net: BlockSwapNet) -> None:
        super().__init__()
        spec = net.spec
        stages = sorted({s.stage for s in spec.slots})
        if spec.family != "resnet" or stages != [0, 1, 2, 3]:
            raise ArchError(f"a detection backbone needs a four-stage ResNet skeleton such as resnet-34, "
                            f"not {spec.name}")
        self.config = net.config
        self.stem = net.stem
        for stage in stages:
            blocks = [b for b, s in zip(net.blocks, spec.slots) if s.stage == stage]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for name, key in RETURN_LAYERS.items():
            x = getattr(self, name)(x)
            out[key] = x
        return out


def stage_channels(spec: NetSpec) -> list[int]:
    """Output channels of each stage (C2..C5), in order."""
    last: dict[int, int] = {}
    for slot in spec.slots:
        last[slot.stage] = slot.out_channels
    return [last[s] for s in sorted(last)]


def body_params(config: Configuration) -> int:
    """Exact parameter count of the configuration's :class:`ResNetBody` (the budgeted count)."""
    spec = config.spec
    return spec.params(config.blocks, config.num_classes) - (spec.head_channels + 1) * config.num_classes


def fpn_params(in_channels: Sequence[int], out_channels: int = FPN_CHANNELS) -> int:
    """Parameters of torchvision's FeaturePyramidNetwork: a 1x1 lateral and a 3x3 output conv per level, with bias."""
    lateral = sum(c * out_channels + out_channels for c in in_channels)
    return lateral + len(in_channels) * (9 * out_channels * out_channels + out_channels)


def build_backbone(config: Configuration, generator: torch.Generator | None = None) -> nn.Module:
    """``BackboneWithFPN`` over the configuration's body.

    The body's weights are drawn from ``generator`` with BlockSwap's
    initialisation; the pyramid's from torch's global generator (torchvision's
    own initialisation), so seed that too for a reproducible network.
    """
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    spec = config.spec
    net = spec.build(config.blocks, num_classes=1, generator=generator)  # the 1-class head is dropped
    return BackboneWithFPN(ResNetBody(net), dict(RETURN_LAYERS), stage_channels(spec), FPN_CHANNELS)


def build_detector(config: Configuration, *, seed: int = 0, min_size: int = 800, max_size: int = 1333,
                   **options: Any) -> nn.Module:
    """torchvision's ``MaskRCNN`` with the configuration's backbone, every weight seeded by ``seed``.

    ``config.num_classes`` is the detector's head size (91 for COCO category
    ids). ``min_size`` and ``max_size`` bound the side lengths the detector
    resizes images to (torchvision's defaults); ``options`` go to ``MaskRCNN``.
    The global torch generator is left as it was.
    """
    from torchvision.models.detection import MaskRCNN

    if config.num_classes < 2:
        raise ArchError(f"a detector needs background plus at least one class, got num_classes {config.num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(config, torch.Generator().manual_seed(seed))
        return MaskRCNN(backbone, num_classes=config.num_classes, min_size=min_size, max_size=max_size, **options)


# -- the score ---------------------------------------------------------------------------------------
class DetectionLoss(nn.Module):
    """A torchvision detector whose ``forward((images, targets))`` is the sum of its training losses."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: tuple[Images, Targets]) -> torch.Tensor:
        images, targets = batch
        losses = self.detector(images, targets)
        if not isinstance(losses, dict) or not losses:
            raise BatchError(f"the detector returned {type(losses).__name__}, not its dict of training losses; "
                             "is it a torchvision detection model?")
        return torch.stack([v.reshape(()) for v in losses.values()]).sum()


def _loss_is_output(output: torch.Tensor, _targets: Any) -> torch.Tensor:
    return output


def num_classes_of(detector: nn.Module) -> int | None:
    """Head size of a torchvision R-CNN (None when it has no box predictor to ask)."""
    predictor = getattr(getattr(detector, "roi_heads", None), "box_predictor", None)
    layer = getattr(predictor, "cls_score", None)
    return int(layer.out_features) if isinstance(layer, nn.Linear) else None


def check_detection_batch(detector: nn.Module, images: Images, targets: Targets) -> None:
    """Refuse a minibatch the detector cannot train on, with a message that names the problem."""
    if not isinstance(images, (list, tuple)) or not images:
        raise BatchError("a detection minibatch is a non-empty list of image tensors (3, H, W)")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise BatchError(f"a detection minibatch needs one target dict per image: {len(images)} images, "
                         f"{len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__} targets")
    k = num_classes_of(detector)
    for i, (image, target) in enumerate(zip(images, targets)):
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            raise BatchError(f"image {i} must be a float tensor (3, H, W), got "
                             f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
        missing = [key for key in ("boxes", "labels", "masks") if key not in target]
        if missing:
            raise BatchError(f"target {i} lacks {', '.join(missing)} (Mask R-CNN trains on boxes, labels, masks)")
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        n = boxes.shape[0] if boxes.dim() == 2 else -1
        if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != (n,) or masks.shape != (n, *image.shape[1:]):
            raise BatchError(f"target {i}: boxes {tuple(boxes.shape)}, labels {tuple(labels.shape)} and masks "
                             f"{tuple(masks.shape)} do not describe the same instances of a "
                             f"{tuple(image.shape[1:])} image")
        if n and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
            raise BatchError(f"target {i} has a box without area: {boxes[(boxes[:, 2:] <= boxes[:, :2]).any(1)][0]}")
        if n and k is not None and (int(labels.min()) < 1 or int(labels.max()) >= k):
            raise BatchError(f"target {i} has labels {int(labels.min())}..{int(labels.max())}, but the detector has "
                             f"{k} classes (0 = background): labels must lie in 1..{k - 1}")


def detection_fisher_potential(detector: nn.Module, images: Images, targets: Targets, *, seed: int = 0) -> float:
    """BlockSwap's Fisher potential of a torchvision detector on one minibatch.

    The registered ``fisher_potential`` proxy (the same saliency code and
    formula as for classification: per block probe and channel,
    ``1/2 mean_n (sum over positions of a * dL/da)^2``, summed) runs on a
    private copy of ``detector`` in train mode, with the loss ``L`` the sum of
    the detector's training losses on ``(images, targets)``. Only the
    backbone holds BlockProbes, so only its blocks are measured.

    :func:`zc_proxies.score` is not used because it takes a batch tensor; a
    detector takes a list of images of different sizes and a list of target
    dicts. What it guarantees holds here too: the caller's detector is left
    untouched, and the result depends only on the weights, the batch and
    ``seed`` (which seeds the RPN's and ROI heads' random sampling of
    anchors and proposals).

    Raises
    ------
    BatchError
        A minibatch that does not fit the detector.
    ModelError
        A detector without BlockProbes.
    NonFiniteScoreError
        A NaN or infinite score.
    """
    check_detection_batch(detector, images, targets)
    work = DetectionLoss(copy.deepcopy(detector))
    work.train()
    for p in work.parameters():
        p.grad = None
    proxy = get_proxy(PROXY)
    ctx = ScoringContext(model=work, inputs=(list(images), list(targets)),  # type: ignore[arg-type]
                         targets=None, loss_fn=_loss_is_output, seed=seed)
    devices = [images[0].device] if images[0].device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        value = float(proxy.fn(ctx))
    if not math.isfinite(value):
        raise NonFiniteScoreError(f"{PROXY} of the detector gave {value} on this minibatch (NaN or infinite)")
    return value


# -- the search ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionSearchSettings:
    """Everything that determines a COCO search's candidates and scores.

    Attributes
    ----------
    net
        A four-stage ResNet skeleton (``resnet-34``).
    budget, tolerance
        Accept backbone bodies (stem + blocks) with ``budget * (1 +- tolerance)`` parameters.
    samples, seed
        Number of candidates; candidate ``i`` uses ``candidate_seed(seed, i)``.
    batch_size
        COCO images in the scoring minibatch.
    num_classes
        Detector head size (91: COCO category ids).
    min_size, max_size
        The detector's image resizing bounds (torchvision's defaults 800, 1333).
    shared_batch
        Score every candidate on one minibatch (seeded ``seed``) rather than its own.
    split
        COCO split read from ``coco/`` under the data root (else the COCO sample).
    pool, max_draws
        Block types to draw from; rejection-sampling attempts per candidate.
    """

    net: str = "resnet-34"
    budget: int = 10_000_000
    samples: int = 100
    seed: int = 0
    batch_size: int = 2
    tolerance: float = 0.025
    num_classes: int = COCO_NUM_CLASSES
    min_size: int = 800
    max_size: int = 1333
    shared_batch: bool = False
    split: str = "train2017"
    pool: tuple[str, ...] = field(default_factory=lambda: tuple(b.name for b in PAPER_POOL))
    max_draws: int = 1_000_000

    def __post_init__(self) -> None:
        spec = get_net(self.net)
        if spec.family != "resnet":
            raise ArchError(f"the COCO search needs a ResNet skeleton (resnet-34), not {spec.name}")
        check_search_fields(self, ("min_size", "max_size"))
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2 (background + classes), got {self.num_classes!r}")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} exceeds max_size {self.max_size}")

    def fingerprint(self, dataset: str) -> dict[str, Any]:
        """What a stored candidate must share with this search to be reused (not ``samples``)."""
        out = asdict(self)
        del out["samples"], out["max_draws"], out["split"]
        out.update(pool=list(self.pool), task=TASK, dataset=dataset, budget_counts="body",
                   proxy=PROXY, proxy_version=get_proxy(PROXY).spec.version)
        return out


def body_sampler(settings: DetectionSearchSettings) -> Sampler:
    """The rejection sampler over body parameter counts (a classifier head of zero classes)."""
    try:
        return Sampler(get_net(settings.net), settings.pool, 0, settings.budget, settings.tolerance,
                       settings.max_draws)
    except ArchError as exc:
        raise ArchError(str(exc).replace("and 0 classes", "for the backbone body (stem and blocks)")) from None


def score_detection_configuration(config: Configuration, images: Images, targets: Targets, seed: int, *,
                                  min_size: int = 800, max_size: int = 1333,
                                  device: str | torch.device = "cpu") -> tuple[float, dict[str, int]]:
    """Fisher potential of the detector over ``config`` (weights seeded ``seed``), and its parameter counts."""
    detector = build_detector(config, seed=seed, min_size=min_size, max_size=max_size)
    counts = {"params": count_parameters(detector.backbone.body),
              "backbone_params": count_parameters(detector.backbone),
              "detector_params": count_parameters(detector)}
    if counts["params"] != body_params(config):
        raise ArchError(f"internal: analytic body count {body_params(config)} != built {counts['params']}")
    device = torch.device(device)
    detector = detector.to(device)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return detection_fisher_potential(detector, images, targets, seed=seed), counts


def search_detection(settings: DetectionSearchSettings, *, data: CocoDataset | None = None,
                     data_dir: str | Path | None = None, store: str | Path | None = None,
                     device: str | torch.device = "cpu", progress: bool = True,
                     on_candidate: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or resume) a BlockSwap search of Mask R-CNN backbones on COCO.

    As :func:`~zc_proxies.blockswap.search.search`: candidate ``i`` is drawn
    under the budget from ``candidate_seed(seed, i)`` alone, built with weights
    seeded by it, scored on its own minibatch (seeded by it, or the shared one)
    and appended to the store; a rerun skips stored candidates. The result's
    ``feasible`` range is in body parameters.
    """
    spec = get_net(settings.net)
    sampler = body_sampler(settings)
    if data is None:
        data = load_coco(data_dir, settings.split)
    top = max(data.categories, default=0)
    if top >= settings.num_classes:
        raise DataError(f"{data.name} has category ids up to {top}, but the detector has {settings.num_classes} "
                        f"classes; use at least {top + 1}")
    fingerprint = settings.fingerprint(data.name)
    coco = data

    def prepare(todo: list[int]) -> Callable[[int], dict[str, Any]]:
        shared = coco.minibatch(settings.batch_size, settings.seed) if (settings.shared_batch and todo) else None
        return lambda i: _run_candidate(i, settings, spec, sampler, fingerprint, coco, shared, device)

    return run_search(settings.samples, fingerprint, store, prepare, feasible=sampler.range, progress=progress,
                      desc=f"blockswap {spec.name} on {data.name} {settings.budget:,}", on_candidate=on_candidate)


def _run_candidate(i: int, settings: DetectionSearchSettings, spec: NetSpec, sampler: Sampler,
                   fingerprint: dict[str, Any], data: CocoDataset, shared: tuple[Images, Targets] | None,
                   device: str | torch.device) -> dict[str, Any]:
    t0 = time.perf_counter()
    row, config = draw_candidate(i, settings.seed, spec, sampler, settings.num_classes, settings.batch_size,
                                 shared is not None)
    seed = row["seed"]

    def compute(row: dict[str, Any]) -> float:
        images, targets = shared if shared is not None else data.minibatch(settings.batch_size, seed)
        row["image_ids"] = [int(t["image_id"]) for t in targets]
        value, counts = score_detection_configuration(
            config, images, targets, seed, min_size=settings.min_size, max_size=settings.max_size, device=device)
        row.update(counts)
        return value

    return scored_row(row, fingerprint, t0, compute)
