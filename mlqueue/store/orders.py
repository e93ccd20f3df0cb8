"""The ``orders`` collection: one document per Job, its lifecycle state and everything a run adds.

Only ``orders.py`` decides how an Order moves (the state diagram, each move one conditional update);
this module is the one place that queries or updates the collection, so every filter on it (and the
index it relies on, see ``store.ensure_indexes``) can be found in one file. Readers elsewhere (status,
the dashboard, routing, the reaper) call a function here named for what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import OperationFailure
from pymongo.results import UpdateResult

from mlqueue import store
from mlqueue.settings import Settings

WITHOUT_BULK = {"metrics": 0, "history": 0, "log": 0}  # an Order without its growing lists


def _orders(settings: Settings | None) -> Collection:
    return store.db(settings).orders


# Indexes this module no longer makes, dropped where an older version made them. SecantusDB reads its
# index list ~20 times per update, so each index costs every move CPU (bench/order_update.py); the
# queries they served use ``state`` (the held, running or queued Orders are few next to the history).
OBSOLETE_INDEXES = ("state_1_heartbeatAt_1", "state_1_createdDate_1", "worker_1_state_1")


def ensure_indexes(settings: Settings | None = None) -> None:
    """The indexes every read below relies on; ``jobId`` unique (one Order per Job). Kept few on purpose:
    every Order move pays for each one (see ``OBSOLETE_INDEXES``)."""
    coll = _orders(settings)
    coll.create_index("jobId", unique=True)
    coll.create_index("state")  # the reaper's and the pages' reads of held, running or queued Orders
    coll.create_index("updatedDate")  # what changed since: keeps order_index current
    coll.create_index("sweepId")  # a sweep's status reads its trials' Orders (else a scan of every Order)
    coll.create_index([("placedOn", 1), ("state", 1)])  # Jobs placed on a faster worker (speed.py)
    present = set(coll.index_information())
    for name in OBSOLETE_INDEXES:
        if name in present:
            try:
                coll.drop_index(name)
            except OperationFailure:  # dropped meanwhile by another process starting: what we wanted
                pass


# --------------------------------------------------------------------------- writes (orders.py's moves)


def insert(new_orders: list[dict[str, Any]], settings: Settings | None = None) -> None:
    """Store new Orders in one batch, durably (a retry skips those already written)."""
    store.insert_all(_orders(settings), new_orders, "store orders", settings)


def update(query: dict[str, Any], change: dict[str, Any], settings: Settings | None = None,
           durable_as: str | None = None) -> UpdateResult:
    """Apply ``change`` to the one Order matching ``query`` (the caller's condition); its result says
    whether it matched. ``durable_as`` names the write when it must be retried through a store restart."""
    def write() -> UpdateResult:
        return _orders(settings).update_one(query, change)

    return store.durable(write, durable_as, settings) if durable_as else write()


def update_returning(query: dict[str, Any], change: dict[str, Any], settings: Settings | None = None,
                     durable_as: str | None = None,
                     projection: dict[str, int] | None = None) -> dict[str, Any] | None:
    """Like ``update``, and the Order as it is after the change (only ``projection``), or None if none matched."""
    def write() -> dict[str, Any] | None:
        return _orders(settings).find_one_and_update(query, change, projection=projection,
                                                     return_document=ReturnDocument.AFTER)

    return store.durable(write, durable_as, settings) if durable_as else write()


def add_history(job_id: str, event: dict[str, Any], settings: Settings | None = None) -> None:
    """Append one history line to the Order of a Job without changing anything else, durably."""
    update({"jobId": job_id}, {"$push": {"history": event}}, settings, "note order history")


def mark_enqueued(sent: list[tuple[str, str]], stamp: datetime, settings: Settings | None = None) -> None:
    """Stamp ``enqueuedAt`` on the Orders whose messages ``(jobId, delivery)`` were just sent.

    Delivery ids are unique, so the filter matches exactly those Orders; read in ``IN_CHUNK`` pieces.
    """
    for chunk in range(0, len(sent), store.IN_CHUNK):
        part = sent[chunk:chunk + store.IN_CHUNK]
        _orders(settings).update_many(
            {"jobId": {"$in": [j for j, _ in part]}, "delivery": {"$in": [dl for _, dl in part]}},
            {"$set": {"enqueuedAt": stamp}},
        )


# --------------------------------------------------------------------------- reads of one Order


def by_job(job_id: str, settings: Settings | None = None, projection: dict[str, Any] | None = None,
           durable: bool = False) -> dict[str, Any] | None:
    """The Order of this Job (only ``projection`` if given), or None. ``durable`` retries through a restart."""
    def read() -> dict[str, Any] | None:
        return _orders(settings).find_one({"jobId": job_id}, projection)

    return store.durable(read, "read order", settings) if durable else read()


def by_job_or_prefix(text: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The Orders whose Job id is ``text`` or starts with it (``store.by_id_or_prefix``: two mean ambiguous)."""
    return store.by_id_or_prefix(_orders(settings), text, "jobId")


def with_delivery(job_id: str, delivery: str, settings: Settings | None = None,
                  state: str | None = None) -> dict[str, Any] | None:
    """The Order of this Job if its current delivery is ``delivery`` (and in ``state`` if given), without
    its growing lists; None for a stale message."""
    query: dict[str, Any] = {"jobId": job_id, "delivery": delivery}
    if state is not None:
        query["state"] = state
    return _orders(settings).find_one(query, WITHOUT_BULK)


# --------------------------------------------------------------------------- reads of many Orders (the reaper)


def silent(states: Iterable[str], cutoff: datetime, settings: Settings | None = None) -> Iterator[dict[str, Any]]:
    """Orders in ``states`` whose last heartbeat is older than ``cutoff``: the reaper's lost candidates
    (the ``state`` index: held Orders are few)."""
    return _orders(settings).find({"state": {"$in": list(states)}, "heartbeatAt": {"$lt": cutoff}})


def past_deadline(state: str, before: datetime, settings: Settings | None = None) -> Iterator[dict[str, Any]]:
    """Orders in ``state`` whose deadline passed before ``before``: Jobs over their time limit."""
    return _orders(settings).find({"state": state, "deadline": {"$lt": before}})


def unsent(state: str, before: datetime, settings: Settings | None = None) -> Iterator[dict[str, Any]]:
    """Orders in ``state`` whose message was never sent (``enqueuedAt`` None) and not touched since
    ``before``, without their growing lists: what the reaper sends again."""
    return _orders(settings).find({"state": state, "enqueuedAt": None, "updatedDate": {"$lt": before}},
                                  WITHOUT_BULK)


def job_ids_in(states: Iterable[str], settings: Settings | None = None) -> list[str]:
    """The Job ids of every Order in one of ``states`` (every Order read, in windows: the reaper's first
    full repair only; a filter on ``state`` alone made the store read every Order in one go)."""
    wanted = set(states)
    return [o["jobId"] for window in in_windows(settings, {"jobId": 1, "state": 1}) for o in window
            if o.get("state") in wanted]


def states_changed_since(since: datetime, settings: Settings | None = None) -> list[tuple[str, str]]:
    """``(jobId, state)`` of the Orders updated since ``since``.

    Filtered by ``updatedDate`` alone (an index range): with the state in the filter the store would scan
    every final Order.
    """
    return [(o["jobId"], o.get("state")) for o in
            _orders(settings).find({"updatedDate": {"$gte": since}}, {"jobId": 1, "state": 1})]


def by_job_ids(job_ids: Iterable[str], settings: Settings | None = None,
               projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The Orders of these Jobs, read ``store.IN_CHUNK`` ids at a time (missing ids are left out)."""
    return store.find_in(_orders(settings), "jobId", list(job_ids), projection)


# --------------------------------------------------------------------------- reads for the use cases and pages


def states_of(job_ids: list[str], settings: Settings | None = None) -> dict[str, str]:
    """The state of each named Job's Order (unknown ids are left out)."""
    return {o["jobId"]: o["state"] for o in by_job_ids(job_ids, settings, {"jobId": 1, "state": 1})}


def in_state_of(job_id: str, states: Iterable[str], settings: Settings | None = None,
                projection: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The Order of this Job if it is in one of ``states`` (e.g. final), else None."""
    return _orders(settings).find_one({"jobId": job_id, "state": {"$in": list(states)}}, projection)


def oldest_first(offset: int, limit: int, settings: Settings | None = None,
                 projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One page of Orders in the order they were stored (``_id``)."""
    return list(_orders(settings).find({}, projection).sort("_id", 1).skip(offset).limit(limit))


def newest_first(where: dict[str, Any], offset: int, limit: int, settings: Settings | None = None,
                 projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One page of the Orders matching ``where``, newest Job first (``jobId`` descending)."""
    return list(_orders(settings).find(where, projection).sort("jobId", -1).skip(offset).limit(limit))


def matching(where: dict[str, Any], settings: Settings | None = None,
             projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Order matching ``where`` (a filter on the Order's own fields: state, projectName, sweepId...)."""
    return list(_orders(settings).find(where, projection))


def every(settings: Settings | None = None, projection: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every Order (a cursor: one pass over the collection, for whole-table reads)."""
    return _orders(settings).find({}, projection)


def in_windows(settings: Settings | None = None, projection: dict[str, Any] | None = None,
               size: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Every Order, the most recently moved first, in windows of about ``size`` (ranges of the
    ``updatedDate`` index, see ``store.in_windows``): a whole read that lets other requests in between.
    An Order that moves during the read may be missed; re-read with ``updated_since`` its start."""
    return store.in_windows(_orders(settings), "updatedDate", projection, size)


def updated_since(since: datetime | None, settings: Settings | None = None,
                  projection: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The Orders whose ``updatedDate`` is at or after ``since`` (a range of its index)."""
    return _orders(settings).find({"updatedDate": {"$gte": since}}, projection)


def in_states(states: Iterable[str], settings: Settings | None = None,
              projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The Orders in one of ``states`` (the ``state`` index; held Orders are a handful)."""
    return list(_orders(settings).find({"state": {"$in": list(states)}}, projection))


def held_by(worker: str, states: Iterable[str], settings: Settings | None = None,
            projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The Orders this worker holds (in one of ``states``), by the ``state`` index (held Orders are few)."""
    return list(_orders(settings).find({"worker": worker, "state": {"$in": list(states)}}, projection))


def job_ids_in_among(states: Iterable[str], job_ids: list[str], settings: Settings | None = None) -> list[str]:
    """Which of these Jobs have an Order in one of ``states``."""
    found = _orders(settings).find({"jobId": {"$in": job_ids}, "state": {"$in": list(states)}}, {"jobId": 1})
    return [o["jobId"] for o in found]


def job_ids_matching(where: dict[str, Any], settings: Settings | None = None) -> list[str]:
    """The Job ids of the Orders matching ``where`` (to filter Outcomes by project, script, sweep)."""
    return [o["jobId"] for o in _orders(settings).find(where, {"jobId": 1, "_id": 0})]


def sent_before(state: str, before: datetime, settings: Settings | None = None,
                projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Orders in ``state`` whose message was sent before ``before`` (``enqueuedAt``): whose message a worker
    should have taken by now, or which still wait in a queue."""
    return list(_orders(settings).find({"state": state, "enqueuedAt": {"$lt": before}}, projection))


def with_deliveries(state: str, deliveries: list[str], settings: Settings | None = None,
                    projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The Orders in ``state`` whose current delivery is one of ``deliveries`` (messages found in the broker)."""
    return list(_orders(settings).find({"state": state, "delivery": {"$in": deliveries}}, projection))


def count_by(field: str, match: dict[str, Any] | None = None, settings: Settings | None = None) -> dict[Any, int]:
    """How many Orders (matching ``match``) have each value of ``field`` (state, pinnedWorker...)."""
    pipeline: list[dict[str, Any]] = [{"$match": match}] if match else []
    pipeline.append({"$group": {"_id": f"${field}", "n": {"$sum": 1}}})
    return {row["_id"]: row["n"] for row in _orders(settings).aggregate(pipeline)}


def waiting_groups(state: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Orders in ``state`` grouped by requirement class and pinned worker: ``_id`` {c, w}, ``jobs`` (count),
    ``requires``, ``oldest`` (createdDate) and ``example`` (a jobId), for "why does it wait"."""
    return list(_orders(settings).aggregate([
        {"$match": {"state": state}},
        {"$group": {"_id": {"c": "$requirementClass", "w": "$pinnedWorker"}, "jobs": {"$sum": 1},
                    "requires": {"$first": "$requires"}, "oldest": {"$min": "$createdDate"},
                    "example": {"$first": "$jobId"}}},
    ]))


# --------------------------------------------------------------------------- placement (speed.py)


def running_on_or_placed_on(worker: str, held: Iterable[str], waiting: str, settings: Settings | None = None,
                            projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What ``worker`` still has to do: the Orders it holds (in ``held``) and those in ``waiting`` placed on it.

    Two reads, each on an index: the store runs an ``$or`` of the two as a scan of every Order."""
    coll = _orders(settings)
    return [*coll.find({"worker": worker, "state": {"$in": list(held)}}, projection),
            *coll.find({"placedOn": worker, "state": waiting}, projection)]


def placed(state: str, settings: Settings | None = None,
           projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Orders in ``state`` placed on some worker (``placedOn`` set): an index range, not a scan."""
    return list(_orders(settings).find({"placedOn": {"$gt": ""}, "state": state}, projection))


def oldest_placed_on(worker: str, state: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """``jobId``, ``delivery`` and ``scriptVersion`` of the Order in ``state`` placed on ``worker`` the
    longest ago, or None."""
    return _orders(settings).find_one({"state": state, "placedOn": worker}, {"jobId": 1, "delivery": 1,
                                                                            "scriptVersion": 1},
                                      sort=[("updatedDate", 1)])
