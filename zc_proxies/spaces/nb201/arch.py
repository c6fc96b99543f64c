"""The NAS-Bench-201 architecture string: parsing, checking and formatting.

A NAS-Bench-201 cell is a DAG on four nodes; node 0 is the cell input and node
``j`` (1..3) is the sum of one operation applied to every earlier node. The
official string lists, node by node, each incoming edge as ``op~source``::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

so its six edges come in the order 1<-0 | 2<-0, 2<-1 | 3<-0, 3<-1, 3<-2
(:data:`EDGES`). Only this canonical form is accepted: a string that lists an
edge out of order, misses one or repeats one is refused with an
:class:`~zc_proxies.errors.ArchError` that says which, so a typo can never
silently name a different architecture.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterator, Sequence

from ...errors import ArchError

#: The five candidate operations, in the benchmark's own order.
OP_NAMES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: Intermediate nodes of a cell (node 0 is the input).
NUM_NODES = 3

#: ``(target, source)`` of each edge, in the order the arch string lists them.
EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for j in range(1, NUM_NODES + 1) for i in range(j))

#: Number of architectures in the space: five ops on each of six edges.
NUM_ARCHS = len(OP_NAMES) ** len(EDGES)

_OP_ALT = "|".join(OP_NAMES)
#: Matches exactly the canonical arch strings (used to check whole tables at once).
ARCH_PATTERN = "".join(
    "\\|" + "".join(f"(?:{_OP_ALT})~{i}\\|" for i in range(j)) + ("\\+" if j < NUM_NODES else "")
    for j in range(1, NUM_NODES + 1)
)
_ARCH_RE = re.compile(ARCH_PATTERN)


def _op_hint(op: str) -> str:
    close = difflib.get_close_matches(op, OP_NAMES, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_arch(arch: str) -> tuple[str, ...]:
    """The six op names of ``arch``, in :data:`EDGES` order.

    Raises
    ------
    ArchError
        If ``arch`` is not a string, has the wrong number of nodes or edges,
        bad ``|`` / ``+`` / ``~`` separators, an unknown op (with a close-match
        hint) or a source index that does not fit its position.
    """
    if not isinstance(arch, str):
        raise ArchError(f"a NAS-Bench-201 arch must be a string like {format_arch(('nor_conv_3x3',) * 6)!r}, "
                        f"got {type(arch).__name__}")
    text = arch.strip()
    if _ARCH_RE.fullmatch(text):  # fast path for well-formed strings
        return tuple(part.split("~")[0] for part in text.replace("+", "").split("|") if part)
    nodes = text.split("+")
    if len(nodes) != NUM_NODES:
        raise ArchError(f"arch {arch!r} has {len(nodes)} node(s) separated by '+', expected {NUM_NODES} "
                        "(form |op~0|+|op~0|op~1|+|op~0|op~1|op~2|)")
    ops: list[str] = []
    for j, node in enumerate(nodes, start=1):
        if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
            raise ArchError(f"arch {arch!r}: node {j} is {node!r}, which must start and end with '|'")
        edges = node[1:-1].split("|")
        if any(not e for e in edges):
            raise ArchError(f"arch {arch!r}: node {j} ({node!r}) has an empty edge (doubled '|' separator)")
        if len(edges) != j:
            raise ArchError(f"arch {arch!r}: node {j} has {len(edges)} incoming edge(s), expected {j} "
                            f"(one from each of nodes {', '.join(map(str, range(j)))})")
        for i, edge in enumerate(edges):
            if edge.count("~") != 1:
                raise ArchError(f"arch {arch!r}: edge {edge!r} of node {j} must have the form op~source "
                                "with exactly one '~'")
            op, source = edge.split("~")
            if op not in OP_NAMES:
                raise ArchError(f"arch {arch!r}: unknown op {op!r}{_op_hint(op)} (ops: {', '.join(OP_NAMES)})")
            if source != str(i):
                raise ArchError(f"arch {arch!r}: edge {edge!r} is edge {i + 1} of node {j}, so its source index "
                                f"must be {i}, got {source!r} (edges are listed from node 0 upwards)")
            ops.append(op)
    return tuple(ops)


def format_arch(ops: Sequence[str]) -> str:
    """The official string of six op names given in :data:`EDGES` order."""
    ops = tuple(ops)
    if len(ops) != len(EDGES):
        raise ArchError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)} ops")
    for op in ops:
        if op not in OP_NAMES:
            raise ArchError(f"unknown op {op!r}{_op_hint(str(op))} (ops: {', '.join(OP_NAMES)})")
    parts, k = [], 0
    for j in range(1, NUM_NODES + 1):
        parts.append("|" + "".join(f"{ops[k + i]}~{i}|" for i in range(j)))
        k += j
    return "+".join(parts)


def all_archs() -> Iterator[str]:
    """Every arch string of the space (product order, NOT the benchmark's index order)."""
    for ops in itertools.product(OP_NAMES, repeat=len(EDGES)):
        yield format_arch(ops)
