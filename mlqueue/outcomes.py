"""Reading results: Outcomes joined with their Jobs and Orders, best first.

Every query a person or script makes about results goes through here (CLI, API, dashboard), so
"best first" and the row shape mean the same thing everywhere.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from mlqueue import order_index, orders, ranking, store, worker_control
from mlqueue.settings import Settings, get_settings
from mlqueue.store import jobs as job_store
from mlqueue.store import workers as worker_store

BOOKKEEPING = {"_id", "createdDate"}


def results(
    settings: Settings | None = None, sort: str = "loss", descending: bool = False,
    state: str | None = None, limit: int | None = None, query: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per Job: ``jobId``, ``state``, ``outcome`` (or None) and ``job`` (its own fields).

    Rows with the objective come first, best first; the rest follow, newest first.
    """
    d = store.db(settings)
    order_query: dict[str, Any] = dict(query or {})
    if state:
        order_query["state"] = state
    order_docs = list(d.orders.find(order_query, {"metrics": 0, "history": 0, "log": 0}))
    job_ids = [o["jobId"] for o in order_docs]
    jobs = job_store.by_ids(job_ids, settings)
    outs = {o["jobId"]: o for o in d.outcomes.find({"jobId": {"$in": job_ids}}, {"_id": 0})}
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
    d = store.db(settings)
    counts = Counter({row["_id"]: row["n"] for row in d.orders.aggregate(
        [{"$group": {"_id": "$state", "n": {"$sum": 1}}}])})
    return {s: counts.get(s, 0) for s in orders.STATES}


def workers(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Registered workers, with what each runs now, jobs done and busy share — derived from Orders/Outcomes."""
    settings = settings or get_settings()
    d = store.db(settings)
    now = orders.now()
    silent_after = 3 * settings.heartbeat_every  # a worker killed without a goodbye stops beating
    running = {o["worker"]: o["jobId"] for o in d.orders.find(
        {"state": {"$in": list(orders.HELD)}}, {"worker": 1, "jobId": 1})}
    done = {row["_id"]: row for row in d.outcomes.aggregate(
        [{"$group": {"_id": "$worker", "n": {"$sum": 1}, "busy": {"$sum": "$durationSeconds"}}}])}
    out = []
    for w in worker_store.listing(settings):
        beat, started = w.get("lastHeartbeat"), w.get("firstSeen") or w.get("startedDate")
        stats = done.get(w["name"], {})
        w["heartbeatAgeSeconds"] = round((now - beat).total_seconds(), 1) if beat else None
        w["online"] = bool(w.get("online")) and beat is not None and (now - beat).total_seconds() < silent_after
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

NUMBER = {"$gte": float("-inf")}  # matches every number (Mongo compares within a type), and uses the index


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
    d = store.db(settings)
    match = dict(match or {})
    if ranking.can_answer(match):
        ids = ranking.page_ids(settings, sort, match, job_ids, descending, offset, limit)
        found = {o["jobId"]: o for o in store.find_in(d.outcomes, "jobId", ids, {"_id": 0})}
        if len(found) < len(ids):
            ranking.forget(settings, [i for i in ids if i not in found])
        docs = [found[i] for i in ids if i in found]
    else:
        docs = _page_from_store(d, sort, descending, {**match, **({"jobId": {"$in": job_ids}} if job_ids is not None
                                                                   else {})}, offset, limit)
    return _join_jobs([{"jobId": o["jobId"], "state": o.get("state"), "outcome": o} for o in docs], settings)


def _page_from_store(d: Any, sort: str, descending: bool, where: dict[str, Any], offset: int,
                     limit: int) -> list[dict[str, Any]]:
    """The same page, sorted, skipped and limited by the store (on the indexed sort fields)."""
    scored = _and(where, {sort: NUMBER})
    rows = list(d.outcomes.find(scored, {"_id": 0}).sort(sort, -1 if descending else 1).skip(offset).limit(limit))
    if len(rows) < limit:
        n_scored = offset + len(rows) if rows or not offset else d.outcomes.count_documents(scored)
        rest = d.outcomes.find(_and(where, {sort: {"$not": NUMBER}}), {"_id": 0}).sort("jobId", -1)
        rows += list(rest.skip(max(0, offset - n_scored)).limit(limit - len(rows)))
    return rows


def order_page(settings: Settings | None = None, where: dict[str, Any] | None = None, offset: int = 0,
               limit: int = 50) -> list[dict[str, Any]]:
    """One page of Orders (without history and metrics) with their Jobs, newest first."""
    d = store.db(settings)
    projection = {"metrics": 0, "history": 0, "log": 0, "_id": 0}
    ids = order_index.page_ids(settings, where or {}, offset, limit)
    if ids is not None:  # the page from the in-memory index, each Order fetched by id (see order_index)
        found = {o["jobId"]: o for o in store.find_in(d.orders, "jobId", ids, projection)}
        docs = [found[i] for i in ids if i in found and order_index.matches(found[i], where or {})]
        return _join_jobs(docs, settings)
    docs = d.orders.find(where or {}, projection).sort("jobId", -1)
    return _join_jobs(list(docs.skip(offset).limit(limit)), settings)


def job_page(settings: Settings | None, where: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
    """One page of Jobs as submitted, newest first (through the Orders' index: each Order copies the
    Job's ``projectName``, ``scriptName`` and ``sweepId``)."""
    jobs = store.db(settings).jobs
    ids = order_index.page_ids(settings, where, offset, limit)
    if ids is None:
        return list(jobs.find(where).sort("_id", -1).skip(offset).limit(limit))
    wanted = [ObjectId(i) for i in ids if ObjectId.is_valid(i)]
    found = {str(j["_id"]): j for j in store.find_in(jobs, "_id", wanted)}
    return [found[i] for i in ids if i in found and order_index.matches(found[i], where)]


def job_ids(settings: Settings | None, where: dict[str, Any]) -> list[str]:
    """The ids of the Jobs whose Orders match ``where`` (to filter Outcomes by project, script, sweep)."""
    return [o["jobId"] for o in store.db(settings).orders.find(where, {"jobId": 1, "_id": 0})]


def _and(where: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    clash = set(where) & set(extra)
    return {"$and": [where, extra]} if clash else {**where, **extra}


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
    d = store.db(settings)
    if changed_since is None:
        return _rows_for(d, list(d.orders.find({}, TABLE_PROJECTION)), {str(j["_id"]): j for j in d.jobs.find({})})
    since = {"$gte": changed_since}
    jobs = {str(j["_id"]): j for j in d.jobs.find({"createdDate": since})}
    held = {o["jobId"]: o for o in d.orders.find({"state": {"$in": list(orders.HELD)}}, TABLE_PROJECTION)}
    ended = {o["jobId"] for o in d.outcomes.find({"finishedDate": since}, {"jobId": 1})}
    wanted = (set(jobs) | ended) - set(held)
    found = list(held.values()) + (list(d.orders.find({"jobId": {"$in": sorted(wanted)}}, TABLE_PROJECTION))
                                   if wanted else [])
    return _rows_for(d, found, jobs)


def _rows_for(d: Any, order_docs: list[dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows for these Orders, reading the Jobs not given (by id, one query)."""
    missing = [ObjectId(o["jobId"]) for o in order_docs if o["jobId"] not in jobs and ObjectId.is_valid(o["jobId"])]
    if missing:
        jobs = {**jobs, **{str(j["_id"]): j for j in d.jobs.find({"_id": {"$in": missing}})}}
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
    outcome = store.db(settings).outcomes.find_one({"jobId": order["jobId"]}, {"_id": 0}) or order.get("outcome")
    fields = {k: v for k, v in (job or {}).items() if k not in BOOKKEEPING}
    return {"jobId": order["jobId"], "job": fields, "order": order, "outcome": outcome}


NEWEST_WINDOWS = (60.0, 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0, 365 * 86400.0, None)


def newest_rows(settings: Settings | None = None, n: int = 50) -> list[dict[str, Any]]:
    """The newest ``n`` rows of the jobs table, reading only as far back as needed to find them.

    For a caller that cannot wait for a full read: the Jobs of the last minute, hour, day... are each one
    narrow range of the ``jobs.createdDate`` index, widened until it holds ``n`` Jobs.
    """
    d = store.db(settings)
    now = orders.now()
    found: list[dict[str, Any]] = []
    for seconds in NEWEST_WINDOWS:
        query = {"createdDate": {"$gte": now - timedelta(seconds=seconds)}} if seconds else {}
        found = list(d.jobs.find(query))
        if len(found) >= n:
            break
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda j: (j.get("createdDate") or epoch, j["_id"]), reverse=True)
    jobs = {str(j["_id"]): j for j in found[:n]}
    order_docs = list(d.orders.find({"jobId": {"$in": list(jobs)}}, TABLE_PROJECTION)) if jobs else []
    order_docs.sort(key=lambda o: (o.get("createdDate") or epoch, o["jobId"]), reverse=True)
    return _rows_for(d, order_docs, jobs)
