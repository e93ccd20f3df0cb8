"""The ``jobs`` collection: every Job document exactly as submitted, plus ``createdDate``.

A Job is written once (``orders.submit``) and never changed; this module is the one place that reads
one back by id, so "is this a valid id?" and "which fields?" are answered the same way everywhere.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from mlqueue import store
from mlqueue.settings import Settings


def get(job_id: str, settings: Settings | None = None, projection: dict[str, int] | None = None,
        durable: bool = False) -> dict[str, Any] | None:
    """The Job with this id (all fields, ``_id`` included, unless ``projection`` says otherwise), or None.

    An id that is not a valid ObjectId names no Job. ``durable`` keeps retrying while the store restarts
    (a worker must not drop a delivery because the HQ was briefly away).
    """
    if not isinstance(job_id, str) or not ObjectId.is_valid(job_id):
        return None

    def read() -> dict[str, Any] | None:
        return store.db(settings).jobs.find_one({"_id": ObjectId(job_id)}, projection)

    return store.durable(read, "read job", settings) if durable else read()


def by_ids(job_ids: list[str], settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The Jobs with these ids, by id (ids that name no Job, or are not ids, are left out).

    One query per ``store.IN_CHUNK`` ids, so a page of any size costs a few reads.
    """
    wanted = [ObjectId(i) for i in dict.fromkeys(job_ids) if isinstance(i, str) and ObjectId.is_valid(i)]
    return {str(j["_id"]): j for j in store.find_in(store.db(settings).jobs, "_id", wanted)} if wanted else {}


def insert(docs: list[dict[str, Any]], settings: Settings | None = None) -> None:
    """Store new Jobs (each with its own ``_id``) in one batch, durably (a retry skips those already written)."""
    store.insert_all(store.db(settings).jobs, docs, "store jobs", settings)
