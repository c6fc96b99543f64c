"""The NDS CIFAR network: published parameter counts, every op, blocks, aux head, drop-path."""

from __future__ import annotations

import random

import pytest
import torch
from test_nds_fixtures import (
    AMOEBA_A,
    DARTS_V2,
    ENAS_CELL,
    NASNET_A,
    PC_DARTS,
    PDARTS,
    PNASNET,
    count,
    expected_params,
    op_params,
)
from torch import nn

from zc_proxies import BlockProbe, score
from zc_proxies.spaces.nds import OPS, VOCABULARIES, NDSArch, build_network, param_count, parse_genotype
from zc_proxies.spaces.nds.model import NDSNetwork, drop_path
from zc_proxies.spaces.nds.ops import make_op, op_param_count


def _net(genotype: dict, width: int, depth: int, aux: bool = False, meta: bool = True) -> NDSNetwork:
    arch = NDSArch(parse_genotype(genotype), width, depth, aux)
    if meta:  # parameters on the meta device: shapes only, fast
        with torch.device("meta"):
            return build_network(arch, 10)
    return build_network(arch, 10)


# -- published parameter counts ---------------------------------------------------------
def test_darts_v2_has_the_published_3349342_parameters():
    """DARTS V2 (the DARTS paper's best cell), C=36, 20 cells, CIFAR-10 head, no auxiliary head.

    Source: quark0/darts ``cnn/train.py`` logs ``param size = 3.349342MB`` for
    ``genotypes.DARTS`` (= DARTS_V2) at the default ``--init_channels 36
    --layers 20``. That number is ``utils.count_parameters_in_MB``, which skips
    every parameter whose name contains "auxiliary": it is the count WITHOUT
    the auxiliary head (with it, the network has 476,426 more; see the P-DARTS
    test).
    """
    assert count(_net(DARTS_V2, 36, 20, aux=False)) == 3_349_342
    assert count(_net(DARTS_V2, 36, 20, aux=False, meta=False)) == 3_349_342


def test_pdarts_matches_published_counts_with_and_without_aux():
    """P-DARTS cell (chenxin061/pdarts ``genotypes.PDARTS``), C=36, 20 cells, CIFAR-10.

    Source: chenxin061/pdarts issue #7 (comment by drcdr, 2019-05-13), counting
    ``sum(p.numel() for p in model.parameters())`` of the DARTS-derived
    ``NetworkCIFAR(36, 10, 20, auxiliary, PDARTS)``: 3,433,798 WITHOUT the
    auxiliary head and 3,910,224 WITH it (the P-DARTS paper rounds to 3.4M,
    counted without the head).
    """
    assert count(_net(PDARTS, 36, 20, aux=False)) == 3_433_798
    assert count(_net(PDARTS, 36, 20, aux=True)) == 3_910_224


def test_pc_darts_matches_published_rounded_count():
    """PC-DARTS CIFAR cell (yuhuixu1993/PC-DARTS ``genotypes.PC_DARTS_cifar``), C=36, 20 cells.

    Source: the PC-DARTS README results table and paper (ICLR 2020, Table 1):
    3.6M parameters, from DARTS's ``count_parameters_in_MB``, i.e. WITHOUT the
    auxiliary head. Only one decimal is published, so the check is on the
    rounded count.
    """
    n = count(_net(PC_DARTS, 36, 20, aux=False))
    assert round(n / 1e6, 1) == 3.6, n


# -- the closed-form count used to check stored params ----------------------------------
@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_count_and_shape(name, stride):
    c = 8
    op = make_op(name, c, stride)
    assert count(op) == op_param_count(name, c, stride) == op_params(name, c, stride)
    x = torch.randn(2, c, 9, 10)  # odd sizes too
    y = op(x)
    assert y.shape == (2, c, -(-9 // stride), -(-10 // stride))


def test_vocabularies_are_built():
    assert set().union(*VOCABULARIES.values()) == set(OPS)
    assert len(VOCABULARIES["NASNet"]) == 13 and len(VOCABULARIES["ENAS"]) == 5
    assert len(VOCABULARIES["DARTS"]) == len(VOCABULARIES["PNAS"]) == len(VOCABULARIES["Amoeba"]) == 8


def _random_genotype(rng: random.Random, vocabulary, nodes: int, loose_ends: bool) -> dict:
    g = {}
    for kind in ("normal", "reduce"):
        ops = []
        for node in range(nodes):
            for _ in range(2):
                ops.append([rng.choice(vocabulary), rng.randrange(node + 2)])
        used = {i for _, i in ops}
        concat = [s for s in range(2, nodes + 2) if not (loose_ends and s in used)]
        g[kind], g[f"{kind}_concat"] = ops, concat
    return g


@pytest.mark.parametrize("family", sorted(VOCABULARIES))
def test_closed_form_count_equals_built_network(family):
    rng = random.Random(sorted(VOCABULARIES).index(family))
    vocab = VOCABULARIES[family]
    nodes = 4 if family in ("DARTS",) else 5
    for _ in range(6):
        g = _random_genotype(rng, vocab, nodes, loose_ends=family in ("NASNet", "ENAS", "Amoeba"))
        width, depth, aux = rng.choice([8, 16, 24, 32]), rng.choice([1, 2, 3, 5, 8, 11]), rng.random() < 0.5
        arch = NDSArch(parse_genotype(g, vocab, family), width, depth, aux)
        built = count(_net(g, width, depth, aux))
        assert param_count(arch) == built == expected_params(g, width, depth, aux)


@pytest.mark.parametrize("genotype", [NASNET_A, AMOEBA_A, PNASNET, ENAS_CELL, DARTS_V2])
def test_published_cells_forward_and_block_probes(genotype):
    net = _net(genotype, 8, 5, aux=True, meta=False)
    probes = [m for m in net.modules() if isinstance(m, BlockProbe)]
    assert len(probes) == 5 == len(net.cells)
    seen = []
    handles = [p.register_forward_hook(lambda m, i, o: seen.append(o)) for p in probes]
    net.train()
    logits = net(torch.randn(3, 3, 32, 32))
    for h in handles:
        h.remove()
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 10)  # plain logits despite the aux head
    assert [o.shape[1] for o in seen] == [cell.out_channels for cell in net.cells]
    assert seen[-1].shape[-1] == 8  # two reductions of 32x32


def test_aux_logits_only_when_asked():
    torch.manual_seed(0)
    net = _net(DARTS_V2, 8, 8, aux=True, meta=False)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    logits, aux_logits = net(x, return_aux=True)
    assert torch.equal(logits, net(x))
    assert aux_logits.shape == (2, 10)
    no_aux = _net(DARTS_V2, 8, 8, aux=False, meta=False)
    assert no_aux(x, return_aux=True)[1] is None
    # the head's parameters count: exactly the published P-DARTS difference at C=36
    assert count(_net(DARTS_V2, 36, 20, aux=True)) - count(_net(DARTS_V2, 36, 20)) == 3_910_224 - 3_433_798


def test_drop_path_is_off_by_default_and_per_sample_when_on():
    torch.manual_seed(0)
    net = _net(DARTS_V2, 8, 5, meta=False).train()
    x = torch.randn(4, 3, 16, 16)
    assert net.drop_prob == 0.0
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    assert torch.allclose(a, net(x))  # deterministic without drop-path (BN in train mode, same batch)
    net.drop_prob = 0.5
    torch.manual_seed(3)
    assert not torch.allclose(a, net(x))
    y = drop_path(torch.ones(1000, 2, 3, 3), 0.25)
    per_sample = y.flatten(1)
    kept = (per_sample != 0).all(1)
    assert torch.equal(kept, (per_sample != 0).any(1))  # whole samples dropped, never parts
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert (per_sample == 0).all(1).float().mean().item() == pytest.approx(0.25, abs=0.05)
    assert torch.equal(drop_path(x, 0.0), x)


def test_fisher_potential_sees_one_block_per_cell():
    torch.manual_seed(0)
    net = _net(NASNET_A, 4, 3, meta=False)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    s = score(net, (x, y), proxy="fisher_potential")
    assert s > 0 and s == s
    assert isinstance(net, nn.Module) and len([m for m in net.modules() if isinstance(m, BlockProbe)]) == 3
