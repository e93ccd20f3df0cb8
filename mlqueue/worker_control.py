"""Pause, drain and resume workers from the HQ, and the one word that says what a worker is doing.

A command is stored on the Worker document (``control``), not sent as a message: a worker that is
asleep or restarting finds it when it comes back. The worker's owner watch (``mlqueue.owner``) reads
it every second and acts: ``pause`` suspends the running Job and takes no new one, ``drain`` finishes
the running Job and takes no new one, ``resume`` clears the command.

States (``workers[].state`` in ``status --format json``, the API and the dashboard): ``offline`` (no
heartbeat), ``paused`` (by the HQ), ``owner active`` (its owner policy holds it), ``draining``,
``busy``, ``idle``.
"""

from __future__ import annotations

from typing import Any, Literal

from mlqueue import orders
from mlqueue.errors import InvalidInput, NotFound
from mlqueue.settings import Settings
from mlqueue.store import workers as worker_store

ACTIONS = ("pause", "resume", "drain")
Action = Literal["pause", "resume", "drain"]


class WorkerNotFound(NotFound):
    """No worker (or more than one) answers to the name given."""


def find(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """A Worker by its full name (``w1@host``) or the part before ``@`` when that is unique."""
    found = worker_store.by_name(name, settings)
    if found:
        return found
    matches = worker_store.names_starting(f"{name}@", settings, limit=3)
    if len(matches) == 1:
        return worker_store.by_name(matches[0], settings)
    known = sorted(worker_store.names_starting("", settings))
    if matches:
        raise WorkerNotFound(f"worker name {name!r} is ambiguous ({', '.join(matches)}); give the full name")
    raise WorkerNotFound(f"no worker named {name!r}; known workers: {', '.join(known) or 'none yet'}")


def command(name: str, action: Action, by: str = "cli", settings: Settings | None = None) -> dict[str, Any]:
    """Store ``action`` for the worker; returns ``{"worker", "action", "state"}``."""
    from mlqueue.access import require_write

    require_write("pause, resume or drain workers")
    if action not in ACTIONS:
        raise InvalidInput(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    worker = find(name, settings)
    control = None if action == "resume" else {"action": action, "by": by, "at": orders.now()}
    worker_store.set_control(worker["name"], control, settings)
    return {"worker": worker["name"], "action": action,
            "message": f"{worker['name']}: {action} requested by {by}; the worker acts within a few seconds"}


def state_of(worker: dict[str, Any]) -> str:
    """One word for a Worker document enriched by ``outcomes.workers`` (``online``, ``currentJob``)."""
    if not worker.get("online"):
        return "offline"
    if worker.get("state"):
        return worker["state"]
    action = (worker.get("control") or {}).get("action")
    if action == "pause":
        return "paused"
    if action == "drain":
        return "draining"
    return "busy" if worker.get("currentJob") else "idle"
