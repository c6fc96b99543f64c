"""Which edges of a NAS-Bench-201 cell a proxy's score can depend on.

A cell computes node j = the sum over i < j of op_{j<-i}(node i) and outputs
node 3 (:mod:`.arch`). Some edges cannot change what reaches the loss:

* an edge into a node that cannot reach the cell output through edges other
  than ``none`` (its value is discarded, or multiplied by zero on the way);
* an edge whose output is identically zero: the ``none`` op, and any op fed by
  a node that is identically zero (a node all of whose incoming edges give
  zeros: ``none`` edges, or ops on such nodes). ``skip_connect`` and
  ``avg_pool_3x3`` of zeros are zeros; a ReLU-Conv-BN of zeros is its
  BatchNorm's shift ``beta - gamma * running_mean / sqrt(running_var + eps)``
  in eval mode and ``beta`` in train mode, zeros exactly when that shift is 0
  (``beta`` and ``running_mean`` zero, as PyTorch initialises them).

The two kinds differ for proxies. An edge of the first kind has no path to the
loss at all: nothing of it (no activation, no parameter) has a gradient. An
edge of the second kind is on a path to the loss and its output is zero, but
its BatchNorm shift still gets a gradient (the sum of the gradients arriving at
the node it feeds): a proxy that reads the gradients of BatchNorm parameters
(``nasi``, ``ntk_trace``) sees it, while one that reads only activations times
their gradients, Conv2d/Linear weight gradients (the conv's input is zero, so
its weight gradient is exactly zero) or the input jacobian does not.

:func:`kept_edges` gives, per :data:`~zc_proxies.proxies.base.NETWORK_SCOPES`
scope, the edges a proxy of that scope needs; :class:`~.model.Cell` drops the
others (see :meth:`~.model.Cell.dead_ops`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import ArchError
from ...proxies.base import LIVE, NETWORK_SCOPES, REACHING, WHOLE
from .arch import EDGES, NUM_NODES

#: Ops whose output is zeros whenever their input is zeros, whatever their weights.
ZERO_PRESERVING = frozenset({"none", "skip_connect", "avg_pool_3x3"})


def reaching_nodes(ops: Sequence[str]) -> tuple[bool, ...]:
    """Per node 0..3, whether it reaches the cell output through edges other than ``none``.

    Node 3 (the output) and node 0 (the input, always computed) count as reaching.
    """
    reach = [False] * (NUM_NODES + 1)
    reach[NUM_NODES] = True
    # EDGES lists targets in increasing order, so walking it backwards settles every
    # node's successors before the node itself.
    for (j, i), op in reversed(list(zip(EDGES, ops))):
        if op != "none" and reach[j]:
            reach[i] = True
    reach[0] = True
    return tuple(reach)


def nonzero_edges(ops: Sequence[str], zero_preserving: Sequence[bool] | None = None) -> tuple[bool, ...]:
    """Per edge, whether its output can be other than all zeros (for any finite cell input).

    Parameters
    ----------
    ops
        The six op names, in :data:`~.arch.EDGES` order.
    zero_preserving
        Per edge, whether its op maps zeros to zeros; default: every op but a
        ReLU-Conv-BN always does, and a ReLU-Conv-BN does too (a freshly
        initialised network: BatchNorm shift 0). :meth:`~.model.Cell.dead_ops`
        passes what the cell's weights say.
    """
    if zero_preserving is None:
        zero_preserving = [True] * len(EDGES)
    fed = [True] + [False] * NUM_NODES  # node may hold a nonzero value
    out = []
    for k, ((j, i), op) in enumerate(zip(EDGES, ops)):  # a node's inputs are settled before its outputs
        nonzero = op != "none" and (fed[i] or not zero_preserving[k])
        fed[j] = fed[j] or nonzero
        out.append(nonzero)
    return tuple(out)


def kept_edges(ops: Sequence[str], scope: str, zero_preserving: Sequence[bool] | None = None) -> tuple[bool, ...]:
    """Per edge, whether a proxy of network ``scope`` needs it computed.

    ``"whole"``: every edge. ``"reaching"``: the edges between nodes that reach
    the cell output through non-``none`` edges (:func:`reaching_nodes`); a
    ``none`` edge from a node that does not reach is dropped with that node (it
    adds zeros; node 0 always stays, so a reaching node keeps its edge from
    node 0 and is never left without a term). ``"live"``: the edges into a
    reaching node whose output can be nonzero (:func:`nonzero_edges`); a node
    left without a kept edge is all zeros.

    Raises
    ------
    ArchError
        For an unknown scope or a wrong number of ops.
    """
    if len(ops) != len(EDGES):
        raise ArchError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)} ops")
    if scope not in NETWORK_SCOPES:
        raise ArchError(f"unknown network scope {scope!r} (scopes: {', '.join(NETWORK_SCOPES)})")
    if scope == WHOLE:
        return (True,) * len(EDGES)
    reach = reaching_nodes(ops)
    if scope == REACHING:
        return tuple(reach[i] and reach[j] for j, i in EDGES)
    assert scope == LIVE
    nonzero = nonzero_edges(ops, zero_preserving)
    return tuple(nz and reach[j] for nz, (j, _i) in zip(nonzero, EDGES))


def dead_ops(ops: Sequence[str], scope: str, zero_preserving: Sequence[bool] | None = None) -> tuple[int, ...]:
    """Indices of the edges that hold an op other than ``none`` and that ``scope`` does not need.

    These are the skipped computations (a dropped ``none`` edge saves only a
    multiplication by zero); empty for a cell where nothing can be skipped.
    """
    kept = kept_edges(ops, scope, zero_preserving)
    return tuple(k for k, (op, keep) in enumerate(zip(ops, kept)) if not keep and op != "none")
