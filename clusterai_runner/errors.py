"""The exception tree of the CLI; each class carries the exit code it ends with.

Every message follows one shape, ``<what>: <why> (<how to fix>)``, so the CLI prints
a single line ``error: <what>: <why> (<how to fix>)`` and never a traceback unless
``--debug`` is given.
"""

from __future__ import annotations


class ClusterAIError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1

    def __init__(self, what: str, why: str, fix: str | None = None) -> None:
        self.what = what
        self.why = why
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        message = f"{self.what}: {self.why}"
        return f"{message} ({self.fix})" if self.fix else message


class RunFailed(ClusterAIError):
    """A run or an operation on hosts failed (exit 1)."""

    exit_code = 1


class UsageError(ClusterAIError):
    """Bad arguments, configuration or environment; nothing was changed (exit 2)."""

    exit_code = 2


class PreflightError(ClusterAIError):
    """A preflight check failed on at least one host (exit 3)."""

    exit_code = 3


class StoreError(ClusterAIError):
    """The state store cannot be used: unreachable, locked, foreign or from a newer
    clusterai; nothing was changed (exit 2)."""

    exit_code = 2

    def __init__(self, what: str, why: str, fix: str) -> None:
        super().__init__(what, why, fix)


class Interrupted(ClusterAIError):
    """The operator pressed Ctrl-C (exit 130)."""

    exit_code = 130
