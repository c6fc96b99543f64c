"""Genotype validation: clear ArchErrors for unknown ops, bad inputs and bad concat lists."""

from __future__ import annotations

import copy
import json
from collections import namedtuple

import pytest
from test_nds_fixtures import AMOEBA_A, DARTS_V2, NASNET_A

from zc_proxies.errors import ArchError
from zc_proxies.spaces.nds import VOCABULARIES, Genotype, arch_to_json, parse_arch, parse_genotype


def _with(genotype: dict, **changes) -> dict:
    g = copy.deepcopy(genotype)
    g.update(changes)
    return g


def test_parses_the_nds_json_layout_and_round_trips():
    g = parse_genotype(DARTS_V2, VOCABULARIES["DARTS"], "DARTS")
    assert isinstance(g, Genotype)
    assert g.normal[7] == ("dil_conv_3x3", 2) and g.reduce_concat == (2, 3, 4, 5)
    assert g.to_json() == DARTS_V2
    assert parse_genotype(g.to_json()) == g


def test_accepts_a_darts_style_namedtuple_with_range_concat():
    DartsGenotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    nt = DartsGenotype(
        normal=[tuple(p) for p in DARTS_V2["normal"]], normal_concat=range(2, 6),
        reduce=[tuple(p) for p in DARTS_V2["reduce"]], reduce_concat=range(2, 6),
    )
    assert parse_genotype(nt) == parse_genotype(DARTS_V2)


def test_unknown_op_names_the_op_and_suggests_close_names():
    g = _with(DARTS_V2, normal=[["sepconv_3x3", 0]] + DARTS_V2["normal"][1:])
    with pytest.raises(ArchError, match=r"unknown op 'sepconv_3x3'; did you mean 'sep_conv_3x3'") as info:
        parse_genotype(g)
    assert "normal cell, node 0" in str(info.value)


def test_op_outside_the_space_vocabulary():
    g = _with(DARTS_V2, reduce=[["conv_7x1_1x7", 0]] + DARTS_V2["reduce"][1:])
    parse_genotype(g)  # a known op in general ...
    with pytest.raises(ArchError, match=r"'conv_7x1_1x7' is not in the vocabulary of the DARTS space"):
        parse_genotype(g, VOCABULARIES["DARTS"], "DARTS")  # ... but not a DARTS-space op


@pytest.mark.parametrize("bad_input", [2, 5, -1])
def test_input_index_pointing_to_an_undefined_node(bad_input):
    # node 0 may read states 0 and 1 only
    g = _with(NASNET_A, normal=[["sep_conv_5x5", bad_input]] + NASNET_A["normal"][1:])
    with pytest.raises(ArchError, match=rf"node 0 .*takes input {bad_input}, which is not defined yet"):
        parse_genotype(g)


def test_later_node_may_read_earlier_nodes_but_not_itself():
    ok = _with(DARTS_V2, normal=DARTS_V2["normal"][:6] + [["skip_connect", 4], ["sep_conv_3x3", 1]])
    parse_genotype(ok)  # node 3 reads node 2 (state 4)
    bad = _with(DARTS_V2, normal=DARTS_V2["normal"][:6] + [["skip_connect", 5], ["sep_conv_3x3", 1]])
    with pytest.raises(ArchError, match=r"node 3 .*input 5, which is not defined yet"):
        parse_genotype(bad)  # state 5 is node 3 itself


@pytest.mark.parametrize("concat", [[2, 3, 4, 6], [7], [-1, 2]])
def test_concat_naming_a_missing_node(concat):
    with pytest.raises(ArchError, match=r"normal_concat names state -?\d+, which does not exist"):
        parse_genotype(_with(DARTS_V2, normal_concat=concat))


def test_reduce_concat_may_not_name_cell_inputs():
    with pytest.raises(ArchError, match=r"reduce_concat names state 1, a cell input"):
        parse_genotype(_with(AMOEBA_A, reduce_concat=[1, 4, 6]))
    parse_genotype(_with(DARTS_V2, normal_concat=[0, 2, 3]))  # fine in a normal cell (same spatial size)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"normal": DARTS_V2["normal"][:7]}, r"even, non-zero number of \[op, input\] pairs"),
        ({"normal": []}, r"even, non-zero number"),
        ({"reduce": [["max_pool_3x3"]] * 8}, r"expected an \[op, input\] pair"),
        ({"reduce": [["max_pool_3x3", "0"]] * 8}, r"not an integer state index"),
        ({"normal_concat": []}, r"normal_concat is empty"),
        ({"normal_concat": [2, 2, 3]}, r"names a state twice"),
        ({"normal_concat": "2345"}, r"must be a list of state indices"),
    ],
)
def test_malformed_cells(changes, message):
    with pytest.raises(ArchError, match=message):
        parse_genotype(_with(DARTS_V2, **changes))


def test_missing_genotype_field():
    g = copy.deepcopy(DARTS_V2)
    del g["reduce_concat"]
    with pytest.raises(ArchError, match=r"genotype has no 'reduce_concat'"):
        parse_genotype(g)


def test_arch_from_a_net_config():
    net = {"genotype": DARTS_V2, "width": 16, "depth": 8, "aux": False, "drop_prob": 0.2, "extra": 1}
    arch = parse_arch(net)
    assert (arch.width, arch.depth, arch.aux) == (16, 8, False)
    assert arch_to_json(arch) == {"genotype": DARTS_V2, "width": 16, "depth": 8, "aux": False}
    assert parse_arch(json.dumps(net)) == arch
    with pytest.raises(ArchError, match=r"given as text must be JSON"):
        parse_arch("sep_conv_3x3~0")
    with pytest.raises(ArchError, match=r"lacks 'depth'"):
        parse_arch({"genotype": DARTS_V2, "width": 16})
    with pytest.raises(ArchError, match=r"width must be a positive integer"):
        parse_arch({"genotype": DARTS_V2, "width": 0, "depth": 8})
    with pytest.raises(ArchError, match=r"aux must be true or false"):
        parse_arch({"genotype": DARTS_V2, "width": 16, "depth": 8, "aux": "yes"})
