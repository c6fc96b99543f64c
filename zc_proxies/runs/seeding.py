"""The one seed derivation of zcbench: (run seed, stream name, index) -> a 63-bit seed.

Every random choice of a run takes its seed from :func:`derive_seed`: which
architectures an evaluation samples, each architecture's minibatch and
initialisation, each BlockSwap candidate's draw, a training run's holdout
split, weights and epoch order. The stream name keeps those uses apart (the
seed of architecture 3 is unrelated to the seed of candidate 3 or of epoch 3),
and because a seed depends only on its three inputs, a result does not depend
on worker count, order, shard or machine.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import ConfigError

#: Largest run seed accepted (seeds are stored as JSON integers and fit a signed 64-bit int).
MAX_SEED = 2**63 - 1

# The streams zcbench draws from; listed so that two uses never share one by accident.
STREAMS = frozenset({
    "arch",        # an evaluated architecture: its minibatch, initialisation and proxy randomness
    "sample",      # which architectures an evaluation draws from a space
    "candidate",   # a BlockSwap candidate: its block draw, initialisation and minibatch
    "batch",       # one minibatch shared by every candidate of a search
    "holdout",     # the images a training run keeps out
    "weights",     # a trained network's initial weights
    "epoch",       # a training epoch's order and augmentation
    "table-check",  # which rows of a stored-result table a load spot-checks (zc_proxies.spaces.validation)
})


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int in ``0..MAX_SEED``, or a :class:`ConfigError` naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"{what} must be a whole number in 0..{MAX_SEED}, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"{what} {int(seed)} is out of range: use a whole number in 0..{MAX_SEED} (2**63 - 1)")
    return int(seed)


def derive_seed(run_seed: int, stream: str, index: int = 0) -> int:
    """The seed of item ``index`` of ``stream`` in a run seeded ``run_seed``.

    Parameters
    ----------
    run_seed
        The run's seed (``--seed``), ``0..MAX_SEED``.
    stream
        One of :data:`STREAMS`: what the seed is for.
    index
        Which item of the stream (architecture index, candidate number, epoch...).

    Returns
    -------
    int
        A seed in ``0..2**63 - 1`` (valid for ``torch.manual_seed`` and ``numpy.random.default_rng``).
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown seed stream {stream!r} (known: {', '.join(sorted(STREAMS))})")
    run_seed = check_seed(run_seed)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or int(index) < 0:
        raise ValueError(f"a seed index must be a non-negative integer, got {index!r}")
    words = np.random.SeedSequence([run_seed, zlib.crc32(stream.encode("ascii")), int(index)]).generate_state(
        2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) >> 1


def rng(run_seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """A numpy generator seeded with :func:`derive_seed` ``(run_seed, stream, index)``."""
    return np.random.default_rng(derive_seed(run_seed, stream, index))
