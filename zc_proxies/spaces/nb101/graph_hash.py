"""The official NAS-Bench-101 graph hash (an iterated MD5 Weisfeiler-Lehman fingerprint).

Every cell is keyed in the official data by a 32-hex-digit MD5 that does not
depend on how the vertices are numbered. It is computed on the pruned cell:

1. Each vertex gets a label: input = -1, output = -2, an interior op its index
   in the official op list (conv3x3-bn-relu = 0, conv1x1-bn-relu = 1,
   maxpool3x3 = 2).
2. The initial hash of a vertex is the MD5 hex digest of the text of the
   Python tuple ``(out_degree, in_degree, label)``, e.g. ``"(2, 0, -1)"``.
3. As many times as there are vertices, every vertex's hash is replaced (all
   at once) by the MD5 of: the sorted hashes of its predecessors joined with
   nothing, ``"|"``, the sorted hashes of its successors joined with nothing,
   ``"|"``, its own hash.
4. The fingerprint is the MD5 of the text of the Python list of the sorted
   vertex hashes, e.g. ``"['0a..', '3f..']"``.

The exact text formats matter: they are what makes the digests equal the keys
of the official records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .spec import INPUT, INTERIOR_OPS, OUTPUT, CellSpec

_LABELS = {INPUT: -1, OUTPUT: -2, **{op: i for i, op in enumerate(INTERIOR_OPS)}}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def graph_hash(matrix: Sequence[Sequence[int]], labels: Sequence[int]) -> str:
    """The fingerprint of a labelled DAG given as a 0/1 ``matrix`` and integer vertex ``labels``."""
    n = len(labels)
    preds = [[u for u in range(n) if matrix[u][v]] for v in range(n)]
    succs = [[w for w in range(n) if matrix[v][w]] for v in range(n)]
    hashes = [_md5(repr((len(succs[v]), len(preds[v]), int(labels[v])))) for v in range(n)]
    for _ in range(n):
        hashes = [
            _md5("".join(sorted(hashes[u] for u in preds[v])) + "|"
                 + "".join(sorted(hashes[w] for w in succs[v])) + "|" + hashes[v])
            for v in range(n)
        ]
    return _md5(repr(sorted(hashes)))


def cell_labels(cell: CellSpec) -> list[int]:
    """The integer labels of a cell's vertices as the hash uses them."""
    return [_LABELS[op] for op in cell.ops]


def cell_hash(cell: CellSpec) -> str:
    """The official hash of an already pruned cell (see :func:`..spec.canonical_cell`)."""
    return graph_hash(cell.matrix, cell_labels(cell))
