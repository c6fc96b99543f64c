"""NAS-Bench-101 cell specifications: validation and pruning.

A cell is a DAG of at most 7 vertices given by an upper-triangular 0/1
adjacency matrix (entry ``[i][j] = 1`` is an edge ``i -> j``) and one op name
per vertex. Vertex 0 is the cell input, the last vertex is the cell output,
and every interior vertex holds one of three ops. The benchmark contains every
such cell with at most 9 edges, after *pruning*: vertices that are not on any
input -> output path do not change the computed function, so they are removed
(with their edges) before a cell is hashed, looked up or built. This mirrors
what the official ``ModelSpec`` does, so a cell with dangling vertices is found
under the same hash as its pruned form.

The limits of 7 vertices and 9 edges are checked on the pruned cell, as in the
official API, so a raw cell with a dangling vertex may carry extra edges.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ArchError

INPUT = "input"
OUTPUT = "output"
CONV3X3 = "conv3x3-bn-relu"
CONV1X1 = "conv1x1-bn-relu"
MAXPOOL3X3 = "maxpool3x3"

#: Interior ops in the official order; the order gives their labels in the graph hash.
INTERIOR_OPS: tuple[str, ...] = (CONV3X3, CONV1X1, MAXPOOL3X3)
MAX_VERTICES = 7
MAX_EDGES = 9


@dataclass(frozen=True)
class CellSpec:
    """A validated NAS-Bench-101 cell (not necessarily pruned).

    Attributes
    ----------
    matrix
        Square, strictly upper-triangular 0/1 adjacency matrix as nested tuples.
    ops
        One op name per vertex: ``"input"``, interior ops from :data:`INTERIOR_OPS`,
        ``"output"``.
    """

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        return sum(map(sum, self.matrix))

    def edge(self, src: int, dst: int) -> bool:
        return bool(self.matrix[src][dst])

    def to_json(self) -> dict[str, list]:
        """The JSON-friendly form ``{"matrix": [[...]], "ops": [...]}`` used by the space."""
        return {"matrix": [list(row) for row in self.matrix], "ops": list(self.ops)}

    def flat_matrix(self) -> str:
        """Row-major ``0``/``1`` string, the layout of the official ``raw_adjacency`` field."""
        return "".join(str(v) for row in self.matrix for v in row)

    def __str__(self) -> str:
        return f"CellSpec(matrix={self.flat_matrix()!r}, ops={','.join(self.ops)!r})"


def _as_matrix(raw: Any) -> list[list[int]]:
    """Nested lists of ints from nested sequences, a numpy array or a flat 0/1 string."""
    if isinstance(raw, str):
        text = raw.strip()
        side = int(round(len(text) ** 0.5))
        if side * side != len(text) or set(text) - {"0", "1"}:
            raise ArchError(
                f"a matrix given as a string must be a flattened square of 0/1 digits; "
                f"got {len(text)} characters {text[:60]!r}"
            )
        return [[int(c) for c in text[r * side:(r + 1) * side]] for r in range(side)]
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, Sequence) or not all(isinstance(row, Sequence) and not isinstance(row, str) for row in raw):
        raise ArchError(f"the adjacency matrix must be a list of rows (2-D), got {type(raw).__name__}: {raw!r:.80}")
    rows = []
    for r, row in enumerate(raw):
        out = []
        for c, value in enumerate(row):
            try:
                as_int = int(value)
            except (TypeError, ValueError):
                raise ArchError(f"matrix entry [{r}][{c}] is {value!r}, not 0 or 1") from None
            if as_int != value or as_int not in (0, 1):
                raise ArchError(f"matrix entry [{r}][{c}] is {value!r}, not 0 or 1")
            out.append(as_int)
        rows.append(out)
    return rows


def _as_ops(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [op.strip() for op in raw.split(",")]
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, Sequence) or not all(isinstance(op, str) for op in raw):
        raise ArchError(f"ops must be a list of op names (strings), got {raw!r:.80}")
    return list(raw)


def _check_op(position: int, op: str, last: int) -> None:
    expected = INPUT if position == 0 else OUTPUT if position == last else None
    if expected is not None:
        if op != expected:
            raise ArchError(f"op {position} must be {expected!r} (the cell's {expected} vertex), got {op!r}")
        return
    if op not in INTERIOR_OPS:
        close = difflib.get_close_matches(op, INTERIOR_OPS, n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ArchError(f"unknown op {op!r} at vertex {position}{hint} (NAS-Bench-101 ops: {', '.join(INTERIOR_OPS)})")


def make_cell(matrix: Any, ops: Any) -> CellSpec:
    """Check ``matrix`` and ``ops`` and wrap them in a :class:`CellSpec` (not pruned).

    Raises
    ------
    ArchError
        The matrix is not 2-D, not square, has entries other than 0/1, has
        entries on or below the diagonal, or its size differs from the number
        of ops; the first/last ops are not ``input``/``output``; an interior
        op is unknown (a close name is suggested).
    """
    rows = _as_matrix(matrix)
    names = _as_ops(ops)
    n = len(rows)
    if n < 2:
        raise ArchError(f"a cell needs at least the input and output vertices; the matrix has {n} row(s)")
    bad = [r for r, row in enumerate(rows) if len(row) != n]
    if bad:
        raise ArchError(f"the adjacency matrix must be square: it has {n} rows but row {bad[0]} has {len(rows[bad[0]])} entries")
    below = [(r, c) for r in range(n) for c in range(r + 1) if rows[r][c]]
    if below:
        r, c = below[0]
        raise ArchError(
            f"the adjacency matrix must be strictly upper triangular (edges only from a lower to a higher "
            f"vertex, no self-loops), but entry [{r}][{c}] is 1"
        )
    if len(names) != n:
        raise ArchError(f"the matrix has {n} vertices but {len(names)} ops were given")
    for i, op in enumerate(names):
        _check_op(i, op, n - 1)
    return CellSpec(tuple(tuple(row) for row in rows), tuple(names))


def cell_from(arch: Any) -> CellSpec:
    """A :class:`CellSpec` from any common cell description.

    Accepted: a :class:`CellSpec`; a mapping with ``matrix`` and ``ops`` (as
    returned by ``space[i]``; the matrix may be a flat 0/1 string and the ops a
    comma-separated string, as in the official records); a ``(matrix, ops)``
    pair; an object with ``original_matrix``/``original_ops`` (the official
    ``ModelSpec``) or ``matrix``/``ops`` attributes.
    """
    if isinstance(arch, CellSpec):
        return arch
    if isinstance(arch, dict):
        missing = [k for k in ("matrix", "ops") if k not in arch]
        if missing:
            raise ArchError(f"a NAS-Bench-101 cell dict needs the keys 'matrix' and 'ops'; missing {missing}")
        return make_cell(arch["matrix"], arch["ops"])
    if isinstance(arch, (tuple, list)) and len(arch) == 2:
        return make_cell(arch[0], arch[1])
    for m_attr, o_attr in (("original_matrix", "original_ops"), ("matrix", "ops")):
        if getattr(arch, m_attr, None) is not None and getattr(arch, o_attr, None) is not None:
            return make_cell(getattr(arch, m_attr), getattr(arch, o_attr))
    raise ArchError(
        f"cannot read a NAS-Bench-101 cell from {type(arch).__name__} {arch!r:.80}; "
        "give {'matrix': [[...]], 'ops': [...]} or (matrix, ops)"
    )


def prune(cell: CellSpec) -> CellSpec:
    """Remove the vertices that are not on an input -> output path.

    Raises ArchError when the input cannot reach the output.
    """
    n = cell.num_vertices
    m = cell.matrix
    from_input = {0}
    stack = [0]
    while stack:
        v = stack.pop()
        for w in range(v + 1, n):
            if m[v][w] and w not in from_input:
                from_input.add(w)
                stack.append(w)
    if n - 1 not in from_input:
        raise ArchError(f"the cell's input cannot reach its output (no input -> output path) in {cell}")
    to_output = {n - 1}
    stack = [n - 1]
    while stack:
        v = stack.pop()
        for u in range(v):
            if m[u][v] and u not in to_output:
                to_output.add(u)
                stack.append(u)
    keep = sorted(from_input & to_output)
    if len(keep) == n:
        return cell
    matrix = tuple(tuple(m[r][c] for c in keep) for r in keep)
    return CellSpec(matrix, tuple(cell.ops[v] for v in keep))


def check_limits(cell: CellSpec) -> CellSpec:
    """Raise ArchError if a pruned cell has more than 7 vertices or 9 edges."""
    if cell.num_vertices > MAX_VERTICES:
        raise ArchError(
            f"the cell has {cell.num_vertices} vertices after pruning; NAS-Bench-101 allows at most "
            f"{MAX_VERTICES} (input and output included)"
        )
    if cell.num_edges > MAX_EDGES:
        raise ArchError(f"the cell has {cell.num_edges} edges after pruning; NAS-Bench-101 allows at most {MAX_EDGES}")
    return cell


def canonical_cell(arch: Any) -> CellSpec:
    """Parse, validate, prune and limit-check ``arch``: the cell the benchmark stores."""
    return check_limits(prune(cell_from(arch)))
