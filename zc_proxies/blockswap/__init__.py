"""BlockSwap (Turner et al., ICLR 2020): cheap mixed-block students chosen by Fisher potential.

``blocks``    the block types (S, G(g), B(b), BG(b,g)) as pre-activation residual blocks
``networks``  WRN-depth-width and ResNet-34 skeletons with one block type per block
``config``    a configuration and its JSON form
``search``    rejection sampling under a parameter budget, ranking by ``fisher_potential``
``store``     the search's resumable JSONL candidate store
``attention`` attention maps and the attention-transfer loss over matched stage outputs
``trainset``  CIFAR training data: a seeded holdout split and augmented minibatches
``checkpoint`` network files and checkpoints, written atomically
``train``     resumable training of a teacher, and distillation of the chosen student with AT
``coco``      COCO instance annotations (boxes, polygon/RLE masks) read without pycocotools
``detection`` ResNet-34 BlockSwap backbones in torchvision's Mask R-CNN, their Fisher potential and search on COCO
"""

from .blocks import PAPER_POOL, Block, BlockType, Groups, parse_block
from .checkpoint import load_network, save_network
from .coco import CocoDataset, load_coco
from .config import Configuration
from .detection import DetectionSearchSettings, build_detector, detection_fisher_potential, search_detection
from .networks import BlockSwapNet, NetSpec, count_parameters, get_net, resnet34, wrn
from .search import SearchResult, SearchSettings, feasible_range, parse_budget, search
from .train import TrainResult, TrainSettings, distill, train

__all__ = [
    "PAPER_POOL", "Block", "BlockSwapNet", "BlockType", "CocoDataset", "Configuration", "DetectionSearchSettings",
    "Groups", "NetSpec", "build_detector", "detection_fisher_potential", "load_coco", "search_detection",
    "SearchResult", "SearchSettings", "TrainResult", "TrainSettings", "count_parameters", "distill",
    "feasible_range", "get_net", "load_network", "parse_block", "parse_budget", "resnet34", "save_network",
    "search", "train", "wrn",
]
