"""Every Order's id and listing fields, newest first, kept in the HQ's memory: a listed page costs a page.

Why: the embedded store (SecantusDB) answers ``find().sort().skip().limit()`` by reading every matching
document before it applies ``skip`` and ``limit``, index or not (seconds per page at 100,000 Orders; see
bench/api_latency.py), while a narrow index range costs milliseconds. ``GET /orders`` and ``GET /jobs``
list newest first (``jobId`` order: ObjectIds grow with time) and filter only on fields every Order
carries, so this index keeps ``jobId -> (state, projectName, scriptName, sweepId, worker)`` for all of
them, and a page becomes: walk the ids newest first, then fetch that page's Orders by ``jobId``.

It stays exact because every change of those fields is a move (``orders._move``), and every move and
every new Order sets ``updatedDate``: each use first reads the Orders updated since the last read (an
index range on ``updatedDate``), re-reading the last ``OVERLAP`` seconds since writes commit out of
stamp order. Callers fetch the page's Orders themselves and check them against the filter, so a row
that changed after the read is never shown under a filter it no longer matches.
"""

from __future__ import annotations

import bisect
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from mlqueue.orders import now
from mlqueue.settings import Settings, get_settings
from mlqueue.store import orders as order_store

log = logging.getLogger(__name__)
FIELDS = ("state", "projectName", "scriptName", "sweepId", "worker")
OVERLAP = timedelta(seconds=5)
FULL_READ_EVERY = 1800.0  # also repairs what a writer's clock far behind the HQ's hid from the ranges
WINDOW = 1000  # Orders per window of a whole read: without their Job and Outcome, a quarter of the table's cost
PROJECTION = {"_id": 0, "jobId": 1, "updatedDate": 1, **{f: 1 for f in FIELDS}}


class WholeRead:
    """One whole read of the Orders becoming a new index, window by window."""

    def __init__(self) -> None:
        self.read_at = now()  # a read of what changed since then follows it
        self.rows: dict[str, tuple[Any, ...]] = {}
        self.newest: datetime | None = None

    def add(self, window: Iterable[dict[str, Any]]) -> None:
        """Take one window of Orders (each with ``jobId``, ``updatedDate`` and the listing fields)."""
        for doc in window:
            self.rows[doc["jobId"]] = _row(doc)
            self.newest = _newer(self.newest, doc)


class OrderIndex:
    """The listing fields of every Order of one database, in ``jobId`` order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._ids: list[str] = []  # ascending; new Orders almost always append
        self._since: datetime | None = None  # the next read starts at this ``updatedDate``
        self._newest: datetime | None = None  # the newest ``updatedDate`` read so far
        self._lock = threading.Lock()
        self.ready = False  # read whole at least once
        self._full_read_at = -FULL_READ_EVERY  # monotonic time of the last whole read
        self._loader: threading.Thread | None = None
        self._shared = False  # another whole read of the Orders is building this index (``share_read``)

    def refresh(self) -> None:
        """Read the Orders changed since the last read (the index must have been read whole: ``read_all``)."""
        if time.monotonic() - self._full_read_at >= FULL_READ_EVERY:
            self.start_loading()
        with self._lock:
            read_at, newest = now(), None
            for doc in order_store.updated_since(self._since, self.settings, PROJECTION):
                self._put(self._rows, self._ids, doc)
                newest = _newer(newest, doc)
            self._advance(read_at, newest)

    def read_all(self) -> None:
        """Read every Order into a new index, then swap it in (requests meanwhile use the old one or the store).

        The Orders come in windows (``order_store.in_windows``), the store answering other requests in
        between. An Order moved during the read may be missing from them: the first ``refresh``, from
        the read's start, brings it.
        """
        build = WholeRead()
        for window in order_store.in_windows(self.settings, PROJECTION, WINDOW):
            build.add(window)
        self._swap(build)

    def share_read(self) -> WholeRead | None:
        """For another whole read of the Orders with every listing field (the dashboard's table): a build
        its windows feed, so the Orders are read once for both; None if this index is read or being read.
        The caller ends with ``end_shared``, whatever happens."""
        with _indexes_lock:
            if self.ready or self._loader is not None or self._shared:
                return None
            self._shared = True
            self._full_read_at = time.monotonic()
        return WholeRead()

    def end_shared(self, build: WholeRead | None) -> None:
        """Swap in a shared read's index (``build``), or give the read back (None: it failed)."""
        try:
            if build is not None:
                self._swap(build)
            else:
                self._full_read_at = -FULL_READ_EVERY  # the next request reads it
        finally:
            self._shared = False

    def _swap(self, build: WholeRead) -> None:
        ids = sorted(build.rows)  # one sort: inserting 100,000 ids one at a time moved the list each time
        with self._lock:
            self._rows, self._ids, self._newest, self._since = build.rows, ids, None, None
            self._advance(build.read_at, build.newest)
            self._full_read_at = time.monotonic()
            self.ready = True

    def _advance(self, read_at: datetime, newest: datetime | None) -> None:
        """Where the next read starts: after the newest stamp seen, and never later than ``OVERLAP`` before
        this read (a write stamped before it may commit after it)."""
        if newest is not None and (self._newest is None or newest > self._newest):
            self._newest = newest
        bound = read_at - OVERLAP
        self._since = bound if self._newest is None else min(self._newest, bound)

    def start_loading(self) -> None:
        """Read the whole index in the background (one read at a time)."""
        with _indexes_lock:
            if self._loader is not None or self._shared:
                return
            self._loader = threading.Thread(target=self._load, name="mlqueue-order-index", daemon=True)
            self._full_read_at = time.monotonic()  # not again before this one is done
        self._loader.start()

    def wait_read(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) while a whole read is under way; whether the index is read."""
        deadline = time.monotonic() + timeout
        while not self.ready and (self._loader is not None or self._shared) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.ready

    def _load(self) -> None:
        try:
            self.read_all()
        except Exception:  # noqa: BLE001 - the next request tries again; pages come from the store meanwhile
            log.exception("could not read the orders index")
            self._full_read_at = -FULL_READ_EVERY
        finally:
            self._loader = None

    @staticmethod
    def _put(rows: dict[str, tuple[Any, ...]], ids: list[str], doc: dict[str, Any]) -> None:
        job_id = doc["jobId"]
        if job_id not in rows:
            if not ids or job_id > ids[-1]:
                ids.append(job_id)
            else:
                bisect.insort(ids, job_id)
        rows[job_id] = _row(doc)

    def newest_first(self, where: dict[str, Any]) -> Iterator[str]:
        """Ids of the Orders matching ``where`` (as last read), newest first."""
        tests = [(FIELDS.index(k), _test(v)) for k, v in where.items()]
        rows = self._rows
        for job_id in reversed(self._ids):
            row = rows[job_id]
            if all(test(row[i]) for i, test in tests):
                yield job_id

    def page(self, where: dict[str, Any], offset: int, limit: int) -> list[str]:
        """Ids of one page of Orders matching ``where``, newest first (refreshed first)."""
        self.refresh()
        with self._lock:
            if not where:
                end = len(self._ids) - offset
                return list(reversed(self._ids[max(0, end - limit):max(0, end)]))
            found: list[str] = []
            for i, job_id in enumerate(self.newest_first(where)):
                if i >= offset:
                    found.append(job_id)
                    if len(found) >= limit:
                        break
            return found

    def state_counts(self) -> Counter[str]:
        """How many Orders are in each state (refreshed first): ``mlqueue status`` at 100,000 Orders
        without asking the store to group them all (0.9 s at 30,000 on the embedded store)."""
        self.refresh()
        at = FIELDS.index("state")
        with self._lock:
            return Counter(row[at] for row in self._rows.values())

    def __len__(self) -> int:
        return len(self._ids)


def _row(doc: dict[str, Any]) -> tuple[Any, ...]:
    """An Order's listing fields as the index keeps them (``FIELDS`` order, names shared)."""
    return tuple(_shared(doc.get(f)) for f in FIELDS)


def _newer(newest: datetime | None, doc: dict[str, Any]) -> datetime | None:
    """The later of ``newest`` and this Order's ``updatedDate`` (where the next read of changes starts)."""
    stamp = doc.get("updatedDate")
    return stamp if stamp and (newest is None or stamp > newest) else newest


def _shared(value: Any) -> Any:
    """One copy of each state, project, script, sweep and worker name, however many Orders repeat it."""
    return sys.intern(value) if isinstance(value, str) else value


def _test(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$in"}:
        allowed = set(value["$in"])
        return lambda v: v in allowed
    return lambda v: v == value


def can_answer(where: dict[str, Any]) -> bool:
    """Whether ``where`` only filters on listing fields, by value or ``$in``."""
    return all(k in FIELDS and (not isinstance(v, dict) or set(v) == {"$in"}) for k, v in where.items())


def matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether a fetched document still matches ``where`` (see the module docstring)."""
    return all(_test(v)(doc.get(k)) for k, v in where.items())


_indexes: dict[tuple[str | None, str], OrderIndex] = {}
_indexes_lock = threading.Lock()


def index_for(settings: Settings) -> OrderIndex:
    """The index of this store and database, shared by every request of this process."""
    key = (settings.mongo_url, settings.mongo_db)
    with _indexes_lock:
        if key not in _indexes:
            _indexes[key] = OrderIndex(settings)
        return _indexes[key]


def ready_index(settings: Settings) -> OrderIndex | None:
    """The index if it has been read whole; else None, and it starts loading in the background."""
    index = index_for(settings)
    if not index.ready:
        index.start_loading()
        return None
    return index


def state_counts(settings: Settings) -> Counter[str] | None:
    """Orders per state from this process's index if it is read whole (the HQ's), else None: a
    one-shot command asks the store rather than read every Order to build an index."""
    index = _indexes.get((settings.mongo_url, settings.mongo_db))
    return index.state_counts() if index is not None and index.ready else None


def page_ids(settings: Settings | None, where: dict[str, Any], offset: int, limit: int) -> list[str] | None:
    """One page's ids from the index; None when the store must answer (a filter the index cannot judge,
    or the index is still being read, right after the HQ starts)."""
    if not can_answer(where):
        return None
    index = ready_index(settings or get_settings())
    return None if index is None else index.page(where, offset, limit)

