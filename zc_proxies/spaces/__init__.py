"""Search-space adapters: one subpackage per benchmark, imported here so they register."""

from . import (
    nb101,  # noqa: F401
    nb201,  # noqa: F401
    nds,  # noqa: F401
)
from .base import SPACES, SearchSpace, Target, get_space, list_spaces, list_specs, register_space

__all__ = ["SPACES", "SearchSpace", "Target", "get_space", "list_spaces", "list_specs", "register_space"]
