"""Reading results: Outcomes joined with their Jobs and Orders, best first.

Every query a person or script makes about results goes through here (CLI, API, dashboard), so
"best first" and the row shape mean the same thing everywhere.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from mlqueue import order_index, orders, ranking, worker_control
from mlqueue.settings import Settings, get_settings
from mlqueue.store import jobs as job_store
from mlqueue.store import orders as order_store
from mlqueue.store import outcomes as outcome_store
from mlqueue.store import workers as worker_store

BOOKKEEPING = {"_id", "createdDate"}


def results(
    settings: Settings | None = None, sort: str = "loss", descending: bool = False,
    state: str | None = None, limit: int | None = None, query: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per Job: ``jobId``, ``state``, ``outcome`` (or None) and ``job`` (its own fields).

    Rows with the objective come first, best first; the rest follow, newest first.
    """
    order_query: dict[str, Any] = dict(query or {})
    if state:
        order_query["state"] = state
    order_docs = order_store.matching(order_query, settings, order_store.WITHOUT_BULK)
    job_ids = [o["jobId"] for o in order_docs]
    jobs = job_store.by_ids(job_ids, settings)
    outs = outcome_store.for_jobs(job_ids, settings)
    rows = []
    for order in order_docs:
        job = jobs.get(order["jobId"], {})
        rows.append({
            "jobId": order["jobId"],
            "state": order["state"],
            "outcome": outs.get(order["jobId"]) or order.get("outcome"),
            "job": {k: v for k, v in job.items() if k not in BOOKKEEPING},
            "createdDate": order.get("createdDate"),
            "worker": order.get("worker"),
            "attempts": order.get("attempts", 0),
        })
    ordered = ranking.rank_rows(rows, sort, descending)
    return ordered[:limit] if limit else ordered


def state_counts(settings: Settings | None = None) -> dict[str, int]:
    """How many Orders are in each state (all states listed, zeros included)."""
    counts = order_index.state_counts(settings or get_settings()) or Counter(
        order_store.count_by("state", settings=settings))
    return {s: counts.get(s, 0) for s in orders.STATES}


class WorkerTotals:
    """Per worker: Outcomes written (``n``) and their seconds (``busy``), kept current by reading only the
    Outcomes written since the last look (an ``_id`` range; an Outcome is written once).

    Why: the status, the API's workers and the dashboard's machines page ask for these on every view;
    grouping every Outcome took 2.6 s at 30,000 Jobs on the embedded store. One process (the HQ) groups
    them once, then reads what is new; it groups them again every ``REGROUP_EVERY`` seconds, which
    also counts an Outcome whose ``_id`` was taken before, but committed after, the last one seen.
    """

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, Any]] = {}
        self.last_id: Any = None
        self.grouped_at = 0.0
        self.lock = threading.Lock()

    def refresh(self, settings: Settings) -> dict[str, dict[str, Any]]:
        with self.lock:
            if self.last_id is None or time.monotonic() - self.grouped_at > REGROUP_EVERY:
                self.totals = outcome_store.done_by_worker(settings)
                self.last_id = max((t["last"] for t in self.totals.values() if t.get("last") is not None),
                                   default=None)
                self.grouped_at = time.monotonic()
                return self.totals
            for o in outcome_store.written_after(self.last_id, settings,
                                                 {"_id": 1, "worker": 1, "durationSeconds": 1}):
                total = self.totals.setdefault(o.get("worker"), {"_id": o.get("worker"), "n": 0, "busy": 0.0})
                total["n"] += 1
                total["busy"] = (total["busy"] or 0.0) + (o.get("durationSeconds") or 0.0)
                self.last_id = max(self.last_id, o["_id"])
            return self.totals


REGROUP_EVERY = 600.0
_totals: dict[str, WorkerTotals] = {}


def workers(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Registered workers, with what each runs now, jobs done and busy share — derived from Orders/Outcomes."""
    settings = settings or get_settings()
    now = orders.now()
    running = {o["worker"]: o["jobId"] for o in order_store.in_states(orders.HELD, settings, {"worker": 1, "jobId": 1})}
    done = _totals.setdefault(f"{settings.mongo_url}/{settings.mongo_db}", WorkerTotals()).refresh(settings)
    out = []
    for w in worker_store.listing(settings):
        beat, started = w.get("lastHeartbeat"), w.get("firstSeen") or w.get("startedDate")
        stats = done.get(w["name"], {})
        w["heartbeatAgeSeconds"] = round((now - beat).total_seconds(), 1) if beat else None
        w["online"] = worker_store.is_online(w, settings, now)
        w["currentJob"] = running.get(w["name"])
        w["jobsDone"] = stats.get("n", 0)
        w["busySeconds"] = round(stats.get("busy") or 0.0, 1)
        alive_for = (now - started).total_seconds() if started else 0
        w["busyShare"] = round(min(1.0, w["busySeconds"] / alive_for), 3) if alive_for > 0 else 0.0
        w["state"] = worker_control.state_of(w)
        out.append(w)
    from mlqueue import house

    return house.annotate(out, settings)  # queues, refusals, measured speed


# --------------------------------------------------------------------------- pages (API, dashboard)

def page(
    settings: Settings | None = None, sort: str = "loss", descending: bool = False,
    match: dict[str, Any] | None = None, job_ids: list[str] | None = None, offset: int = 0, limit: int = 50,
) -> list[dict[str, Any]]:
    """One page of finished Jobs' rows (shaped as ``results`` rows), ranked as ``results`` ranks them.

    Rows whose ``sort`` field is a number come first, in order; the rest follow, newest first. ``match``
    is equality on Outcome fields (state, status, reason, worker...), ``job_ids`` limits to those Jobs.
    Unlike ``results`` it never loads more than the page: the order comes from ``ranking`` (kept in
    memory, because the store sorts whole collections) or, for other filters, from the store itself.
    """
    settings = settings or get_settings()
    match = dict(match or {})
    if ranking.can_answer(match):
        ids = ranking.page_ids(settings, sort, match, job_ids, descending, offset, limit)
        found = outcome_store.for_jobs(ids, settings)
        if len(found) < len(ids):
            ranking.forget(settings, [i for i in ids if i not in found])
        docs = [found[i] for i in ids if i in found]
    else:
        where = {**match, **({"jobId": {"$in": job_ids}} if job_ids is not None else {})}
        docs = outcome_store.page_sorted_by(sort, descending, where, offset, limit, settings)
    return _join_jobs([{"jobId": o["jobId"], "state": o.get("state"), "outcome": o} for o in docs], settings)


def order_page(settings: Settings | None = None, where: dict[str, Any] | None = None, offset: int = 0,
               limit: int = 50) -> list[dict[str, Any]]:
    """One page of Orders (without history and metrics) with their Jobs, newest first."""
    projection = {**order_store.WITHOUT_BULK, "_id": 0}
    ids = order_index.page_ids(settings, where or {}, offset, limit)
    if ids is not None:  # the page from the in-memory index, each Order fetched by id (see order_index)
        found = {o["jobId"]: o for o in order_store.by_job_ids(ids, settings, projection)}
        docs = [found[i] for i in ids if i in found and order_index.matches(found[i], where or {})]
        return _join_jobs(docs, settings)
    return _join_jobs(order_store.newest_first(where or {}, offset, limit, settings, projection), settings)


def job_page(settings: Settings | None, where: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
    """One page of Jobs as submitted, newest first (through the Orders' index: each Order copies the
    Job's ``projectName``, ``scriptName`` and ``sweepId``)."""
    ids = order_index.page_ids(settings, where, offset, limit)
    if ids is None:
        return job_store.newest_first(where, offset, limit, settings)
    found = job_store.by_ids(ids, settings)
    return [found[i] for i in ids if i in found and order_index.matches(found[i], where)]


def job_ids(settings: Settings | None, where: dict[str, Any]) -> list[str]:
    """The ids of the Jobs whose Orders match ``where`` (to filter Outcomes by project, script, sweep)."""
    return order_store.job_ids_matching(where, settings)


def _join_jobs(rows: list[dict[str, Any]], settings: Settings | None) -> list[dict[str, Any]]:
    """Attach each row's Job (its own fields) and creation date, in one query for the whole page."""
    found = job_store.by_ids([r["jobId"] for r in rows], settings)
    for row in rows:
        job = found.get(row["jobId"], {})
        row["job"] = {k: v for k, v in job.items() if k not in BOOKKEEPING}
        row.setdefault("createdDate", job.get("createdDate"))
    return rows


# --------------------------------------------------------------------------- the jobs table (dashboard)

# Order fields the jobs table never shows: big arrays stay on the server; one element of the
# predictions is enough to know a Job has them.
TABLE_PROJECTION: dict[str, Any] = {
    "metrics": 0, "history": 0, "log": 0, "outcome.history": 0, "outcome.error.traceback": 0,
    "outcome.predictions.actual": {"$slice": 1}, "outcome.predictions.predicted": 0,
}
# Job fields that have their own table column (or none) rather than a ``job.*`` hyperparameter column.
TABLE_JOB_FIELDS = {"_id", "createdDate", "scriptName", "projectName", "sweepId", "trialNumber"}


def _cell_value(value: Any) -> Any:
    """Scalars as they are; lists and dicts as compact JSON, so every cell sorts and filters as one value."""
    if value is None or isinstance(value, bool | int | float | str | datetime):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


def table_row(order: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any]:
    """One flat row of the jobs table: Order columns, ``outcome.*`` scalars and ``job.*`` hyperparameters."""
    job = job or {}
    outcome = order.get("outcome") or {}
    latest = order.get("latestMetrics") or {}
    started, finished = order.get("startedDate"), order.get("finishedDate")
    duration = outcome.get("durationSeconds")
    if duration is None and started and finished:
        duration = round((finished - started).total_seconds(), 3)
    row: dict[str, Any] = {
        "jobId": order["jobId"], "state": order.get("state"), "scriptName": order.get("scriptName"),
        "projectName": order.get("projectName"), "sweepId": order.get("sweepId"),
        "trialNumber": job.get("trialNumber"), "worker": order.get("worker"), "attempts": order.get("attempts", 0),
        "createdDate": order.get("createdDate"), "startedDate": started, "finishedDate": finished,
        "updatedDate": order.get("updatedDate"), "durationSeconds": duration, "epoch": latest.get("epoch"),
        "hasPredictions": bool((outcome.get("predictions") or {}).get("actual")),
    }
    for key, value in outcome.items():
        if isinstance(value, bool | int | float | str) and key not in ("jobId", "orderId", "state"):
            row[f"outcome.{key}"] = value
    for key, value in job.items():
        if key not in TABLE_JOB_FIELDS:
            row[f"job.{key}"] = _cell_value(value)
    return row


def table_rows(settings: Settings | None = None, changed_since: datetime | None = None) -> list[dict[str, Any]]:
    """Rows of the jobs table for every Job, or only for the Jobs that may have changed since a time.

    The full read is one pass over ``orders`` and one over ``jobs``. ``changed_since`` reads only narrow
    ranges of existing indexes, so a caller keeping its own copy of the table stays current cheaply:
    Jobs created since (``jobs.createdDate``), Orders held by a worker now (``orders.state``: their
    progress moves) and Outcomes written since (``outcomes.finishedDate``). An Order sent back to the
    queue (its worker was lost) shows as held until it is picked up again.
    """
    if changed_since is None:
        return _rows_for(settings, list(order_store.every(settings, TABLE_PROJECTION)), job_store.every(settings))
    jobs = {str(j["_id"]): j for j in job_store.created_since(changed_since, settings)}
    held = {o["jobId"]: o for o in order_store.in_states(orders.HELD, settings, TABLE_PROJECTION)}
    ended = outcome_store.job_ids_finished_since(changed_since, settings)
    wanted = (set(jobs) | ended) - set(held)
    found = list(held.values()) + (order_store.by_job_ids(sorted(wanted), settings, TABLE_PROJECTION)
                                   if wanted else [])
    return _rows_for(settings, found, jobs)


def table_row_windows(settings: Settings | None = None,
                      also: Callable[[list[dict[str, Any]]], None] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Rows of the jobs table for every Job, in windows: the Orders most recently moved first (so the newest
    Jobs come in the first windows), each window's Jobs read by id; the store answers other requests
    between two windows (``order_store.in_windows``). ``also`` is given each window of Orders as read
    (the Orders index shares this read). An Order moved during the read may be missing: a caller keeping
    the table re-reads what changed since the read began (``table_rows(changed_since=...)``)."""
    for order_docs in order_store.in_windows(settings, TABLE_PROJECTION):
        if also is not None:
            also(order_docs)
        yield _rows_for(settings, order_docs, {})


def _rows_for(settings: Settings | None, order_docs: list[dict[str, Any]],
              jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows for these Orders, reading the Jobs not given (by id)."""
    missing = [o["jobId"] for o in order_docs if o["jobId"] not in jobs]
    if missing:
        jobs = {**jobs, **job_store.by_ids(missing, settings)}
    return [table_row(order, jobs.get(order["jobId"])) for order in order_docs]


def order_with_job(job_id: str, settings: Settings | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """An Order (with ``waiting``: why it is not running) and its Job's fields without ``_id``, or None.

    The one way to put a Job beside its Order (``job_detail`` for the dashboard, ``service.show``).
    Raises ``orders.OrderError`` (a ``NotFound``) for an unknown id; a unique id prefix is enough.
    """
    from mlqueue import house

    order = house.with_reason(orders.get(job_id, settings), settings)
    return order, job_store.get(order["jobId"], settings, {"_id": 0})


def job_detail(job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Everything known about one Job: its fields, its Order (history, metrics, log) and its stored Outcome."""
    order, job = order_with_job(job_id, settings)
    outcome = outcome_store.of_job(order["jobId"], settings) or order.get("outcome")
    fields = {k: v for k, v in (job or {}).items() if k not in BOOKKEEPING}
    return {"jobId": order["jobId"], "job": fields, "order": order, "outcome": outcome}


def newest_rows(settings: Settings | None = None, n: int = 50) -> list[dict[str, Any]]:
    """The newest ``n`` rows of the jobs table, reading only as far back as needed to find them.

    For a caller that cannot wait for a full read: the Jobs newest first, in windows of the
    ``jobs.createdDate`` index (``job_store.in_windows``) until they hold ``n``. (Fixed steps of a minute,
    an hour, a day read a whole day of Jobs in one go when the house had been quiet for an hour.)
    """
    found: list[dict[str, Any]] = []
    for window in job_store.in_windows(settings, size=n):
        found += window
        if len(found) >= n:
            break
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda j: (j.get("createdDate") or epoch, j["_id"]), reverse=True)
    jobs = {str(j["_id"]): j for j in found[:n]}
    order_docs = order_store.by_job_ids(list(jobs), settings, TABLE_PROJECTION) if jobs else []
    order_docs.sort(key=lambda o: (o.get("createdDate") or epoch, o["jobId"]), reverse=True)
    return _rows_for(settings, order_docs, jobs)
