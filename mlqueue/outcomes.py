"""Reading results: Outcomes joined with their Jobs and Orders, best first.

Every query a person or script makes about results goes through here (CLI, API, dashboard), so
"best first" and the row shape mean the same thing everywhere.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from mlqueue import orders, store
from mlqueue.settings import Settings

BOOKKEEPING = {"_id", "createdDate"}


def _objective(row: dict[str, Any], key: str) -> float | None:
    outcome = row.get("outcome") or {}
    value = outcome.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


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
    jobs = {str(j["_id"]): j for j in d.jobs.find({"_id": {"$in": [ObjectId(i) for i in job_ids]}})}
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
    scored = [r for r in rows if _objective(r, sort) is not None]
    unscored = [r for r in rows if _objective(r, sort) is None]
    scored.sort(key=lambda r: _objective(r, sort), reverse=descending)
    epoch = datetime.min.replace(tzinfo=UTC)
    unscored.sort(key=lambda r: r.get("createdDate") or epoch, reverse=True)
    ordered = scored + unscored
    return ordered[:limit] if limit else ordered


def state_counts(settings: Settings | None = None) -> dict[str, int]:
    """How many Orders are in each state (all states listed, zeros included)."""
    d = store.db(settings)
    counts = Counter({row["_id"]: row["n"] for row in d.orders.aggregate(
        [{"$group": {"_id": "$state", "n": {"$sum": 1}}}])})
    return {s: counts.get(s, 0) for s in orders.STATES}


def workers(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Registered workers, with what each runs now, jobs done and busy share — derived from Orders/Outcomes."""
    d = store.db(settings)
    now = orders.now()
    running = {o["worker"]: o["jobId"] for o in d.orders.find(
        {"state": {"$in": list(orders.HELD)}}, {"worker": 1, "jobId": 1})}
    done = {row["_id"]: row for row in d.outcomes.aggregate(
        [{"$group": {"_id": "$worker", "n": {"$sum": 1}, "busy": {"$sum": "$durationSeconds"}}}])}
    out = []
    for w in d.workers.find({}, {"_id": 0}).sort("name", 1):
        beat, started = w.get("lastHeartbeat"), w.get("firstSeen") or w.get("startedDate")
        stats = done.get(w["name"], {})
        w["heartbeatAgeSeconds"] = round((now - beat).total_seconds(), 1) if beat else None
        w["currentJob"] = running.get(w["name"])
        w["jobsDone"] = stats.get("n", 0)
        w["busySeconds"] = round(stats.get("busy") or 0.0, 1)
        alive_for = (now - started).total_seconds() if started else 0
        w["busyShare"] = round(min(1.0, w["busySeconds"] / alive_for), 3) if alive_for > 0 else 0.0
        out.append(w)
    return out
