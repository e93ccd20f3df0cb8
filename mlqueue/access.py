"""Who may do what over HTTP: the full token, the read-only token, and a brake on guessing either.

The HQ has two tokens in its ``config.json``: ``token`` (everything — and since Jobs run code on every
worker, whoever holds it can run code on every machine of the house) and ``read_token`` (view Jobs,
Outcomes, logs and the dashboard; never submit, cancel, requeue or push). The token gate decides the
*role* of each request once; it refuses mutating HTTP methods to the read role outright, and keeps the
role in a context variable for the dashboard, whose callbacks are POSTs: every use case that changes
something calls ``require_write`` first, so a read-only dashboard session can look but not act.

Wrong tokens are counted per client address; after ``MAX_FAILURES`` in ``WINDOW`` seconds that address
gets 429 until the window has passed, so a token cannot be guessed at network speed.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from contextvars import ContextVar

from mlqueue.errors import MlqueueError

FULL, READ = "full", "read"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FAILURES = 10
WINDOW = 60.0

current_role: ContextVar[str] = ContextVar("mlqueue_role", default=FULL)


class ReadOnly(MlqueueError, PermissionError):
    """A read-only token tried to change something; the message says which token can."""

    status = 403


def read_only_message(what: str) -> str:
    return (f"this token is read-only: it can view Jobs, results and the dashboard but not {what}; "
            "use the HQ's full token (key \"token\" in the HQ's config.json)")


def require_write(what: str) -> None:
    """Called by every use case that changes state; refuses when the request came with the read-only token."""
    if current_role.get() != FULL:
        raise ReadOnly(read_only_message(what))


def _same(given: str, token: str | None) -> bool:
    """Constant-time comparison, so response timing tells nothing about a token."""
    return bool(token) and secrets.compare_digest(given.encode(), token.encode())


def role_for(given: str | None, token: str, read_token: str | None = None) -> str | None:
    """The role a presented token grants, or None. Both tokens are always compared (no early exit)."""
    if given is None:
        return None
    full, read = _same(given, token), _same(given, read_token)
    return FULL if full else READ if read else None


def read_may(method: str, path: str) -> bool:
    """What the read role may send: safe methods, logging in, and the dashboard's callbacks (guarded inside)."""
    return method in SAFE_METHODS or path == "/login" or path.startswith("/ui/_dash-")


class FailureLimiter:
    """Counts wrong tokens per client address in a sliding window."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """Seconds this client must wait before trying a token again, or None if it may try now."""
        with self._lock:
            times = self._recent(client)
            if len(times) < self.max_failures:
                return None
            return max(1.0, times[0] + self.window - time.monotonic())

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(time.monotonic())
            if len(self._failures) > 10_000:  # never grow without bound under a spray of addresses
                self._failures = {k: v for k, v in self._failures.items() if v}

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        cutoff = time.monotonic() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        return times
