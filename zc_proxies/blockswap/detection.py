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
    on one minibatch of COCO images and targets as the loss: :func:`zc_proxies.score`
    of a :class:`DetectionBatch`; see :func:`detection_fisher_potential`.
The search
    :func:`search_detection`: the classification search's rejection sampler,
    per-candidate seeds and resumable candidate store, with this score.
Training and evaluation
    :mod:`.detection_train` trains the winner's detector on COCO with the
    paper's schedule (torchvision's Mask R-CNN defaults), resumably (``zcbench blockswap
    train-detector``); :mod:`.coco_eval` measures its box and mask AP with
    pycocotools (``zcbench blockswap eval-detector``).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..batch import Batch, LossFn, model_device
from ..data.coco import COCO_NUM_CLASSES, CocoDataset, CocoWarning, load_coco
from ..data.images import data_root
from ..errors import ArchError, BatchError, DataError, ModelError
from ..proxies import get_proxy
from ..runs.device import check_device
from ..runs.layout import network_in_layout, resolve_layout
from ..runs.runner import Runner
from ..runs.search import SearchResult, run_search, scored_row
from ..runs.seeding import derive_seed
from ..runs.shards import Shard
from ..score import score
from .blocks import PAPER_POOL
from .config import Configuration
from .networks import BlockSwapNet, NetSpec, count_parameters, get_net
from .search import PROXY, Sampler, check_search_fields, draw_candidate, save_winner, score_built

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
def summed_losses(losses: Any, _targets: Any) -> torch.Tensor:
    """The sum of a torchvision detector's training losses (the dict it returns in train mode)."""
    if not isinstance(losses, dict) or not losses:
        raise ModelError(f"the detector returned {type(losses).__name__}, not its dict of training losses; "
                         "is it a torchvision detection model?")
    return torch.stack([v.reshape(()) for v in losses.values()]).sum()


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
        if (not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.dim() != 3
                or image.shape[0] != 3):
            raise BatchError(f"image {i} must be a float tensor (3, H, W), got "
                             + (f"{tuple(image.shape)} {image.dtype}" if isinstance(image, torch.Tensor)
                                else type(image).__name__))
        if not isinstance(target, Mapping):
            raise BatchError(f"target {i} must be a dict of tensors (boxes, labels, masks), got {type(target).__name__}")
        missing = [key for key in ("boxes", "labels", "masks") if key not in target]
        if missing:
            raise BatchError(f"target {i} lacks {', '.join(missing)} (Mask R-CNN trains on boxes, labels, masks)")
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        if not all(isinstance(t, torch.Tensor) for t in (boxes, labels, masks)):
            raise BatchError(f"target {i}: boxes, labels and masks must be tensors, got {type(boxes).__name__}, "
                             f"{type(labels).__name__} and {type(masks).__name__}")
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


def _takes_images_and_targets(model: nn.Module) -> bool:
    """Whether ``model.forward`` accepts two positional arguments (a classifier's takes one)."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    kinds = [p.kind for p in signature.parameters.values()]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Parameter.VAR_POSITIONAL in kinds or sum(kind in positional for kind in kinds) >= 2


@dataclass(frozen=True, eq=False)
class DetectionBatch(Batch):
    """A minibatch for a torchvision detector: images of any sizes and one target dict per image.

    The detector is called as ``model(images, targets)`` and, in train mode,
    returns its dict of training losses; the loss is their sum (for Mask R-CNN:
    classifier, box regression, mask, objectness and RPN box losses). Scored
    with :func:`zc_proxies.score` like a classification batch, e.g.
    ``score(detector, DetectionBatch(images, targets), "fisher_potential")``;
    proxies that need the inputs as one tensor refuse it.

    Attributes
    ----------
    inputs
        The images, float tensors ``(3, H, W)``.
    targets
        One dict per image with ``boxes`` ``(n, 4)`` (x1, y1, x2, y2), ``labels``
        ``(n,)`` in ``1..classes - 1`` and ``masks`` ``(n, H, W)``.
    loss
        ``loss(loss_dict, targets)``; the sum of the losses by default.
    device
        As for :class:`~zc_proxies.batch.Batch`: where the private copy of the
        detector and the batch are scored (the detector's device when None).
    """

    inputs: Images
    targets: Targets
    loss: LossFn = summed_losses
    device: torch.device | str | None = None

    @property
    def num_samples(self) -> int:
        """How many images the batch holds."""
        return len(self.inputs)

    def check(self, model: nn.Module, *, needs_labels: bool = True) -> DetectionBatch:
        """Validate the batch against the detector (:func:`check_detection_batch`); return it on the scoring device."""
        if not _takes_images_and_targets(model):
            raise ModelError(f"a DetectionBatch calls model(images, targets), but {type(model).__name__}.forward "
                             "takes one input; pass a torchvision detection model")
        check_detection_batch(model, self.inputs, self.targets)
        return self.to(self.device if self.device is not None else model_device(model))

    def to(self, device: torch.device | str) -> DetectionBatch:
        """The same batch with its images and target tensors on ``device`` (which it then scores on)."""
        device = torch.device(device)
        images = [image.to(device) for image in self.inputs]
        targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
                   for t in self.targets]
        return dataclasses.replace(self, inputs=images, targets=targets,
                                   device=images[0].device if images else device)

    def forward(self, model: nn.Module) -> Any:
        """Run the detector on the batch: ``model(images, targets)`` (its loss dict in train mode)."""
        return model(list(self.inputs), list(self.targets))


def detection_fisher_potential(detector: nn.Module, images: Images, targets: Targets, *, seed: int = 0) -> float:
    """BlockSwap's Fisher potential of a torchvision detector on one minibatch.

    ``score(detector, DetectionBatch(images, targets), "fisher_potential", seed=seed)``:
    the registered proxy (per block probe and channel,
    ``1/2 mean_n (sum over positions of a * dL/da)^2``, summed) on a private
    train-mode copy of ``detector``, with ``L`` the sum of its training losses.
    Only the backbone holds BlockProbes, so only its blocks are measured. The
    caller's detector is left untouched, and ``seed`` seeds the RPN's and ROI
    heads' random sampling of anchors and proposals.

    Raises
    ------
    BatchError
        A minibatch that does not fit the detector.
    ModelError
        A detector without BlockProbes.
    NonFiniteScoreError
        A NaN or infinite score.
    """
    return float(score(detector, DetectionBatch(images, targets), PROXY, seed=seed))


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
                                  min_size: int = 800, max_size: int = 1333, device: str | torch.device = "cpu",
                                  layout: str = "nchw") -> tuple[float, dict[str, int]]:
    """Fisher potential of the detector over ``config`` (weights seeded ``seed``), and its parameter counts.

    The detector is built on the CPU for this call alone, put in ``layout``
    (NHWC: the whole detector, with exact BatchNorm statistics) and scored
    in place on ``device``, with the batch.
    """
    detector = build_detector(config, seed=seed, min_size=min_size, max_size=max_size)
    counts = {"params": count_parameters(detector.backbone.body),
              "backbone_params": count_parameters(detector.backbone),
              "detector_params": count_parameters(detector)}
    if counts["params"] != body_params(config):
        raise ArchError(f"internal: analytic body count {body_params(config)} != built {counts['params']}")
    detector = network_in_layout(detector, layout)
    batch = DetectionBatch(images, targets, device=device)
    return score_built(detector, batch, seed), counts


@dataclass(frozen=True)
class DetectionSearchJob:
    """What a worker needs to score detection candidates: settings, data root, device and threads."""

    settings: DetectionSearchSettings
    data_root: str
    device: str = "cpu"
    threads: int | None = None
    layout: str = "nchw"


@dataclass
class DetectionSearchState:
    """A worker's loaded COCO search: skeleton, body sampler, the COCO set and the shared minibatch (if any)."""

    job: DetectionSearchJob
    spec: NetSpec
    sampler: Sampler
    data: CocoDataset
    shared: tuple[Images, Targets] | None


def open_coco(settings: DetectionSearchSettings, root: str | Path) -> CocoDataset:
    """The COCO images of a search (the data layer's), checked against the detector's head."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CocoWarning)  # said once, by the run, not by every worker
        data = load_coco(root, settings.split)
    top = max(data.categories, default=0)
    if top >= settings.num_classes:
        raise DataError(f"{data.name} has category ids up to {top}, but the detector has {settings.num_classes} "
                        f"classes; use at least {top + 1}")
    return data


def setup_detection_search(job: DetectionSearchJob) -> DetectionSearchState:
    """Load what scoring detection candidates needs (once per worker process)."""
    if job.threads:
        torch.set_num_threads(job.threads)
    s = job.settings
    data = open_coco(s, job.data_root)
    shared = data.minibatch(s.batch_size, derive_seed(s.seed, "batch")) if s.shared_batch else None
    return DetectionSearchState(job, get_net(s.net), body_sampler(s), data, shared)


def score_detection_candidate(state: DetectionSearchState, i: int) -> list[dict[str, Any]]:
    """Candidate ``i``: drawn under the body budget, built as a detector, scored; its row (failures recorded)."""
    s = state.job.settings
    t0 = time.perf_counter()
    row, config = draw_candidate(i, s.seed, state.spec, state.sampler, s.num_classes, s.batch_size,
                                 state.shared is not None)
    row["layout"] = state.job.layout

    def compute(row: dict[str, Any]) -> float:
        images, targets = state.shared if state.shared is not None else state.data.minibatch(s.batch_size, row["seed"])
        row["image_ids"] = [int(t["image_id"]) for t in targets]
        value, counts = score_detection_configuration(config, images, targets, row["seed"], min_size=s.min_size,
                                                      max_size=s.max_size, device=state.job.device,
                                                      layout=state.job.layout)
        row.update(counts)
        return value

    return [scored_row(row, t0, compute)]


def search_detection(settings: DetectionSearchSettings, *, data_dir: str | Path | None = None,
                     store: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                     layout: str = "auto", runner: Runner | None = None, shard: Shard | None = None,
                     progress: bool = True, wait: bool = False, on_wait: Callable[[str], None] | None = None,
                     on_candidate: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or resume) a BlockSwap search of Mask R-CNN backbones on COCO.

    As :func:`~zc_proxies.blockswap.search.search`: candidate ``i`` is drawn
    under the budget from ``derive_seed(seed, "candidate", i)`` alone, built
    with weights seeded by it, scored on its own minibatch (seeded by it, or
    the shared one) and appended to the store; a rerun skips stored
    candidates, and workers or shards do not change any row. The result's
    ``feasible`` range is in body parameters. ``layout`` is as for the
    classification search, for the whole detector; recorded in every row.
    """
    root = data_root(data_dir)
    spec = get_net(settings.net)
    device = check_device(device)
    job = DetectionSearchJob(settings, str(root), device, threads, resolve_layout(layout, spec, device))
    sampler = body_sampler(settings)
    data = load_coco(root, settings.split)  # problems with the data stop the search before anything is stored
    open_coco(settings, root)  # and a head too small for its categories
    return run_search(job, setup_detection_search, score_detection_candidate, samples=settings.samples,
                      settings=settings.fingerprint(data.name), feasible=sampler.range, store=store, runner=runner,
                      shard=shard, progress=progress, wait=wait, on_wait=on_wait, on_candidate=on_candidate,
                      desc=f"blockswap {spec.name} on {data.name} {settings.budget:,}")


def save_detection_winner(result: SearchResult, path: str | Path) -> Configuration:
    """Write the winning backbone's configuration (and its detector's parameter counts) to ``path``."""
    best = result.best or {}
    return save_winner(result, path, task=TASK, backbone_params=best.get("backbone_params"),
                       detector_params=best.get("detector_params"))
