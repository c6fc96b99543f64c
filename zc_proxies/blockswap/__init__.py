"""BlockSwap (Turner et al., ICLR 2020): cheap mixed-block students chosen by Fisher potential.

``blocks``    the block types (S, G(g), B(b), BG(b,g)) as pre-activation residual blocks
``networks``  WRN-depth-width and ResNet-34 skeletons with one block type per block
``config``    a configuration and its JSON form
``search``    rejection sampling under a parameter budget, ranking by ``fisher_potential``
``store``     the search's resumable JSONL candidate store
"""

from .blocks import PAPER_POOL, Block, BlockType, Groups, parse_block
from .config import Configuration
from .networks import BlockSwapNet, NetSpec, count_parameters, get_net, resnet34, wrn
from .search import SearchResult, SearchSettings, feasible_range, parse_budget, search

__all__ = [
    "PAPER_POOL", "Block", "BlockSwapNet", "BlockType", "Configuration", "Groups", "NetSpec",
    "SearchResult", "SearchSettings", "count_parameters", "feasible_range", "get_net", "parse_block",
    "parse_budget", "resnet34", "search", "wrn",
]
