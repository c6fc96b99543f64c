"""NAS-Bench-101 cells: validation errors, pruning, and the official hash against the stored table."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from zc_proxies.errors import ArchError
from zc_proxies.spaces.nb101.graph_hash import cell_hash
from zc_proxies.spaces.nb101.spec import canonical_cell, make_cell, prune

C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"

# The Inception-like example cell of the official README; its official hash and
# parameter count are quoted in data/nb101/PROVENANCE.md (from the official API output).
INCEPTION = {
    "matrix": [[0, 1, 1, 1, 0, 1, 0],
               [0, 0, 0, 0, 0, 0, 1],
               [0, 0, 0, 0, 0, 0, 1],
               [0, 0, 0, 0, 1, 0, 0],
               [0, 0, 0, 0, 0, 0, 1],
               [0, 0, 0, 0, 0, 0, 1],
               [0, 0, 0, 0, 0, 0, 0]],
    "ops": ["input", C1, C3, C3, C3, MP, "output"],
}
INCEPTION_HASH = "28cfc7874f6d200472e1a9dcd8650aa0"


@pytest.fixture(scope="module")
def table(data_root):
    return pd.read_csv(data_root / "nb101" / "nb101_all.csv.gz", dtype={"matrix": str, "hash": str},
                       usecols=["index", "hash", "matrix", "ops", "params"])


def test_inception_example_hash():
    assert cell_hash(canonical_cell(INCEPTION)) == INCEPTION_HASH


def test_first_stored_cell_hash():
    # index 0 of the table; also the sile/nasbench-rs README query example
    cell = make_cell("0100110001000000010010000010000001000000010000000",
                     f"input,{C3},{MP},{C3},{C3},{C1},output")
    assert cell_hash(cell) == "00005c142e6f48ac74fdcf73e3439874"


def _check_rows(table, rows):
    bad = [int(i) for i in rows
           if cell_hash(make_cell(table.matrix.values[i], table.ops.values[i])) != table.hash.values[i]]
    assert not bad, f"{len(bad)} hash mismatches, e.g. index {bad[:5]}"


def test_hash_parity_seeded_sample(table):
    rows = np.random.default_rng(101).choice(len(table), 20_000, replace=False)
    _check_rows(table, rows)


@pytest.mark.slow
def test_hash_parity_every_arch(table):
    assert len(table) == 423_624
    _check_rows(table, range(len(table)))


def _permute(cell, order):
    """Renumber interior vertices: new vertex k is old vertex order[k]."""
    n = len(order)
    m = [[cell.matrix[order[r]][order[c]] for c in range(n)] for r in range(n)]
    return make_cell(m, [cell.ops[v] for v in order])


def test_hash_is_invariant_to_vertex_numbering():
    cell = canonical_cell(INCEPTION)
    n = cell.num_vertices
    seen = 0
    for perm in itertools.permutations(range(1, n - 1)):
        order = [0, *perm, n - 1]
        m = [[cell.matrix[order[r]][order[c]] for c in range(n)] for r in range(n)]
        if any(m[r][c] for r in range(n) for c in range(r + 1)):
            continue  # not a topological numbering
        assert cell_hash(_permute(cell, order)) == INCEPTION_HASH
        seen += 1
    assert seen > 1


def test_hash_changes_with_an_op():
    other = dict(INCEPTION, ops=["input", C3, C3, C3, C3, MP, "output"])
    assert cell_hash(canonical_cell(other)) != INCEPTION_HASH


def test_pruning_removes_dangling_vertices_and_keeps_the_hash():
    # vertex 2 cannot reach the output; vertex 3 cannot be reached from the input
    matrix = [[0, 1, 1, 0, 0],
              [0, 0, 0, 0, 1],
              [0, 0, 0, 0, 0],
              [0, 0, 0, 0, 1],
              [0, 0, 0, 0, 0]]
    cell = make_cell(matrix, ["input", C3, MP, C1, "output"])
    pruned = prune(cell)
    assert pruned.matrix == ((0, 1, 0), (0, 0, 1), (0, 0, 0))
    assert pruned.ops == ("input", C3, "output")
    assert cell_hash(canonical_cell(cell)) == cell_hash(make_cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]],
                                                                  ["input", C3, "output"]))


def test_limits_are_checked_after_pruning():
    # 10 edges before pruning, but the dangling vertex 5 takes 2 of them away
    m = np.zeros((7, 7), dtype=int)
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (0, 6), (1, 3), (2, 4), (0, 5), (1, 5)]:
        m[a, b] = 1
    cell = canonical_cell((m, ["input", C3, C3, C3, C3, C3, "output"]))
    assert cell.num_vertices == 6 and cell.num_edges == 8


@pytest.mark.parametrize("matrix, ops, match", [
    ([[0, 1], [0, 0], [0, 0]], ["input", "output"], "square"),
    ([[0, 1, 0], [0, 0, 1]], ["input", C3, "output"], "square"),
    ([[0, 1, 0], [0, 0, 1], [1, 0, 0]], ["input", C3, "output"], "upper triangular"),
    ([[1, 1], [0, 0]], ["input", "output"], "upper triangular"),
    ([[0, 2], [0, 0]], ["input", "output"], "not 0 or 1"),
    ([0, 1, 0, 0], ["input", "output"], "2-D|list of rows"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3", "output"], "did you mean 'conv3x3-bn-relu'"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool", "output"], "did you mean 'maxpool3x3'"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [C3, C3, "output"], "must be 'input'"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3], "3 vertices but 2 ops"),
    ([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"], "cannot reach its output"),
    ("01000", ["input", "output"], "flattened square"),
])
def test_malformed_cells_are_refused(matrix, ops, match):
    with pytest.raises(ArchError, match=match):
        canonical_cell({"matrix": matrix, "ops": ops})


def test_more_than_seven_vertices_is_refused():
    n = 8
    m = [[1 if c == r + 1 else 0 for c in range(n)] for r in range(n)]
    with pytest.raises(ArchError, match="8 vertices after pruning; NAS-Bench-101 allows at most 7"):
        canonical_cell((m, ["input"] + [C3] * 6 + ["output"]))


def test_more_than_nine_edges_is_refused():
    m = [[1 if c > r else 0 for c in range(7)] for r in range(7)]  # the complete DAG: 21 edges
    with pytest.raises(ArchError, match="21 edges after pruning; NAS-Bench-101 allows at most 9"):
        canonical_cell((m, ["input"] + [C3] * 5 + ["output"]))


def test_missing_keys_and_junk_are_refused():
    with pytest.raises(ArchError, match="needs the keys 'matrix' and 'ops'"):
        canonical_cell({"matrix": [[0, 1], [0, 0]]})
    with pytest.raises(ArchError, match="cannot read a NAS-Bench-101 cell"):
        canonical_cell(3.5)


def test_string_forms_match_list_forms():
    a = canonical_cell({"matrix": "0100110001000000010010000010000001000000010000000",
                        "ops": f"input,{C3},{MP},{C3},{C3},{C1},output"})
    b = canonical_cell((np.array([int(c) for c in "0100110001000000010010000010000001000000010000000"]).reshape(7, 7),
                        ["input", C3, MP, C3, C3, C1, "output"]))
    assert a == b
