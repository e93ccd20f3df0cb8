"""The ``workers`` collection: one document per worker (``w1@host``), written by the worker itself.

The worker registers, heartbeats and says goodbye (``worker.py``); routing, the owner policy and
worker commands add their fields. Every write and every read is a function here, named for what it
records, so the document's fields are listed in one file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mlqueue import store
from mlqueue.settings import Settings


def ensure_indexes(settings: Settings | None = None) -> None:
    """One document per worker name."""
    store.db(settings).workers.create_index("name", unique=True)


def listing(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every worker's document (without ``_id``), by name."""
    return list(store.db(settings).workers.find({}, {"_id": 0}).sort("name", 1))


def by_name(name: str, settings: Settings | None = None, fields: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The worker with this full name (``w1@host``), or None; only ``fields`` (and ``_id``) if given."""
    return store.db(settings).workers.find_one({"name": name}, dict.fromkeys(fields, 1) if fields else None)


def of_machine(machine: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The documents of the workers a joined machine runs (their names start with ``machine@``)."""
    return list(store.db(settings).workers.find({"name": {"$regex": f"^{re.escape(machine)}@"}}))


# --------------------------------------------------------------------------- "online": the one rule


def silent_since(settings: Settings, now: datetime | None = None) -> datetime:
    """A worker whose last heartbeat is older than this is not online: ``now - lost_after``.

    ``lost_after`` is the silence after which the reaper declares the Orders a worker holds lost (and
    queues them again), so the status, the API, the dashboard, the machines listing and routing call a
    worker offline exactly when the reaper has stopped waiting for it. A shorter threshold showed a
    worker offline while it still held its Jobs (not yet re-queued); a longer one would show one online
    that the reaper already gave up on. A worker killed without a goodbye keeps ``online: true`` in its
    document: its silence is what says it is gone.
    """
    return (now or datetime.now(UTC)) - timedelta(seconds=settings.lost_after)


def is_online(worker: dict[str, Any], settings: Settings, now: datetime | None = None) -> bool:
    """Whether this worker document counts as online now: no goodbye, and a heartbeat since ``silent_since``."""
    beat = worker.get("lastHeartbeat")
    return bool(worker.get("online")) and isinstance(beat, datetime) and beat > silent_since(settings, now)


def alive(settings: Settings, fields: Sequence[str] = ("name",)) -> list[dict[str, Any]]:
    """The workers online now (``is_online``), by name, with only ``fields``."""
    return list(store.db(settings).workers.find(
        {"online": True, "lastHeartbeat": {"$gt": silent_since(settings)}},
        {"_id": 0, **dict.fromkeys(fields, 1)}).sort("name", 1))


def names_starting(prefix: str, settings: Settings | None = None, limit: int = 0) -> list[str]:
    """Names of the workers whose name starts with ``prefix`` (e.g. ``w1@``), at most ``limit`` (0: all)."""
    found = store.db(settings).workers.find({"name": {"$regex": f"^{re.escape(prefix)}"}}, {"name": 1})
    return [w["name"] for w in (found.limit(limit) if limit else found)]


def counts(settings: Settings) -> dict[str, int]:
    """Workers registered, and those online now (``is_online``)."""
    d = store.db(settings)
    return {"online": d.workers.count_documents({"online": True, "lastHeartbeat": {"$gt": silent_since(settings)}}),
            "registered": d.workers.count_documents({})}


# --------------------------------------------------------------------------- writes


def register(name: str, fields: dict[str, Any], settings: Settings | None = None) -> None:
    """A worker starts: its document created or refreshed (``firstSeen`` kept), retried while the store restarts."""
    now = datetime.now(UTC)
    store.durable(lambda: store.db(settings).workers.update_one(
        {"name": name}, {"$set": {"name": name, **fields, "online": True, "startedDate": now, "lastHeartbeat": now},
                         "$setOnInsert": {"firstSeen": now}}, upsert=True), "register worker", settings)


def heartbeat(name: str, settings: Settings | None = None) -> None:
    """The worker is alive now."""
    store.db(settings).workers.update_one({"name": name}, {"$set": {"lastHeartbeat": datetime.now(UTC),
                                                                    "online": True}})


def goodbye(name: str, settings: Settings | None = None) -> None:
    """The worker stopped cleanly."""
    store.db(settings).workers.update_one({"name": name}, {"$set": {"online": False,
                                                                    "stoppedDate": datetime.now(UTC)}})


def set_control(name: str, control: dict[str, Any] | None, settings: Settings | None = None) -> None:
    """A pause/drain request for the worker (``worker_control``); None clears it (resume)."""
    update = {"$unset": {"control": ""}} if control is None else {"$set": {"control": control}}
    store.db(settings).workers.update_one({"name": name}, update)


def set_owner_state(name: str, state: str | None, reason: str | None, settings: Settings | None = None) -> None:
    """What the owner policy has the worker do now (``owner``), and why."""
    store.db(settings).workers.update_one(
        {"name": name}, {"$set": {"state": state, "stateReason": reason, "stateSince": datetime.now(UTC)}})


def publish_routing(name: str, capabilities: dict[str, Any], queues: list[str],
                    settings: Settings | None = None) -> None:
    """The worker's capabilities and the queues it consumes (``routing``)."""
    store.db(settings).workers.update_one(
        {"name": name}, {"$set": {"name": name, "capabilities": capabilities, "queues": queues}}, upsert=True)


def add_queue(names: list[str], queue: str, settings: Settings | None = None) -> None:
    """These workers now consume ``queue`` (they answered ``add_consumer``)."""
    store.db(settings).workers.update_many({"name": {"$in": names}}, {"$addToSet": {"queues": queue}})


def refuse(name: str, requirement_class: str, why: str, queue: str, settings: Settings | None = None) -> None:
    """The worker stops taking a requirement class until restarted (``routing``): why, and the queue dropped."""
    store.db(settings).workers.update_one(
        {"name": name}, {"$set": {f"refused.{requirement_class}": why[:300]}, "$pull": {"queues": queue}})


def forget_refusals(name: str, settings: Settings | None = None) -> None:
    """A restarted worker tries every requirement class again."""
    store.db(settings).workers.update_one({"name": name}, {"$unset": {"refused": ""}})
