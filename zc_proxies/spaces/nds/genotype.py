"""Genotypes of the NDS cell spaces: parsing and validation.

A genotype names two cells, in the layout of DARTS and pycls (and of the
``net.genotype`` field of every NDS record)::

    {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...],
     "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [...]}

Each cell has two inputs, states 0 and 1 (the outputs of the two previous
cells), followed by its nodes: entries ``2k`` and ``2k + 1`` of the op list are
node k's two (op, input state) pairs, and node k becomes state ``k + 2``, the sum
of its two op outputs. So node k may read states ``0 .. k + 1`` only. The concat
list names the states concatenated into the cell output (all nodes for DARTS
and PNAS, the "loose ends" for NASNet, Amoeba and ENAS). In a reduction cell the
ops reading states 0 and 1 have stride 2, so its output may not include them.

An NDS architecture is a genotype plus the network's ``width`` (channels of the
first stage's ops), ``depth`` (number of cells) and whether it has the
auxiliary head (``aux``); :func:`parse_arch` reads it from a ``net`` config or
from the canonical dict :func:`arch_to_json` writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ArchError
from .ops import OPS, unknown_op_message

CELL_KINDS = ("normal", "reduce")


@dataclass(frozen=True)
class Genotype:
    """Normal and reduction cells: (op, input state) pairs and concatenated states."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def cell(self, reduction: bool) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
        """``(ops, concat)`` of the reduction cell if ``reduction`` else of the normal cell."""
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    def to_json(self) -> dict[str, list]:
        """The NDS/pycls JSON layout (lists of ``[op, input]`` pairs and of ints)."""
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @property
    def ops(self) -> set[str]:
        """Names of the ops the two cells use."""
        return {op for op, _ in self.normal + self.reduce}


@dataclass(frozen=True)
class NDSArch:
    """One NDS network: genotype, width, depth (cells) and auxiliary head."""

    genotype: Genotype
    width: int
    depth: int
    aux: bool = False


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        if name not in obj:
            raise ArchError(f"genotype has no {name!r} (has: {', '.join(map(str, obj)) or 'nothing'})")
        return obj[name]
    if hasattr(obj, name):  # a DARTS / pycls Genotype namedtuple
        return getattr(obj, name)
    raise ArchError(f"a genotype must be a mapping with {name!r} (and the other cell fields), got {type(obj).__name__}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_ops(kind: str, raw: Any, vocabulary: Sequence[str] | None, space: str) -> tuple[tuple[str, int], ...]:
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise ArchError(f"{kind} cell: ops must be a list of [op, input] pairs, got {raw!r}")
    pairs = list(raw)
    if not pairs or len(pairs) % 2:
        raise ArchError(
            f"{kind} cell: needs an even, non-zero number of [op, input] pairs (two per node), got {len(pairs)}"
        )
    known = tuple(vocabulary) if vocabulary is not None else tuple(OPS)
    out = []
    for pos, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ArchError(f"{kind} cell, entry {pos}: expected an [op, input] pair, got {pair!r}")
        op, index = pair
        node = pos // 2
        where = f"{kind} cell, node {node} (entry {pos}): "
        if not isinstance(op, str) or op not in known:
            vocab = f" of the {space} space" if vocabulary is not None and space else ""
            if isinstance(op, str) and op in OPS and vocabulary is not None:
                raise ArchError(
                    f"{where}op {op!r} is not in the vocabulary{vocab} (vocabulary: {', '.join(known)})"
                )
            raise ArchError(unknown_op_message(op, known, where))
        if not _is_int(index):
            raise ArchError(f"{where}input {index!r} of op {op!r} is not an integer state index")
        if not 0 <= index < node + 2:
            raise ArchError(
                f"{where}op {op!r} takes input {index}, which is not defined yet: node {node} may read "
                f"only the cell inputs 0, 1 and earlier nodes' states 2..{node + 1} "
                f"(states 0..{node + 1})"
            )
        out.append((op, index))
    return tuple(out)


def _parse_concat(kind: str, raw: Any, num_nodes: int) -> tuple[int, ...]:
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise ArchError(f"{kind}_concat must be a list of state indices, got {raw!r}")
    states = list(raw)
    if not states:
        raise ArchError(f"{kind}_concat is empty: the cell would have no output")
    last = num_nodes + 1
    for s in states:
        if not _is_int(s):
            raise ArchError(f"{kind}_concat: {s!r} is not an integer state index")
        if not 0 <= s <= last:
            raise ArchError(
                f"{kind}_concat names state {s}, which does not exist: the {kind} cell has {num_nodes} "
                f"nodes, so its states are 0, 1 (inputs) and 2..{last} (nodes)"
            )
        if kind == "reduce" and s < 2:
            raise ArchError(
                f"reduce_concat names state {s}, a cell input: a reduction cell's inputs keep the full "
                "spatial size, so they cannot be concatenated with its strided nodes"
            )
    if len(set(states)) != len(states):
        raise ArchError(f"{kind}_concat names a state twice: {states}")
    return tuple(states)


def parse_genotype(obj: Any, vocabulary: Sequence[str] | None = None, space: str = "") -> Genotype:
    """Validate a genotype (NDS/pycls JSON dict or DARTS namedtuple) and return a :class:`Genotype`.

    Parameters
    ----------
    obj
        A mapping (or object) with ``normal``, ``normal_concat``, ``reduce`` and
        ``reduce_concat``.
    vocabulary
        Op names allowed (a space's vocabulary); every op known to
        :data:`~zc_proxies.spaces.nds.ops.OPS` when None.
    space
        Name of the space, for error messages.

    Raises
    ------
    ArchError
        Unknown ops (with close-match hints), inputs that point to states not
        yet defined, concat lists naming missing states, malformed entries.
    """
    cells = {}
    for kind in CELL_KINDS:
        ops = _parse_ops(kind, _field(obj, kind), vocabulary, space)
        concat = _parse_concat(kind, _field(obj, f"{kind}_concat"), len(ops) // 2)
        cells[kind] = (ops, concat)
    return Genotype(
        normal=cells["normal"][0],
        normal_concat=cells["normal"][1],
        reduce=cells["reduce"][0],
        reduce_concat=cells["reduce"][1],
    )


def _positive_int(value: Any, name: str) -> int:
    if not _is_int(value) or value < 1:
        raise ArchError(f"{name} must be a positive integer, got {value!r}")
    return value


def parse_arch(obj: Any, vocabulary: Sequence[str] | None = None, space: str = "") -> NDSArch:
    """Validate an NDS architecture: a ``net`` config or the dict :func:`arch_to_json` writes (or its JSON text).

    ``obj`` needs ``genotype``, ``width`` and ``depth``; ``aux`` (default False)
    is optional and other keys of a ``net`` config (``drop_prob``, ...) are
    ignored: they are training settings, not architecture.
    """
    if isinstance(obj, NDSArch):
        obj = {"genotype": obj.genotype, "width": obj.width, "depth": obj.depth, "aux": obj.aux}
    elif isinstance(obj, str):  # JSON text, e.g. an arch_key or a line of an architecture list
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise ArchError(f"an NDS architecture given as text must be JSON ({exc}): {obj[:80]!r}") from exc
    if not isinstance(obj, Mapping):
        raise ArchError(
            f"an NDS architecture must be a dict with 'genotype', 'width' and 'depth', got {type(obj).__name__}"
        )
    missing = [k for k in ("genotype", "width", "depth") if k not in obj]
    if missing:
        raise ArchError(f"NDS architecture lacks {', '.join(map(repr, missing))} (has: {', '.join(map(str, obj))})")
    aux = obj.get("aux", False)
    if aux is None:
        aux = False
    if not isinstance(aux, bool):
        raise ArchError(f"aux must be true or false, got {aux!r}")
    return NDSArch(
        genotype=parse_genotype(obj["genotype"], vocabulary, space),
        width=_positive_int(obj["width"], "width"),
        depth=_positive_int(obj["depth"], "depth"),
        aux=aux,
    )


def arch_to_json(arch: NDSArch) -> dict[str, Any]:
    """The canonical, JSON-serialisable form of an architecture (what ``space[i]`` returns)."""
    return {"genotype": arch.genotype.to_json(), "width": arch.width, "depth": arch.depth, "aux": arch.aux}


def describe_arch(arch: NDSArch) -> str:
    """A one-line name of an architecture for messages: width, depth, aux and each cell's ``op~input`` list."""
    g = arch.genotype
    cells = "; ".join(f"{kind} " + " ".join(f"{op}~{i}" for op, i in ops)
                      for kind, ops in (("normal", g.normal), ("reduce", g.reduce)))
    return f"width {arch.width}, depth {arch.depth}{', aux' if arch.aux else ''}; {cells}"


def arch_key(arch: NDSArch) -> str:
    """A hashable key: the canonical JSON with sorted keys and no spaces."""
    return json.dumps(arch_to_json(arch), sort_keys=True, separators=(",", ":"))
