"""The ``jobs`` collection: every Job document exactly as submitted, plus ``createdDate``.

A Job is written once (``orders.submit``) and never changed; this module is the one place that reads
one back by id, so "is this a valid id?" and "which fields?" are answered the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from bson import ObjectId

from mlqueue import store
from mlqueue.settings import Settings


def ensure_indexes(settings: Settings | None = None) -> None:
    """The fields Job pages filter and sort by, and ``sweepId`` (the sweep driver finds its trials' Jobs)."""
    coll = store.db(settings).jobs
    for field in ("createdDate", "projectName", "scriptName", "sweepId"):
        coll.create_index(field)


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


def every(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """Every Job, by id (one pass over the collection, for whole-table reads)."""
    return {str(j["_id"]): j for j in store.db(settings).jobs.find({})}


def created_since(since: datetime | None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The Jobs created at or after ``since`` (a range of the ``createdDate`` index); all Jobs for None."""
    return list(store.db(settings).jobs.find({"createdDate": {"$gte": since}} if since is not None else {}))


def in_windows(settings: Settings | None = None, size: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Every Job, the newest first, in windows of about ``size`` (ranges of the ``createdDate`` index, see
    ``store.in_windows``): a caller wanting the newest few stops after the first windows."""
    return store.in_windows(store.db(settings).jobs, "createdDate", None, size)


def newest_first(where: dict[str, Any], offset: int, limit: int,
                 settings: Settings | None = None) -> list[dict[str, Any]]:
    """One page of the Jobs matching ``where``, newest first (``_id`` descending)."""
    return list(store.db(settings).jobs.find(where).sort("_id", -1).skip(offset).limit(limit))


def trial_id(sweep_id: str, trial_number: int, settings: Settings | None = None) -> str | None:
    """The id of the Job a sweep submitted for this trial, or None (the driver's check before submitting)."""
    found = store.db(settings).jobs.find_one({"sweepId": sweep_id, "trialNumber": trial_number}, {"_id": 1})
    return str(found["_id"]) if found else None
