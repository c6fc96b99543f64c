"""BlockSwap (Turner et al., ICLR 2020): cheap mixed-block students chosen by Fisher potential.

``blocks``    the block types (S, G(g), B(b), BG(b,g)) as pre-activation residual blocks
``networks``  WRN-depth-width and ResNet-34 skeletons with one block type per block
``config``    a configuration and its JSON form
``search``    rejection sampling under a parameter budget, each candidate scored by ``fisher_potential``
``attention`` attention maps and the attention-transfer loss over matched stage outputs
``checkpoint`` network files and checkpoints, written atomically
``train``     resumable training of a teacher, and distillation of the chosen student with AT
``detection`` ResNet-34 BlockSwap backbones in torchvision's Mask R-CNN, their Fisher potential and search on COCO

Everything a run shares with the rest of zcbench comes from there: the store,
seeding, runner and the search loop from :mod:`zc_proxies.runs`, images (CIFAR,
ImageNet, COCO) from :mod:`zc_proxies.data`, scoring from :func:`zc_proxies.score`.
"""

from .blocks import PAPER_POOL, Block, BlockType, Groups, parse_block
from .checkpoint import load_network, save_network
from .config import Configuration
from .detection import DetectionSearchSettings, build_detector, detection_fisher_potential, search_detection
from .networks import BlockSwapNet, NetSpec, count_parameters, get_net, resnet34, wrn
from .search import SearchSettings, feasible_range, parse_budget, search
from .train import TrainResult, TrainSettings, distill, train

__all__ = [
    "PAPER_POOL", "Block", "BlockSwapNet", "BlockType", "Configuration", "DetectionSearchSettings",
    "Groups", "NetSpec", "build_detector", "detection_fisher_potential", "search_detection",
    "SearchSettings", "TrainResult", "TrainSettings", "count_parameters", "distill",
    "feasible_range", "get_net", "load_network", "parse_block", "parse_budget", "resnet34", "save_network",
    "search", "train", "wrn",
]
