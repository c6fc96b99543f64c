"""Exceptions raised by zcbench.

Every error that a user can cause (a bad name, a bad batch, a bad data file, a
score that is not a number) is a :class:`ZCBenchError`, so calling code can catch
them all in one place while still seeing a message that names the problem.
"""

from __future__ import annotations


class ZCBenchError(Exception):
    """Base class of every error zcbench raises on purpose."""


class UnknownNameError(ZCBenchError, LookupError):
    """A proxy, space, dataset or split name that is not registered."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ZCBenchError, ValueError):
    """A name that is already registered was registered again."""


class BatchError(ZCBenchError, ValueError):
    """A minibatch that does not fit the model (shape, dtype, labels)."""


class ModelError(ZCBenchError, ValueError):
    """A model a proxy cannot work with (nothing to probe, wrong output)."""


class NonFiniteScoreError(ZCBenchError, ArithmeticError):
    """A proxy produced NaN or an infinite value."""


class DataError(ZCBenchError, ValueError):
    """A data file or data root that is missing, malformed or truncated."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file or folder that does not exist."""


class ArchError(ZCBenchError, ValueError):
    """An architecture description that is malformed for its search space."""
