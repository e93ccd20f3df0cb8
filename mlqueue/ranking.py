"""Outcomes in rank order, kept in the HQ's memory, so a page of results costs a page, not a collection.

Why: the embedded store (SecantusDB) answers ``find().sort().skip().limit()`` by reading and sorting
every matching document, index or not (measured: seconds per page at 100,000 Outcomes; see
bench/api_latency.py). Point lookups and ``_id`` range scans, on the other hand, are cheap. So for each
field someone sorts by, this module keeps ``(value, jobId)`` of every Outcome in order, plus the few
fields pages are filtered on, and a page becomes: slice the list, then fetch those Outcomes by ``jobId``.

It stays exact because Outcomes are append-only (one per Job, written once with ``$setOnInsert``): each
use first reads the Outcomes whose ``_id`` is past the newest one seen (an index range: see
``store.ensure_indexes``). Writes can commit out of ``_id`` order, so until the newest ``_id`` seen is
``LATE_SECONDS`` old, every ``RESWEEP_SECONDS`` the last ``LATE_SECONDS`` of ``_id``s are read again.
A list is built on first use of a field (one pass over the collection); the least recently used of more
than ``MAX_LISTS`` are dropped.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from mlqueue.settings import Settings
from mlqueue.store import outcomes as outcome_store
from mlqueue.values import is_number

log = logging.getLogger(__name__)
FILTERABLE = ("state", "status", "reason", "worker")
RESWEEP_SECONDS = 15.0
LATE_SECONDS = 30.0
MAX_LISTS = 8


def numeric(value: Any) -> float | None:
    """The sort value Mongo would rank as a number (bool, NaN and non-numbers are unranked)."""
    if not is_number(value):
        return None
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def rank_rows(rows: list[dict[str, Any]], sort: str, descending: bool) -> list[dict[str, Any]]:
    """"Best first", the one definition every reader uses (``outcomes.results``, the HTTP client).

    Rows whose ``outcome[sort]`` is a number come first, in order, ties by ``jobId``; the rest follow
    newest first (by ``jobId``, which grows with submission): the order ``Ranking`` pages in too.
    """
    def value(row: dict[str, Any]) -> float | None:
        return numeric((row.get("outcome") or {}).get(sort))

    scored = sorted(((v, row["jobId"], row) for row in rows if (v := value(row)) is not None),
                    key=lambda item: item[:2], reverse=descending)
    rest = sorted((row for row in rows if value(row) is None), key=lambda row: row["jobId"], reverse=True)
    return [row for _, _, row in scored] + rest


def _get(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)  # type: ignore[assignment]
    return doc


class Ranking:
    """Every Outcome of one database, ranked by one field."""

    def __init__(self, settings: Settings, field: str) -> None:
        self.settings = settings
        self.field = field
        self.lock = threading.Lock()
        self.scored: list[tuple[float, str]] = []  # (value, jobId), ascending
        self.unscored: list[str] = []  # jobIds, ascending (newest last)
        self.attrs: dict[str, tuple[Any, ...]] = {}  # jobId -> FILTERABLE values
        self.scored_with: Counter[tuple[int, Any]] = Counter()  # (FILTERABLE index, value) -> scored Outcomes
        self.newest: ObjectId | None = None
        self.settled: ObjectId | None = None  # newest _id known to have no late writes before it
        self.swept_at = 0.0
        self.used_at = time.monotonic()

    def _projection(self) -> dict[str, int]:
        return {"_id": 1, "jobId": 1, self.field: 1, **dict.fromkeys(FILTERABLE, 1)}

    def _add(self, docs: Iterable[dict[str, Any]]) -> None:
        scored: list[tuple[float, str]] = []
        unscored: list[str] = []
        for doc in docs:
            oid, job_id = doc.get("_id"), doc.get("jobId")
            if isinstance(oid, ObjectId) and (self.newest is None or oid > self.newest):
                self.newest = oid
            if not isinstance(job_id, str) or job_id in self.attrs:
                continue
            self.attrs[job_id] = tuple(doc.get(k) for k in FILTERABLE)
            value = numeric(_get(doc, self.field))
            if value is None:
                unscored.append(job_id)
            else:
                scored.append((value, job_id))
                self.scored_with.update(_hashable(enumerate(self.attrs[job_id])))
        for target, new in ((self.scored, scored), (self.unscored, unscored)):
            if len(new) > 32:  # many at once (the first build): one sort beats many inserts
                target.extend(new)
                target.sort()
            else:
                for item in new:
                    bisect.insort(target, item)  # type: ignore[type-var]

    def refresh(self) -> None:
        """Catch up with Outcomes written since the last look (building the list on first use)."""
        if not self.built:
            build([self], self.settings)
            return
        since = self.newest or None
        if self.newest is not None and self.newest != self.settled \
                and time.monotonic() - self.swept_at > RESWEEP_SECONDS:
            newest = self.newest
            since = ObjectId.from_datetime(newest.generation_time - timedelta(seconds=LATE_SECONDS))
            self.swept_at = time.monotonic()
            if datetime.now(UTC) - newest.generation_time > timedelta(seconds=LATE_SECONDS):
                self.settled = newest  # anything written before it has committed by now: this sweep saw it
        self._add(outcome_store.written_after(since, self.settings, self._projection()))

    @property
    def built(self) -> bool:
        """Whether the list has been read whole once (else the next ``refresh`` builds it)."""
        return self.newest is not None or bool(self.attrs)

    def clear(self) -> None:
        """Back to unbuilt (a build that failed half way must not pass for a whole list)."""
        self.scored, self.unscored, self.attrs = [], [], {}
        self.scored_with = Counter()
        self.newest = self.settled = None

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop Outcomes that are gone from the store (a database emptied by hand)."""
        for job_id in job_ids:
            attrs = self.attrs.pop(job_id, None)
            if attrs is None:
                continue
            if job_id not in self.unscored:
                self.scored_with.subtract(_hashable(enumerate(attrs)))
            self.unscored = [j for j in self.unscored if j != job_id]
            self.scored = [e for e in self.scored if e[1] != job_id]

    def _ordered(self, descending: bool, skip_scored: bool = False) -> Iterator[str]:
        if not skip_scored:
            ranked = reversed(self.scored) if descending else iter(self.scored)
            yield from (job_id for _, job_id in ranked)
        yield from reversed(self.unscored)

    def slice(self, match: dict[str, Any], job_ids: set[str] | None, descending: bool, offset: int,
              limit: int) -> list[str]:
        """The jobIds of one page, best first, of the Outcomes equal to ``match`` on FILTERABLE fields."""
        wanted = [(FILTERABLE.index(k), v) for k, v in match.items()]
        if not wanted and job_ids is None:  # no filter: straight to the page, by index arithmetic
            head = [j for _, j in _window(self.scored, offset, limit, descending)]
            if len(head) < limit:
                head += _window(self.unscored, max(0, offset - len(self.scored)), limit - len(head), True)
            return head
        page: list[str] = []
        skipped = 0
        # e.g. state=failed when ranking by loss: no scored Outcome can match, so only the unscored are walked
        none_scored = any(self.scored_with[item] <= 0 for item in _hashable(wanted))
        for job_id in self._ordered(descending, skip_scored=none_scored):
            if job_ids is not None and job_id not in job_ids:
                continue
            attrs = self.attrs[job_id]
            if any(attrs[i] != v for i, v in wanted):
                continue
            if skipped < offset:
                skipped += 1
                continue
            page.append(job_id)
            if len(page) >= limit:
                break
        return page


def _hashable(pairs: Iterable[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """(index, value) pairs usable as counter keys (a value that is not hashable counts as its text)."""
    out = []
    for i, v in pairs:
        try:
            hash(v)
        except TypeError:
            v = repr(v)
        out.append((i, v))
    return out


def _window(items: list[Any], offset: int, count: int, descending: bool) -> list[Any]:
    """``items[offset:offset+count]`` as if ``items`` were reversed when ``descending``, without copying it."""
    if not descending:
        return items[offset:offset + count]
    end = max(0, len(items) - offset)
    return items[max(0, end - count):end][::-1]


_lists: OrderedDict[tuple[str, str, str], Ranking] = OrderedDict()
_lists_lock = threading.Lock()


def can_answer(match: dict[str, Any]) -> bool:
    """Whether a filter is one the ranked lists hold (equality on FILTERABLE fields)."""
    return all(k in FILTERABLE and not isinstance(v, dict | list) for k, v in match.items())


def ranking(settings: Settings, field: str) -> Ranking:
    """The ranked list for this database and field, created on first use (at most MAX_LISTS kept)."""
    _, mongo_url = settings.require_urls()
    key = (mongo_url, settings.mongo_db, field)
    with _lists_lock:
        found = _lists.get(key)
        if found is None:
            found = _lists[key] = Ranking(settings, field)
            while len(_lists) > MAX_LISTS:
                _lists.popitem(last=False)
        _lists.move_to_end(key)
        found.used_at = time.monotonic()
        return found


def page_ids(settings: Settings, field: str, match: dict[str, Any], job_ids: list[str] | None, descending: bool,
             offset: int, limit: int) -> list[str]:
    """One page of jobIds, up to date with the store."""
    ranked = ranking(settings, field)
    with ranked.lock:
        ranked.refresh()
        return ranked.slice(match, set(job_ids) if job_ids is not None else None, descending, offset, limit)


def forget(settings: Settings, job_ids: Iterable[str]) -> None:
    """Tell every list of this database that these Outcomes are gone."""
    gone = list(job_ids)
    for (url, name, _), ranked in list(_lists.items()):
        if (url, name) == (settings.mongo_url, settings.mongo_db):
            with ranked.lock:
                ranked.forget(gone)


def build(lists: list[Ranking], settings: Settings) -> None:
    """Read every Outcome once for these lists (their locks held by the caller), in windows: the store
    answers other requests in between. An Outcome written meanwhile may be missing from the windows; the
    next refresh reads it (``_id`` past the newest) or its resweep does."""
    if not lists:
        return
    projection: dict[str, int] = {}
    for ranked in lists:
        projection.update(ranked._projection())
    try:
        for window in outcome_store.in_windows(settings, projection):
            for ranked in lists:
                ranked._add(window)
    except BaseException:
        for ranked in lists:
            ranked.clear()
        raise
    for ranked in lists:
        ranked.swept_at = time.monotonic()


def warm(settings: Settings, fields: Iterable[str] = ("loss", "metric")) -> None:
    """Build the usual lists ahead of the first request (the HQ runs this in a thread at start), from one
    read of the Outcomes for all of them."""
    fields = list(fields)
    held: list[Ranking] = []
    try:
        for field in fields:
            ranked = ranking(settings, field)
            ranked.lock.acquire()  # a request for it meanwhile waits for this build rather than start its own
            held.append(ranked)
        build([r for r in held if not r.built], settings)
    except Exception:  # noqa: BLE001 - only a head start: a request builds the list anyway
        log.warning("could not prepare the %s rankings", ", ".join(fields), exc_info=True)
    finally:
        for ranked in held:
            ranked.lock.release()
