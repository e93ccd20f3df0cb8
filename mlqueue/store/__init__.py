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
from collections.abc import Callable
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
