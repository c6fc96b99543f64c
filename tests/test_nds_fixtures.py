"""Published genotypes and an independent parameter counter shared by the NDS tests.

Genotypes are transcribed from the authors' repositories (DARTS layout,
``[op, input]`` pairs):

* DARTS_V2 / DARTS_V1, NASNet (NASNet-A), AmoebaNet (AmoebaNet-A):
  quark0/darts ``cnn/genotypes.py`` (the same cells are in pycls's
  ``nas/genotypes.py``);
* PDARTS: chenxin061/pdarts ``genotypes.py``;
* PC_DARTS_cifar: yuhuixu1993/PC-DARTS ``genotypes.py``;
* PNASNet: pycls ``nas/genotypes.py``;
* ENAS_CELL: a 5-node cell over the ENAS vocabulary modelled on the ENAS
  paper's discovered convolutional cell (inputs h[i-2] -> state 0, h[i-1] ->
  state 1, loose ends concatenated); its normal cell is reused as the
  reduction cell. It is a valid ENAS-space genotype, not a published count.

(No tests live here; pytest collects the module because of its name.)
"""

from __future__ import annotations


def _g(normal, normal_concat, reduce, reduce_concat):
    return {
        "normal": [list(p) for p in normal],
        "normal_concat": list(normal_concat),
        "reduce": [list(p) for p in reduce],
        "reduce_concat": list(reduce_concat),
    }


DARTS_V2 = _g(
    [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    [2, 3, 4, 5],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    [2, 3, 4, 5],
)

DARTS_V1 = _g(
    [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
     ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    [2, 3, 4, 5],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    [2, 3, 4, 5],
)

PDARTS = _g(
    [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
    range(2, 6),
    [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
     ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
    range(2, 6),
)

PC_DARTS = _g(
    [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
     ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    range(2, 6),
    [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
     ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    range(2, 6),
)

NASNET_A = _g(
    [("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
     ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
     ("sep_conv_3x3", 1), ("skip_connect", 1)],
    [2, 3, 4, 5, 6],
    [("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
     ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
     ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
    [4, 5, 6],
)

AMOEBA_A = _g(
    [("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
     ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
     ("skip_connect", 0), ("avg_pool_3x3", 1)],
    [4, 5, 6],
    [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
     ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
     ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
    [3, 4, 6],
)

PNASNET = _g(
    [("sep_conv_5x5", 0), ("max_pool_3x3", 0), ("sep_conv_7x7", 1), ("max_pool_3x3", 1),
     ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 4), ("max_pool_3x3", 1),
     ("sep_conv_3x3", 0), ("skip_connect", 1)],
    [2, 3, 4, 5, 6],
    [("sep_conv_5x5", 0), ("max_pool_3x3", 0), ("sep_conv_7x7", 1), ("max_pool_3x3", 1),
     ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 4), ("max_pool_3x3", 1),
     ("sep_conv_3x3", 0), ("skip_connect", 1)],
    [2, 3, 4, 5, 6],
)

_ENAS_NORMAL = [("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_5x5", 1), ("skip_connect", 0),
                ("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1),
                ("sep_conv_5x5", 1), ("avg_pool_3x3", 0)]
ENAS_CELL = _g(_ENAS_NORMAL, [2, 3, 4, 5, 6], _ENAS_NORMAL, [2, 3, 4, 5, 6])


# -- an independent parameter count, written from the op descriptions -------------------
def op_params(name: str, c: int, stride: int) -> int:
    """Parameters of one op at c channels: bias-free convs, affine BN (2 per channel)."""

    def sep(k):  # two units of depthwise kxk + pointwise 1x1 + BN
        return 2 * (k * k * c + c * c + 2 * c)

    table = {
        "none": 0, "avg_pool_3x3": 0, "max_pool_3x3": 0, "max_pool_5x5": 0, "max_pool_7x7": 0,
        "skip_connect": 0 if stride == 1 else 2 * (c * (c // 2)) + 2 * c,
        "conv_1x1": c * c + 2 * c,
        "conv_3x3": 9 * c * c + 2 * c,
        "conv_3x1_1x3": 3 * c * c + 3 * c * c + 2 * c,
        "conv_7x1_1x7": 7 * c * c + 7 * c * c + 2 * c,
        "sep_conv_3x3": sep(3), "sep_conv_5x5": sep(5), "sep_conv_7x7": sep(7),
        "dil_sep_conv_3x3": sep(3),
        "dil_conv_3x3": 9 * c + c * c + 2 * c,
        "dil_conv_5x5": 25 * c + c * c + 2 * c,
    }
    return table[name]


def expected_params(genotype: dict, width: int, depth: int, aux: bool, classes: int = 10) -> int:
    """Parameter count of the NDS CIFAR network, from the macro structure's description."""
    total = 3 * 3 * 3 * (3 * width) + 2 * (3 * width)  # stem conv + BN
    c_pp = c_p = 3 * width
    c = width
    aux_in = None
    for i in range(depth):
        red = i in (depth // 3, 2 * depth // 3)
        if red:
            c *= 2
        ops = genotype["reduce" if red else "normal"]
        concat = genotype["reduce_concat" if red else "normal_concat"]
        total += c_pp * c + 2 * c  # 1x1 ReLU-conv-BN, or FactorizedReduce (2 x c/2 outputs): same count
        total += c_p * c + 2 * c
        total += sum(op_params(op, c, 2 if red and j < 2 else 1) for op, j in ops)
        c_pp, c_p = c_p, len(concat) * c
        if i == 2 * depth // 3:
            aux_in = c_p
    total += c_p * classes + classes
    if aux:
        total += aux_in * 128 + 2 * 128 + 128 * 768 * 2 * 2 + 2 * 768 + 768 * classes + classes
    return total


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())
