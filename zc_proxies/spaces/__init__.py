"""Search-space adapters: one subpackage per benchmark, imported here so they register."""

from .base import SPACES, SearchSpace, get_space, list_spaces, register_space
from . import nb201  # noqa: F401
from . import nds  # noqa: F401
from . import nb101  # noqa: F401

__all__ = ["SPACES", "SearchSpace", "get_space", "list_spaces", "register_space"]
