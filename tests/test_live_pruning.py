"""Skipping the ops that cannot change a score: same scores, same weights, whole network where needed.

A proxy whose spec declares ``network="reaching"`` or ``"live"`` is scored on a
working copy without the NAS-Bench-201 cell ops that cannot reach the loss (and,
for ``"live"``, those fed only zeros). These tests check, with and without
skipping, bit-identical scores of every such proxy over deliberately chosen
NB201 cells (dead edges, ``none``-fed chains, an all-zero output, nothing dead,
plus a seeded random draw), that the ops kept have the whole network's weights,
that whole-network proxies (params, flops, naswot...) still see everything, and
that NAS-Bench-101 has nothing to skip (its cells are pruned by the benchmark's
own canonicalisation).
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from zc_proxies import score
from zc_proxies.proxies import PROXIES, get_proxy, list_proxies, register_proxy
from zc_proxies.proxies.base import LIVE, NETWORK_SCOPES, REACHING, WHOLE, DeadOps, ProxySpec
from zc_proxies.score import dead_ops_plan, drop_dead_ops, score_detailed
from zc_proxies.spaces.nb201.arch import EDGES, all_archs, parse_arch
from zc_proxies.spaces.nb201.liveness import dead_ops, kept_edges, nonzero_edges, reaching_nodes
from zc_proxies.spaces.nb201.model import Cell, DroppedOp, NB201Network, parameter_count

#: The decision per built-in proxy (see ProxySpec.network); any other built-in needs the whole network.
LIVE_PROXIES = {"fisher", "fisher_potential", "grad_norm", "snip", "plain", "jacob_cov", "epe_nas", "synflow",
                "synflow_bn", "gradsign", "zico"}
REACHING_PROXIES = {"nasi", "ntk_trace"}

# A small skeleton (channels 4, one cell per stage) on 16x16 images keeps the many scorings fast;
# the cell logic is the same at the benchmark's size (the slow test runs that).
SMALL = {"channels": 4, "cells_per_stage": 1}

#: Obvious cases. 1<-0 conv goes nowhere (2<-1, 3<-1 are none): dead for every non-whole scope.
DEAD_END = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
#: Node 1 is none-fed (zeros): 2<-1 conv and 3<-1 pool only ever see zeros.
NONE_FED = "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"
#: Node 3 is fed only by none edges: the cell outputs zeros, everything in it is dead.
ZERO_OUT = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"


def _build(arch: str, seed: int = 0, num_classes: int = 10, **kw: int) -> NB201Network:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NB201Network(arch, num_classes, **kw)


def _batch(n: int = 8, size: int = 16, classes: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def _pick_archs(per_kind: int = 3, seed: int = 0) -> list[str]:
    """Cells chosen on purpose (each kind of dead part, and none), plus a seeded random draw of all cells."""
    kinds: dict[str, list[str]] = {"reaching-dead": [], "none-fed only": [], "zero output": [], "nothing dead": []}
    for arch in all_archs():
        ops = parse_arch(arch)
        reach, live = dead_ops(ops, REACHING), dead_ops(ops, LIVE)
        out_fed = any(nz for nz, (j, _i) in zip(nonzero_edges(ops), EDGES) if j == 3)
        if not out_fed and any(op != "none" for op in ops):
            kinds["zero output"].append(arch)
        elif reach:
            kinds["reaching-dead"].append(arch)
        elif live:
            kinds["none-fed only"].append(arch)
        else:
            kinds["nothing dead"].append(arch)
    rng = np.random.default_rng(seed)
    picked = [DEAD_END, NONE_FED, ZERO_OUT, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    for archs in kinds.values():
        assert len(archs) >= per_kind
        picked += [archs[i] for i in rng.choice(len(archs), size=per_kind, replace=False)]
    every = list(all_archs())
    picked += [every[i] for i in rng.choice(len(every), size=per_kind, replace=False)]
    return list(dict.fromkeys(picked))


def _same(a: object, b: object) -> bool:
    """Bit-identical floats (NaN equal to NaN), or equal mappings of them."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def _skippable() -> list[str]:
    return [n for n in list_proxies() if get_proxy(n).spec.network != WHOLE]


# -- the analysis -----------------------------------------------------------------------------------------------
def test_the_builtin_proxies_declare_what_was_decided():
    """Every built-in proxy's network scope is the one its formula allows (documented in ProxySpec)."""
    for name in list_proxies():
        want = LIVE if name in LIVE_PROXIES else REACHING if name in REACHING_PROXIES else WHOLE
        assert get_proxy(name).spec.network == want, name
    for name in ("params", "flops", "naswot", "zen", "l2_norm", "meco", "swap", "te_nas", "az_nas", "vkdnw", "grasp"):
        assert get_proxy(name).spec.network == WHOLE
    with pytest.raises(ValueError, match="network"):
        ProxySpec("x", needs_labels=False, needs_grad=False, network="alive")  # type: ignore[arg-type]


def test_liveness_rules_on_hand_made_cells():
    # DEAD_END: node 1 reaches nothing; its conv is dead at both scopes, the skip 3<-0 stays
    ops = parse_arch(DEAD_END)
    assert reaching_nodes(ops) == (True, False, False, True)
    assert dead_ops(ops, REACHING) == dead_ops(ops, LIVE) == (0,)
    assert dead_ops(ops, WHOLE) == ()
    # NONE_FED: node 1 is zeros; the conv and pool reading it are dead only for "live"
    ops = parse_arch(NONE_FED)
    assert nonzero_edges(ops) == (False, True, False, False, False, True)
    assert dead_ops(ops, REACHING) == ()
    assert dead_ops(ops, LIVE) == (2, 4)
    # ...unless the conv's BatchNorm shift is not zero (trained weights): then its output is not zeros
    assert dead_ops(ops, LIVE, zero_preserving=[True, True, False, True, True, True]) == (4,)
    # ZERO_OUT: no nonzero edge into node 3, so nothing of the cell reaches the loss
    ops = parse_arch(ZERO_OUT)
    assert dead_ops(ops, REACHING) == dead_ops(ops, LIVE) == (0, 1, 2)
    assert kept_edges(ops, LIVE) == (False,) * 6
    # nothing dead in the benchmark's best-known cell shape
    ops = parse_arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert dead_ops(ops, LIVE) == dead_ops(ops, REACHING) == ()


def test_fraction_of_nb201_cells_with_dead_ops():
    """From the arch strings alone: how many of the 15,625 cells have an op (not none) that can be skipped."""
    counts = {REACHING: 0, LIVE: 0}
    total = 0
    for arch in all_archs():
        ops = parse_arch(arch)
        total += 1
        for scope in counts:
            counts[scope] += bool(dead_ops(ops, scope))
    assert total == 15_625
    assert counts == {REACHING: 3420, LIVE: 6180}  # 21.9% and 39.6%
    # the other 15,625 - 6,180 = 9,445 are GRAF's (zc_combine) "valid nets", the networks VKDNW's published
    # figures are computed on; benchmarks/reproduce_modern.py reports that subset beside the whole sample


# -- the network ------------------------------------------------------------------------------------------------
def test_obvious_dead_conv_is_dropped_and_the_rest_keeps_its_weights():
    net = _build(DEAD_END, seed=3, **SMALL)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plan = dead_ops_plan(net, LIVE)
    cells = [name for name, m in net.named_modules() if isinstance(m, Cell)]
    assert plan == tuple((name, frozenset({0})) for name in cells)
    assert dead_ops_plan(net, REACHING) == plan
    assert dead_ops_plan(net, WHOLE) == ()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # asking changes nothing
    pruned = drop_dead_ops(copy.deepcopy(net), plan)
    assert all(isinstance(pruned.get_submodule(f"{c}.layers.0"), DroppedOp) for c in cells)
    kept, full = pruned.state_dict(), net.state_dict()
    assert set(kept) < set(full)
    assert all(".layers.0." in k for k in set(full) - set(kept))  # only the dead convs' tensors are gone
    assert all(torch.equal(kept[k], full[k]) for k in kept)  # the rest are the whole network's, exactly
    assert sum(p.numel() for p in pruned.parameters()) < parameter_count(DEAD_END, 10, **SMALL)
    x, _ = _batch()
    net.train(), pruned.train()
    assert torch.equal(pruned(x), net(x))


def test_none_fed_conv_still_gets_a_batchnorm_shift_gradient():
    """Why nasi and ntk_trace are only "reaching": a conv on zeros has a zero weight gradient but not a zero shift one."""
    net = _build(NONE_FED, seed=0, **SMALL)
    x, y = _batch()
    nn.functional.cross_entropy(net.train()(x), y).backward()
    conv_bn = net.cells[0].layers[2].op  # 2<-1, on the none-fed node 1
    assert torch.count_nonzero(conv_bn[1].weight.grad) == 0
    assert torch.count_nonzero(conv_bn[2].bias.grad) > 0
    assert dead_ops_plan(net, REACHING) == ()
    assert {ops for _name, ops in dead_ops_plan(net, LIVE)} == {frozenset({2, 4})}


def test_cells_with_trained_shifts_keep_their_convs_on_zeros():
    net = _build(NONE_FED, **SMALL)
    with torch.no_grad():
        net.cells[0].layers[2].op[2].bias.fill_(0.5)
    plan = dict(dead_ops_plan(net, LIVE))
    assert plan["cells.0"] == frozenset({4})  # its conv on zeros outputs 0.5: not dead
    assert plan["cells.2"] == frozenset({2, 4})


def test_pruned_forward_equals_whole_forward_for_every_kind_of_cell():
    x, _ = _batch()
    for arch in _pick_archs(per_kind=2):
        net = _build(arch, seed=5, **SMALL).train()
        want = net(x)
        for scope in (REACHING, LIVE):
            pruned = drop_dead_ops(copy.deepcopy(net), dead_ops_plan(net, scope)).train()
            assert torch.equal(pruned(x), want), (arch, scope)


# -- the scores -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_every_skipping_proxy_scores_the_same_with_and_without_skipping(layout):
    """Bit-identical scores (or the same failure) on every proxy that allows skipping, over chosen and random cells.

    The "live" proxies are scored in one call and the "reaching" ones in another, so each runs on its own
    scope's network (in one call, those sharing a pass would run on the wider one: see the mixed test).
    Both memory layouts the evaluator uses (``--layout``) are checked.
    """
    live = sorted(n for n in _skippable() if get_proxy(n).spec.network == LIVE)
    reaching = sorted(n for n in _skippable() if get_proxy(n).spec.network == REACHING)
    assert set(live) == LIVE_PROXIES and set(reaching) == REACHING_PROXIES
    x, y = _batch(n=8)
    x = x.contiguous(memory_format=layout)
    for k, arch in enumerate(_pick_archs(per_kind=3)):
        net = _build(arch, seed=k, **SMALL).to(memory_format=layout)
        skipped = {**score_detailed(net, (x, y), live, seed=k), **score_detailed(net, (x, y), reaching, seed=k)}
        whole = score_detailed(net, (x, y), live + reaching, seed=k, skip_dead=False)
        for name in live + reaching:
            a, b = skipped[name], whole[name]
            assert a.status == b.status, (arch, name, a.error, b.error)
            assert _same(a.value, b.value), (arch, name, a.value, b.value)


def test_proxies_sharing_a_pass_run_on_the_widest_network():
    from zc_proxies.score import _scopes

    def scopes(*names: str) -> dict[str, str]:
        return _scopes([get_proxy(n) for n in names])

    assert scopes("fisher", "nasi", "gradsign", "ntk_trace", "naswot", "synflow", "params") == {
        "fisher": REACHING, "nasi": REACHING, "gradsign": REACHING, "ntk_trace": REACHING,
        "naswot": WHOLE, "synflow": LIVE, "params": WHOLE}  # naswot reads only the forward part of the pass
    assert scopes("fisher", "grad_norm", "naswot", "gradsign") == {
        "fisher": LIVE, "grad_norm": LIVE, "naswot": WHOLE, "gradsign": LIVE}
    assert scopes("fisher", "grad_norm", "grasp", "gradsign", "zico") == {  # grasp's pass is the whole network's
        "fisher": WHOLE, "grad_norm": WHOLE, "grasp": WHOLE, "gradsign": LIVE, "zico": LIVE}


def test_mixed_call_whole_and_skipping_proxies():
    """In one call, the whole-network proxies see everything and the others skip: every value as without skipping."""
    names = ["fisher", "naswot", "params", "flops", "nasi", "grad_norm", "l2_norm", "jacob_cov", "synflow",
             "gradsign", "ntk_trace"]
    x, y = _batch()
    for arch in (DEAD_END, NONE_FED, ZERO_OUT):
        net = _build(arch, **SMALL)
        a = score_detailed(net, (x, y), names, seed=2)
        b = score_detailed(net, (x, y), names, seed=2, skip_dead=False)
        assert all(a[n].status == b[n].status and _same(a[n].value, b[n].value) for n in names), arch


def test_params_and_flops_see_the_whole_network():
    seen: dict[str, tuple[int, int]] = {}

    def spy(name: str):
        def fn(ctx) -> float:
            dropped = sum(isinstance(m, DroppedOp) for m in ctx.model.modules())
            seen[name] = (dropped, sum(p.numel() for p in ctx.model.parameters()))
            return 0.0
        return fn

    for name, scope in (("_spy_whole", WHOLE), ("_spy_reaching", REACHING), ("_spy_live", LIVE)):
        if name not in PROXIES:
            register_proxy(name, needs_labels=False, needs_grad=False, version="1", network=scope)(spy(name))
    try:
        net = _build(NONE_FED, **SMALL)
        full_params = parameter_count(NONE_FED, 10, **SMALL)
        x, y = _batch()
        got = score(net, (x, y), ["params", "flops", "fisher", "_spy_whole", "_spy_reaching", "_spy_live"])
        want = score(net, (x, y), ["params", "flops", "fisher"], skip_dead=False)
        assert got["params"] == full_params / 1e6 == want["params"]
        assert got["flops"] == want["flops"]
        assert got["fisher"] == want["fisher"]
        assert seen["_spy_whole"] == (0, full_params)
        assert seen["_spy_reaching"] == (0, full_params)  # nothing reaching-dead in this cell
        dropped, live_params = seen["_spy_live"]
        assert dropped == 6 and live_params < full_params  # the 2<-1 conv and 3<-1 pool of each of 3 cells
    finally:
        for name in ("_spy_whole", "_spy_reaching", "_spy_live"):
            PROXIES.remove(name)


def test_the_callers_network_is_left_whole():
    net = _build(ZERO_OUT, **SMALL)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = _batch()
    score(net, (x, y), ["fisher", "nasi"])
    assert all(c.kept == (True,) * 6 for c in net.modules() if isinstance(c, Cell))
    assert not any(isinstance(m, DroppedOp) for m in net.modules())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_models_without_dead_ops_are_scored_as_before():
    """A model that implements no DeadOps (any user model, NAS-Bench-101) is scored whole for every proxy."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10))
    assert not any(isinstance(m, DeadOps) for m in model.modules())
    assert all(dead_ops_plan(model, scope) == () for scope in NETWORK_SCOPES)
    x, y = _batch()
    assert score(model, (x, y), ["fisher", "nasi"]) == score(model, (x, y), ["fisher", "nasi"], skip_dead=False)
    with pytest.raises(Exception, match="skip_dead"):
        score(model, (x, y), "fisher", skip_dead="no")  # type: ignore[arg-type]


def test_evaluator_rows_are_the_same_with_and_without_skipping(monkeypatch):
    """``zcbench eval``'s per-architecture task stores the same rows (apart from timings) either way."""
    from zc_proxies.runs import evaluation
    from zc_proxies.runs.evaluation import EvalConfig, WorkerState, score_arch

    archs = [DEAD_END, NONE_FED, ZERO_OUT]

    class Space:
        def __getitem__(self, i: int) -> str:
            return archs[i]

        def build(self, arch: str, num_classes: int) -> nn.Module:
            return NB201Network(arch, num_classes, **SMALL)

    class Source:
        def batch(self, size: int, seed: int, augment: bool, sampling: str) -> tuple[torch.Tensor, torch.Tensor]:
            return _batch(n=size, seed=seed % 1000)

        def settings(self) -> dict:
            return {"data_source": "random"}

    names = ("fisher", "nasi", "naswot", "params", "zico")
    state = WorkerState(EvalConfig(space="stub", dataset="cifar10", proxies=names, batch_size=8), Space(), Source(), 10)

    def rows() -> list[dict]:
        out = []
        for i in range(len(archs)):
            out += [{k: v for k, v in r.items() if k != "seconds"} for r in score_arch(state, (i, names))]
        return out

    skipped = rows()
    monkeypatch.setattr(evaluation, "score_detailed", functools.partial(score_detailed, skip_dead=False))
    assert rows() == skipped
    assert sum(r["status"] == "ok" for r in skipped) == len(skipped)


# -- NAS-Bench-101 ----------------------------------------------------------------------------------------------
def _nb101_dead_parts(cell, in_channels: int, out_channels: int) -> list[str]:
    """What of a NAS-Bench-101 cell could not reach its output: vertices off input->output paths, unread channels."""
    from zc_proxies.spaces.nb101.model import vertex_channels
    from zc_proxies.spaces.nb101.spec import prune

    if prune(cell) != cell:
        return ["a vertex off every input->output path"]
    dead = []
    m, n = cell.matrix, cell.num_vertices
    ch = vertex_channels(in_channels, out_channels, m)
    for v in range(1, n - 1):
        # the output concatenates v whole; an interior successor reads v's first ch[w] channels
        if not m[v][n - 1] and max(ch[w] for w in range(v + 1, n - 1) if m[v][w]) < ch[v]:
            dead.append(f"channels of vertex {v} that no successor reads")
    return dead


def _nb101_cells(space, sample: int | None, seed: int = 0):
    indices = range(len(space)) if sample is None else np.random.default_rng(seed).choice(len(space), sample, False)
    return (space.cell(int(i)) for i in indices)


def test_nb101_has_nothing_to_skip(data_root):
    """The benchmark stores pruned cells whose every vertex and channel reaches the output: nothing is dead."""
    import zc_proxies
    from zc_proxies.spaces.nb101.model import stack_channels

    space = zc_proxies.get_space("nb101", data_root)
    pairs = sorted(set(stack_channels()))
    for cell in _nb101_cells(space, sample=3000):
        assert not any(_nb101_dead_parts(cell, cin, cout) for cin, cout in pairs), cell
    net = space.build(0, 10, device="meta")
    assert not any(isinstance(m, DeadOps) for m in net.modules())
    assert all(dead_ops_plan(net, scope) == () for scope in NETWORK_SCOPES)


@pytest.mark.slow
def test_nb101_has_nothing_to_skip_in_any_cell(data_root):
    import zc_proxies
    from zc_proxies.spaces.nb101.model import stack_channels

    space = zc_proxies.get_space("nb101", data_root)
    pairs = sorted(set(stack_channels()))
    bad = [cell for cell in _nb101_cells(space, sample=None)
           if any(_nb101_dead_parts(cell, cin, cout) for cin, cout in pairs)]
    assert bad == []


def test_nb101_dead_part_check_finds_a_dangling_vertex():
    """The NB101 check above does find dead parts where there are some (an unpruned cell)."""
    from zc_proxies.spaces.nb101.spec import make_cell

    # vertex 2 (a conv) reads vertex 1 but feeds nothing: off every input->output path
    cell = make_cell([[0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
                     ["input", "conv3x3-bn-relu", "conv3x3-bn-relu", "output"])
    assert _nb101_dead_parts(cell, 128, 128) == ["a vertex off every input->output path"]


# -- the benchmark's own size -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_full_size_nb201_networks_on_real_images(data_root, layout):
    """At the benchmark's size (C = 16, N = 5) on a seeded CIFAR-10 minibatch, as ``zcbench eval`` builds them."""
    import zc_proxies
    from zc_proxies.data.sources import source_for
    from zc_proxies.runs.evaluation import arch_seed

    space = zc_proxies.get_space("nb201", data_root)
    source = source_for("cifar10", data_root, 10, warn=False)
    live = sorted(n for n in _skippable() if get_proxy(n).spec.network == LIVE)
    reaching = sorted(n for n in _skippable() if get_proxy(n).spec.network == REACHING)
    for arch in _pick_archs(per_kind=2, seed=1):
        index = space.index_of(arch)
        seed = arch_seed(0, index)
        x, y = source.batch(16, seed, True, "uniform")
        batch = (x.contiguous(memory_format=layout), y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = space.build(arch, 10).to(memory_format=layout)
        a = {**score_detailed(net, batch, live, seed=seed), **score_detailed(net, batch, reaching, seed=seed)}
        b = score_detailed(net, batch, live + reaching, seed=seed, skip_dead=False)
        for name in live + reaching:
            assert a[name].status == b[name].status and _same(a[name].value, b[name].value), (arch, name)
