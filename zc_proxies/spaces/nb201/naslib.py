"""NASLib's NAS-Bench-201 architecture key: the op-index tuple ``"(t0, t1, t2, t3, t4, t5)"``.

NASLib numbers the ops 0 skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1,
4 avg_pool_3x3 and orders the edges (1,2), (1,3), (1,4), (2,3), (2,4), (3,4)
(its nodes counted from 1); the official arch string lists them by target node,
``|1<-0|+|2<-0|2<-1|+|3<-0|3<-1|3<-2|``.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from ...errors import DataError
from .arch import format_arch, parse_arch

#: NASLib's NAS-Bench-201 op ids
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
# position in NASLib's tuple of each edge of the arch string (1<-0 | 2<-0 2<-1 | 3<-0 3<-1 3<-2)
_STRING_ORDER = (0, 1, 3, 2, 4, 5)


def _parse_tuple(text: str) -> tuple:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"architecture key {text!r} is not a tuple or list literal") from None
    if not isinstance(value, (tuple, list)):
        raise DataError(f"architecture key {text!r} is not a tuple or list literal")
    return tuple(value)


def from_naslib_key(key: str | Sequence[int]) -> str:
    """The arch string of a NASLib NAS-Bench-201 op tuple (or its text ``"(4, 3, 3, 0, 0, 0)"``)."""
    ops = _parse_tuple(key) if isinstance(key, str) else tuple(key)
    if len(ops) != 6 or not all(isinstance(o, int) and 0 <= o < len(NASLIB_OPS) for o in ops):
        raise DataError(f"{key!r} is not a NASLib NAS-Bench-201 key: expected 6 op ids in 0..4")
    return format_arch([NASLIB_OPS[ops[i]] for i in _STRING_ORDER])


def to_naslib_key(arch: str) -> str:
    """NASLib's key ``"(t0, ..., t5)"`` of an official NAS-Bench-201 arch string."""
    ids = [0] * 6
    for pos, op in zip(_STRING_ORDER, parse_arch(arch)):
        ids[pos] = NASLIB_OPS.index(op)
    return "(" + ", ".join(str(i) for i in ids) + ")"
