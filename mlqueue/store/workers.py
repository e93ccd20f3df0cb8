"""The ``workers`` collection: one document per worker (``w1@host``), written by the worker itself.

The worker registers, heartbeats and says goodbye (``worker.py``); routing, the owner policy and
worker commands add their fields. Readers ask here: by name, every worker, or how many are alive.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from mlqueue import store
from mlqueue.settings import Settings


def listing(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every worker's document (without ``_id``), by name."""
    return list(store.db(settings).workers.find({}, {"_id": 0}).sort("name", 1))


def by_name(name: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The worker with this full name (``w1@host``), or None."""
    return store.db(settings).workers.find_one({"name": name})


def names_starting(prefix: str, settings: Settings | None = None, limit: int = 0) -> list[str]:
    """Names of the workers whose name starts with ``prefix`` (e.g. ``w1@``), at most ``limit`` (0: all)."""
    found = store.db(settings).workers.find({"name": {"$regex": f"^{re.escape(prefix)}"}}, {"name": 1})
    return [w["name"] for w in (found.limit(limit) if limit else found)]


def counts(fresh_since: datetime, settings: Settings | None = None) -> dict[str, int]:
    """Workers registered, and those online with a heartbeat since ``fresh_since``."""
    d = store.db(settings)
    return {"online": d.workers.count_documents({"online": True, "lastHeartbeat": {"$gte": fresh_since}}),
            "registered": d.workers.count_documents({})}
