"""Search-space adapters: one subpackage per benchmark, imported here so they register."""

from .base import SPACES, SearchSpace, get_space, list_spaces, register_space

__all__ = ["SPACES", "SearchSpace", "get_space", "list_spaces", "register_space"]
