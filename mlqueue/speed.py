"""How fast each machine runs each script, measured from past Outcomes; ETAs; placement by speed.

Figures per worker × script (medians of recent successful Outcomes, so one odd run does not move them):
``secondsPerJob``, ``secondsPerEpoch`` when the Outcome reports ``epochsRun``, and
``secondsPerEpochPer1kRows`` when it also reports ``rows`` (nn.py does). A Job's expected duration on
a machine uses the most specific figure its fields allow (its ``epochs``, the rows seen last time).

Placement (``better_elsewhere``): when a worker is about to start a Job, it asks whether another online
worker consuming the same queue would *finish* it sooner — counting what that worker still has to do
(its running Job and the Jobs already placed on it). If so the Job is passed to that worker's own queue
(``<queue>.w.<worker>``, the queue user pinning uses) instead of being started here: earliest-finish-time
list scheduling, decided at the moment a machine frees up, on Celery's per-worker queues. A Job is
passed at most once, and only with measured figures for both machines; anything unknown runs where it
landed, as plain first-free-worker scheduling would. Why not Celery priorities: a priority orders Jobs
within a queue but cannot say *which machine* takes one — with prefetch 1 the first free worker still
takes the most urgent Job, slow or not; the tail of a sweep on a slow laptop is exactly what we avoid.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

from mlqueue import store
from mlqueue.settings import Settings, get_settings

RECENT = 2000  # Outcomes looked at (newest first)
CACHE_SECONDS = 5.0
PASS_MARGIN = 0.9  # pass a Job on only if the other machine finishes it in under 90% of our time

_cache: dict[str, tuple[float, dict[str, dict[str, dict[str, Any]]]]] = {}


def figures(settings: Settings | None = None, fresh: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """``{worker: {script: {jobs, secondsPerJob, secondsPerEpoch?, secondsPerEpochPer1kRows?, rows?}}}``."""
    settings = settings or get_settings()
    key = f"{settings.mongo_url}/{settings.mongo_db}"
    cached = _cache.get(key)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    found = store.db(settings).outcomes.find(
        {"state": "succeeded", "durationSeconds": {"$gt": 0}},
        {"_id": 0, "worker": 1, "script.name": 1, "durationSeconds": 1, "epochsRun": 1, "rows": 1},
    ).sort("finishedDate", -1).limit(RECENT)
    for o in found:
        script = (o.get("script") or {}).get("name")
        if o.get("worker") and script:
            samples.setdefault((o["worker"], script), []).append(o)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (worker, script), rows in samples.items():
        out.setdefault(worker, {})[script] = _figure(rows)
    _cache[key] = (time.monotonic(), out)
    return out


def _figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    per_job = [r["durationSeconds"] for r in rows]
    fig: dict[str, Any] = {"jobs": len(rows), "secondsPerJob": round(statistics.median(per_job), 3)}
    epochs = [(r["durationSeconds"], r["epochsRun"]) for r in rows if _num(r.get("epochsRun"))]
    if epochs:
        fig["secondsPerEpoch"] = round(statistics.median(d / e for d, e in epochs), 4)
    sized = [(r["durationSeconds"], r["epochsRun"], r["rows"]) for r in rows
             if _num(r.get("epochsRun")) and _num(r.get("rows"))]
    if sized:
        fig["secondsPerEpochPer1kRows"] = round(statistics.median(d / e / (n / 1000) for d, e, n in sized), 4)
        fig["rows"] = sized[0][2]
    return fig


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def expected_seconds(fig: dict[str, Any] | None, job: dict[str, Any]) -> float | None:
    """How long ``job`` should take on a machine with figure ``fig`` (None: never measured there)."""
    if not fig:
        return None
    epochs = job.get("epochs")
    if _num(epochs) and fig.get("secondsPerEpoch"):
        return float(fig["secondsPerEpoch"]) * float(epochs)
    return float(fig["secondsPerJob"])


def eta_seconds(order: dict[str, Any], job: dict[str, Any], fig: dict[str, Any] | None,
                now: datetime) -> float | None:
    """Seconds left for a running Order: from its epochs reported so far, else from the machine's figure."""
    started = order.get("startedDate")
    if not isinstance(started, datetime):
        return None
    elapsed = (now - started).total_seconds()
    epochs, done = job.get("epochs"), (order.get("latestMetrics") or {}).get("epoch")
    if _num(epochs) and _num(done) and done <= epochs:
        return round(max(0.0, elapsed / done * (epochs - done)), 1)
    expected = expected_seconds(fig, job)
    return round(max(0.0, expected - elapsed), 1) if expected is not None else None
