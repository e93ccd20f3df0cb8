"""The MongoDB store: Jobs, Orders, Outcomes, Workers and GridFS files.

Every process gets its own client (pymongo clients must not cross a fork: Celery's pool children
are forked from the worker's main process). Writes that must not be lost go through ``durable``,
which keeps retrying while the HQ's database is restarting.

Each collection has one owner module that alone queries and updates it (``store/orders.py``,
``store/outcomes.py``, ``store/jobs.py``, ``store/workers.py``; the others are listed in
``docs/architecture.md``); ``tests/test_architecture.py`` fails on a ``db(...).<collection>`` elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import gridfs
import pymongo
from bson import ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, ServerSelectionTimeoutError

from mlqueue.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT = (AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError)

_clients: dict[tuple[int, str], pymongo.MongoClient] = {}


def client(settings: Settings | None = None) -> pymongo.MongoClient:
    """A MongoClient for this process and URL, created on first use."""
    settings = settings or get_settings()
    _, mongo_url = settings.require_urls()
    key = (os.getpid(), mongo_url)
    if key not in _clients:
        # connectTimeoutMS is also the socket timeout of pymongo's monitor check: when a busy embedded
        # store (one process, reading 100,000 Orders for a whole-table read) answers that check late,
        # pymongo cancels every operation in flight, so whole reads failed again and again under load.
        _clients[key] = pymongo.MongoClient(
            mongo_url, serverSelectionTimeoutMS=5000, connectTimeoutMS=30000, tz_aware=True
        )
    return _clients[key]


def db(settings: Settings | None = None) -> Database:
    settings = settings or get_settings()
    return client(settings)[settings.mongo_db]


def bucket(name: str = "fs", settings: Settings | None = None) -> gridfs.GridFSBucket:
    """A GridFS bucket (datasets, artifacts, script bundles)."""
    return gridfs.GridFSBucket(db(settings), bucket_name=name)


def forget_clients() -> None:
    """Drop clients inherited across a fork or pointing at a server that was replaced."""
    for c in list(_clients.values()):
        try:
            c.close()
        except Exception:  # noqa: BLE001 - closing a dead client must never fail a caller
            pass
    _clients.clear()


def ensure_indexes(settings: Settings | None = None) -> None:
    """Indexes on everything we look up, filter or sort by, and the one-Outcome-per-Job guarantee: each
    collection's owner module lists its own."""
    from mlqueue.store import jobs, orders, outcomes, workers

    for owner in (orders, outcomes, jobs, workers):
        owner.ensure_indexes(settings)


IN_CHUNK = 50  # SecantusDB matches ``$in`` in time that grows with the square of its length


def find_in(collection: Collection, field: str, values: list, projection: dict | None = None) -> list[dict]:
    """The documents whose ``field`` is one of ``values``, read ``IN_CHUNK`` values at a time."""
    found: list[dict] = []
    for start in range(0, len(values), IN_CHUNK):
        found.extend(collection.find({field: {"$in": values[start:start + IN_CHUNK]}}, projection))
    return found


WINDOW = 250  # documents per window of a whole read: ~0.1 s of the embedded store's time for an Order
FIRST_WINDOW = timedelta(seconds=60)
NARROWEST = timedelta(milliseconds=1)  # a stored date's resolution
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def in_windows(collection: Collection, field: str, projection: dict | None = None,
               size: int | None = None) -> Iterator[list[dict]]:
    """Every document of ``collection``, newest ``field`` (an indexed date) first, in windows of about
    ``size`` documents; each window is one bounded range of ``field``'s index.

    Why: the embedded store (SecantusDB) serves one request at a time and reads every document a query
    matches before answering, so one whole read of 100,000 Orders held every other request (a page's
    small query included) for tens of seconds. A narrow range of an index costs what it returns, so a
    whole read made of short ranges lets other requests in between them.

    The ranges tile time from now backwards: ``[lower, +inf)``, then ``[lower', lower)``..., each as wide
    as the density of the last one says holds ``size`` documents (twice as wide after an empty one);
    once fewer than ``size`` should be left, ``(-inf, lower)`` and the documents without ``field``. The
    range after an empty one may reach far back into a busy past (a house quiet since yesterday): its
    dates alone are read first (a quarter of the cost) and it is read in pieces of ``size`` cut at them.
    A document is read once; one whose ``field`` grows during the read (an Order that moves) may be
    missed, its new value lying in a range already read: a caller keeping a copy re-reads what changed.
    """
    size = size or WINDOW
    if projection and any(v == 1 for v in projection.values()):
        projection = {**projection, field: 1}  # the density is measured on it
    left = collection.estimated_document_count()
    width = FIRST_WINDOW
    upper: datetime | None = None
    lower = datetime.now(UTC) - width
    quiet = False  # the last range was empty
    while left > size and lower > EPOCH:
        bounds = {"$gte": lower, **({"$lt": upper} if upper else {})}
        if quiet:
            stamps = sorted((d[field] for d in collection.find({field: bounds}, {field: 1, "_id": 0})), reverse=True)
            cuts = [lower, *sorted(set(stamps[size - 1:-1:size]))]  # lower bounds, each piece ~size documents
            tops = [*cuts[1:], upper]
            for low, high in reversed(list(zip(cuts, tops, strict=True))):
                piece = {"$gte": low, **({"$lt": high} if high else {})}
                if window := list(collection.find({field: piece}, projection)):
                    yield window
        else:
            window = list(collection.find({field: bounds}, projection))
            stamps = [d[field] for d in window if isinstance(d.get(field), datetime)]
            if window:
                yield window
        left -= len(stamps)
        quiet = not stamps
        width = max(NARROWEST, _next_width(stamps, lower, width, size))
        upper, lower = lower, max(EPOCH, lower - width)
    rest = [collection.find({}, projection)] if upper is None else \
        [collection.find({field: {"$lt": upper}}, projection), collection.find({field: None}, projection)]
    for cursor in rest:
        if window := list(cursor):
            yield window


def _next_width(stamps: list[datetime], lower: datetime, width: timedelta, size: int) -> timedelta:
    """How wide the next range should be to hold about ``size`` documents, from the density of the last
    one (its documents' ``stamps``): measured from its lower bound to its newest document (the range
    after a quiet spell holds documents only at its old end)."""
    if not stamps:
        return width * 2
    return min(width * 2, max(NARROWEST, max(stamps) - lower) * size / len(stamps))


def by_id_or_prefix(collection: Collection, text: str, field: str = "_id") -> list[dict]:
    """The document whose id (``field``) is ``text``, else those whose id starts with it (4 to 23 characters).

    The one id-prefix lookup (a Job's Order, a sweep): ``[]`` none, ``[doc]`` found, two documents: the
    prefix is ambiguous. An ``_id`` holds an ObjectId, which a regex cannot match, so its prefixes are
    compared on the ids alone (a projection of ``_id`` only).
    """
    if field == "_id":
        exact = collection.find_one({"_id": ObjectId(text)}) if ObjectId.is_valid(text) else None
    else:
        exact = collection.find_one({field: text})
    if exact is not None:
        return [exact]
    if not 4 <= len(text) < 24:
        return []
    if field != "_id":
        return list(collection.find({field: {"$regex": f"^{re.escape(text)}"}}).limit(2))
    ids = [doc["_id"] for doc in collection.find({}, {"_id": 1}) if str(doc["_id"]).startswith(text)][:2]
    return [doc for i in ids if (doc := collection.find_one({"_id": i})) is not None]


def insert_all(collection: Collection, docs: list[dict], what: str, settings: Settings | None = None) -> None:
    """Insert documents that carry their own ``_id`` in one batch, durably.

    A retry after a lost answer may find some of them already written: a duplicate key is then our own
    earlier write, and only the rest are inserted.
    """
    if not docs:
        return

    def attempt() -> None:
        try:
            collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    durable(attempt, what, settings)


def durable(action: Callable[[], T], what: str, settings: Settings | None = None) -> T:
    """Run a store operation, retrying through a database restart (up to ``store_retry_for``)."""
    settings = settings or get_settings()
    deadline = time.monotonic() + settings.store_retry_for
    delay = 0.2
    while True:
        try:
            return action()
        except TRANSIENT as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("store unavailable while trying to %s (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
