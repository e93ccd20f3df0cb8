"""The ``outcomes`` collection: each Job's one final Outcome, copied from its Order when it ends.

``orders.py`` writes an Outcome into the Order with the winning final move and then copies it here
(``insert_once``: unique per Job, first write wins), so results can be ranked and paged without reading
Orders. This module is the one place that queries the collection; the indexes it relies on are in
``store.ensure_indexes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.collection import Collection

from mlqueue import store
from mlqueue.settings import Settings


def _outcomes(settings: Settings | None) -> Collection:
    return store.db(settings).outcomes


def ensure_indexes(settings: Settings | None = None) -> None:
    """``jobId`` unique (one final Outcome per Job), and the fields results are ranked and filtered by."""
    coll = _outcomes(settings)
    coll.create_index("jobId", unique=True)
    coll.create_index("loss")
    coll.create_index("metric")
    coll.create_index("finishedDate")
    # The store scans the whole collection for a range on ``_id`` alone; an index led by ``_id`` makes
    # "Outcomes written since X" an index range (how ``ranking`` keeps its pages current).
    coll.create_index([("_id", 1), ("jobId", 1)])
    for field in ("state", "worker"):  # the result pages' filters (ranking's fallback queries them)
        coll.create_index(field)


def insert_once(job_id: str, outcome: dict[str, Any], settings: Settings | None = None) -> None:
    """Store the Outcome of this Job unless it already has one (idempotent), durably."""
    store.durable(
        lambda: _outcomes(settings).update_one({"jobId": job_id}, {"$setOnInsert": outcome}, upsert=True),
        "store outcome", settings,
    )


def job_ids(settings: Settings | None = None) -> set[str]:
    """The Job ids that have an Outcome (every Outcome read, in windows: the reaper's first full repair only)."""
    return {o["jobId"] for window in in_windows(settings, {"_id": 0, "jobId": 1}) for o in window}


def in_windows(settings: Settings | None = None, projection: dict[str, Any] | None = None,
               size: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Every Outcome, the last finished first, in windows of about ``size`` (ranges of the ``finishedDate``
    index, see ``store.in_windows``): a whole read that lets other requests in between. Outcomes are
    written once, so each is read once; one written during the read may be missed (``written_after``)."""
    return store.in_windows(_outcomes(settings), "finishedDate", projection, size or store.WINDOW * 4)


def job_ids_among(wanted: Iterable[str], settings: Settings | None = None) -> set[str]:
    """Which of these Job ids have an Outcome, read ``store.IN_CHUNK`` ids at a time."""
    return {o["jobId"] for o in store.find_in(_outcomes(settings), "jobId", list(wanted), {"jobId": 1})}


def of_job(job_id: str, settings: Settings | None = None,
           projection: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The Outcome of this Job (only ``projection`` if given; default without ``_id``), or None."""
    return _outcomes(settings).find_one({"jobId": job_id}, projection or {"_id": 0})


def for_jobs(wanted: Iterable[str], settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The Outcomes of these Jobs (without ``_id``), by Job id, read ``store.IN_CHUNK`` ids at a time."""
    return {o["jobId"]: o for o in store.find_in(_outcomes(settings), "jobId", list(wanted), {"_id": 0})}


def job_ids_finished_since(since: datetime, settings: Settings | None = None) -> set[str]:
    """The Job ids whose Outcome's ``finishedDate`` is at or after ``since`` (a range of its index)."""
    return {o["jobId"] for o in _outcomes(settings).find({"finishedDate": {"$gte": since}}, {"jobId": 1})}


def written_after(after: ObjectId | None, settings: Settings | None = None,
                  projection: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The Outcomes stored after the one with ``_id`` ``after`` (all of them for None): an ``_id`` range."""
    return _outcomes(settings).find({"_id": {"$gt": after}} if after is not None else {}, projection)


def done_by_worker(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """Per worker name: ``n`` (Outcomes it wrote), ``busy`` (their ``durationSeconds`` summed) and
    ``last`` (the newest Outcome's ``_id``, where a caller keeping totals goes on with ``written_after``)."""
    return {row["_id"]: row for row in _outcomes(settings).aggregate(
        [{"$group": {"_id": "$worker", "n": {"$sum": 1}, "busy": {"$sum": "$durationSeconds"},
                     "last": {"$max": "$_id"}}}])}


NUMBER = {"$gte": float("-inf")}  # matches every number (Mongo compares within a type), and uses the index


def page_sorted_by(sort: str, descending: bool, where: dict[str, Any], offset: int, limit: int,
                   settings: Settings | None = None) -> list[dict[str, Any]]:
    """One page of the Outcomes matching ``where`` (without ``_id``), sorted, skipped and limited by the store.

    Those whose ``sort`` field is a number come first, in order (an indexed sort field); the rest
    follow, newest Job first.
    """
    coll = _outcomes(settings)
    scored = _and(where, {sort: NUMBER})
    rows = list(coll.find(scored, {"_id": 0}).sort(sort, -1 if descending else 1).skip(offset).limit(limit))
    if len(rows) < limit:
        n_scored = offset + len(rows) if rows or not offset else coll.count_documents(scored)
        rest = coll.find(_and(where, {sort: {"$not": NUMBER}}), {"_id": 0}).sort("jobId", -1)
        rows += list(rest.skip(max(0, offset - n_scored)).limit(limit - len(rows)))
    return rows


def _and(where: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    clash = set(where) & set(extra)
    return {"$and": [where, extra]} if clash else {**where, **extra}
