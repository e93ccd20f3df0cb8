"""The ``outcomes`` collection: each Job's one final Outcome, copied from its Order when it ends.

``orders.py`` writes an Outcome into the Order with the winning final move and then copies it here
(``insert_once``: unique per Job, first write wins), so results can be ranked and paged without reading
Orders. This module is the one place that queries the collection; the indexes it relies on are in
``store.ensure_indexes``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.collection import Collection

from mlqueue import store
from mlqueue.settings import Settings


def _outcomes(settings: Settings | None) -> Collection:
    return store.db(settings).outcomes


def insert_once(job_id: str, outcome: dict[str, Any], settings: Settings | None = None) -> None:
    """Store the Outcome of this Job unless it already has one (idempotent), durably."""
    store.durable(
        lambda: _outcomes(settings).update_one({"jobId": job_id}, {"$setOnInsert": outcome}, upsert=True),
        "store outcome", settings,
    )


def count(settings: Settings | None = None) -> int:
    """How many Outcomes are stored (the reaper compares it with the final Orders)."""
    return _outcomes(settings).count_documents({})


def job_ids(settings: Settings | None = None) -> set[str]:
    """The Job ids that have an Outcome (a scan: the reaper's first full repair only)."""
    return set(_outcomes(settings).distinct("jobId"))


def job_ids_among(wanted: Iterable[str], settings: Settings | None = None) -> set[str]:
    """Which of these Job ids have an Outcome, read ``store.IN_CHUNK`` ids at a time."""
    return {o["jobId"] for o in store.find_in(_outcomes(settings), "jobId", list(wanted), {"jobId": 1})}
