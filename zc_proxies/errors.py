"""Exceptions raised by zcbench.

Every error that a user can cause (a bad name, a bad batch, a bad data file, a
score that is not a number) is a :class:`ZCBenchError`, so calling code can catch
them all in one place while still seeing a message that names the problem.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable


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


class ConfigError(ZCBenchError, ValueError):
    """A run-level setting that cannot work (device, seed, output path, an option out of range).

    Raised before a run stores anything, so a bad option never leaves a half-made store behind.
    """


class StoreLockedError(ZCBenchError, RuntimeError):
    """Another process is writing the same result store."""


class RunError(ZCBenchError, RuntimeError):
    """A run could not go on (its worker processes died, say); finished results are kept."""


def guarded(name: str, run: Callable[[], int | None]) -> int:
    """Run a command's body; a :class:`ZCBenchError` becomes one line on stderr and exit status 2.

    zcbench's own warnings (a stand-in, a torn line cut away, a worker restarted)
    print as ``name: warning: ...`` lines meanwhile.

    The command line and the benchmark scripts use it, so bad input (a missing
    data root, a corrupt file) reads as a sentence naming the problem, not a
    traceback.
    """
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if category.__module__.startswith("zc_proxies"):  # ours say what happened; where in the code is noise
            print(f"{name}: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        return int(run() or 0)
    except ZCBenchError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; finished scores are kept", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
