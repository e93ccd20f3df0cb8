"""Every error mlqueue raises on purpose, in one hierarchy.

Each carries ``status``, the HTTP-style code an interface reports it with (the API answers with it, the
HTTP client raises it back, the CLI prints the message), so a caller can catch ``MlqueueError`` and
know the message is written for a person: what is wrong, where, and what to do. Only a process's entry
point turns an error into an exit code (the CLI's group, the worker's start-up check); library code
raises these instead of ``SystemExit``.

Module-specific errors (``jobs.JobError``, ``datasets.DatasetError``, ...) subclass the kind they are,
so ``except NotFound`` catches a missing dataset, script or Job alike.
"""

from __future__ import annotations


class MlqueueError(Exception):
    """Raised when mlqueue refuses or cannot do something; the message says what and how to fix it."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidInput(MlqueueError, ValueError):
    """Raised when a Job, sweep file, parameter or upload is not valid; nothing was changed."""

    status = 422


class JobError(InvalidInput):
    """Raised when a Job is refused at submit (a field, its script's ``Params``, its data); nothing was stored.

    Defined here, not in ``jobs``, so modules below ``jobs`` (``datasets``) can raise it; ``jobs.JobError``
    is the same class.
    """


class NotFound(MlqueueError, LookupError):
    """Raised when a Job, Order, dataset, script, artifact or sweep named by the caller does not exist."""

    status = 404


class Conflict(MlqueueError):
    """Raised when the thing exists but its state forbids the action (e.g. cancelling a finished Job)."""

    status = 409


class ConfigError(MlqueueError):
    """Raised when this machine's settings are missing or broken (no store URL, bad config.json)."""

    status = 500


class Unreachable(MlqueueError):
    """Raised when the HQ, its store or its broker cannot be reached."""

    status = 503
