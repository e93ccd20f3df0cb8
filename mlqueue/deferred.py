"""Work a worker does after a Job's answer is stored, while it already runs its next Job.

A Job's answer is its final move: the Outcome is written into the Order by one conditional, fsynced
update, and that is what the worker waits for before Celery acknowledges the message. Two things after
it need not hold up the next Job, and cost about as much as the move itself on the embedded store:

- the Outcome copy in ``outcomes`` (one per Job, first write wins), there for listings and rankings.
  The reaper already copies the Outcome of any final Order that lacks one
  (``orders.Reaper._repair_outcomes``), because a worker can always die between the two writes;
- removing the Job's working directory (several ms on ext4 for an empty one).

``later`` hands such an action to one background thread per process, which runs them in order. What
stays exact: exactly one Outcome per Job (the copy is idempotent and the Order holds the original); an
action that fails (store gone past ``store.durable``'s retries) or never runs (process killed) is
repaired by the reaper or, for a directory, by the next ``Workspace.prepare`` of that name. ``flush``
waits for what is pending: a Celery pool process flushes before it exits. See docs/performance.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlqueue import orders
from mlqueue.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Deferred:
    """Runs handed-over actions from one daemon thread, in the order they were handed over."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Callable[[], Any]]] = []
        self.running = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="mlqueue-deferred", daemon=True)
        self.thread.start()

    def put(self, what: str, action: Callable[[], Any]) -> None:
        with self.cond:
            self.pending.append((what, action))
            self.cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every action handed over has run; False if ``timeout`` ran out first."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.pending and not self.running, timeout)

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.pending)
                what, action = self.pending.pop(0)
                self.running = True
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - each action has its repair (see the module docstring)
                log.warning("%s not done (%s); it is repaired later", what, exc)
            with self.cond:
                self.running = False
                self.cond.notify_all()


_deferred: tuple[int, Deferred] | None = None
_lock = threading.Lock()


def _current() -> Deferred:
    """This process' runner (a forked child starts its own: threads do not cross a fork)."""
    global _deferred
    with _lock:
        if _deferred is None or _deferred[0] != os.getpid():
            _deferred = (os.getpid(), Deferred())
        return _deferred[1]


def later(what: str, action: Callable[[], Any]) -> None:
    """Run ``action`` in the background, after the actions handed over before it."""
    _current().put(what, action)


def copy_outcome(order: dict[str, Any], settings: Settings | None = None) -> None:
    """The Outcome copy of a final Order, in the background (``orders.finish``'s ``copy``)."""
    settings = settings or get_settings()
    later(f"outcome copy of job {order['jobId']}", lambda: orders.store_outcome(order, settings))


def remove_dir(path: Path) -> None:
    """Remove a finished Job's working directory in the background."""
    later(f"removing {path}", lambda: shutil.rmtree(path, ignore_errors=True))


def flush(timeout: float | None = 10.0) -> bool:
    """Run every pending action of this process; True when none is left."""
    if _deferred is None or _deferred[0] != os.getpid():
        return True
    return _deferred[1].flush(timeout)
