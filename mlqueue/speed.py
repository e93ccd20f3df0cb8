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
landed, as plain first-free-worker scheduling would. A machine counts as faster only when it is *clearly*
so: its slower quartile of time per epoch (per Job without epochs) beats our faster quartile by the margin.
Medians alone mislead when the Jobs differ — a sweep's trials do, by design: two identical machines
whose medians differ because one drew the wide layers would pass every trial to the other and take
turns idling. Why not Celery priorities: a priority orders Jobs
within a queue but cannot say *which machine* takes one — with prefetch 1 the first free worker still
takes the most urgent Job, slow or not; the tail of a sweep on a slow laptop is exactly what we avoid.
"""

from __future__ import annotations

import statistics
import threading
import time
from datetime import UTC, datetime
from typing import Any

from mlqueue.settings import Settings, get_settings
from mlqueue.store import orders as order_store
from mlqueue.store import outcomes as outcome_store
from mlqueue.store import workers as worker_store
from mlqueue.values import is_number

RECENT = 2000  # Outcomes looked at (newest first)
CACHE_SECONDS = 5.0
RELOOK_EVERY = 600.0
PASS_MARGIN = 0.9  # pass a Job on only if the other machine finishes it in under 90% of our time
FIELDS = {"_id": 1, "jobId": 1, "worker": 1, "script.name": 1, "durationSeconds": 1, "epochsRun": 1, "rows": 1,
          "state": 1, "finishedDate": 1}

_cache: dict[str, tuple[float, dict[str, dict[str, dict[str, Any]]]]] = {}


class RecentSuccesses:
    """The ``RECENT`` newest successful Outcomes of one house, kept current by reading only what was
    written since the last look.

    Why: figures are asked for before every Job a worker starts (placement) and by every page showing
    ETAs. The embedded store answers "the newest 2,000, sorted" by reading and sorting every matching
    Outcome: 0.75 s at 10k stored Jobs, 4.7 s at 30k, on the worker's path between two Jobs
    (bench/history_growth.py). Here the first look reads newest-first windows of the ``finishedDate``
    index until ``RECENT`` are found, and each later look is one range of the ``_id`` index (Outcomes
    are written once, so an ``_id`` past the last one seen is a new Outcome). A whole look again every
    ``RELOOK_EVERY`` seconds also finds an Outcome whose ``_id`` was taken before, but committed after,
    the last one seen.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []   # newest finished first
        self.last_id: Any = None
        self.looked_at = 0.0
        self.lock = threading.Lock()  # the HQ's pages ask from several threads

    def refresh(self, settings: Settings) -> list[dict[str, Any]]:
        with self.lock:
            if self.last_id is None or time.monotonic() - self.looked_at > RELOOK_EVERY:
                self.rows, self.last_id, self.looked_at = [], None, time.monotonic()
                self._first_look(settings)
            else:
                self._add(list(outcome_store.written_after(self.last_id, settings, FIELDS)))
            return self.rows

    def _first_look(self, settings: Settings) -> None:
        found: list[dict[str, Any]] = []
        for window in outcome_store.in_windows(settings, FIELDS):
            found.extend(window)
            if sum(1 for o in found if _counts(o)) >= RECENT:
                break
        self._add(found)

    def _add(self, found: list[dict[str, Any]]) -> None:
        if not found:
            return
        newest_id = max(o["_id"] for o in found)
        self.last_id = newest_id if self.last_id is None else max(self.last_id, newest_id)
        known = {o["jobId"] for o in self.rows}
        fresh = [o for o in found if _counts(o) and o.get("jobId") not in known]
        rows = self.rows + fresh
        rows.sort(key=lambda o: o["finishedDate"], reverse=True)
        self.rows = rows[:RECENT]


def _counts(outcome: dict[str, Any]) -> bool:
    """What a speed figure learns from: a success that took measurable time, with a known finish."""
    duration = outcome.get("durationSeconds")
    return (outcome.get("state") == "succeeded" and is_number(duration) and duration > 0
            and outcome.get("finishedDate") is not None)


_recent: dict[str, RecentSuccesses] = {}


def figures(settings: Settings | None = None, fresh: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """``{worker: {script: {jobs, secondsPerJob, secondsPerEpoch?, secondsPerEpochPer1kRows?, rows?}}}``."""
    settings = settings or get_settings()
    key = f"{settings.mongo_url}/{settings.mongo_db}"
    cached = _cache.get(key)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in _recent.setdefault(key, RecentSuccesses()).refresh(settings):
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
    rates = [d / e for d, e in epochs] if epochs else per_job
    fig["rateLow"], fig["rateHigh"] = _quartiles(rates)
    sized = [(r["durationSeconds"], r["epochsRun"], r["rows"]) for r in rows
             if _num(r.get("epochsRun")) and _num(r.get("rows"))]
    if sized:
        fig["secondsPerEpochPer1kRows"] = round(statistics.median(d / e / (n / 1000) for d, e, n in sized), 4)
        fig["rows"] = sized[0][2]
    return fig


def _quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (the extremes below four samples): the spread of a machine's figures."""
    if len(values) < 4:
        return round(min(values), 4), round(max(values), 4)
    q1, _, q3 = statistics.quantiles(values, n=4)
    return round(q1, 4), round(q3, 4)


def clearly_faster(theirs: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Is a machine with figure ``theirs`` clearly faster than one with ``mine`` on the same script?

    Its slower quartile must beat our faster quartile by ``PASS_MARGIN``: different Jobs (a sweep's
    trials) spread each machine's figures, and a difference inside that spread says nothing about the
    machines. Figures from before the spread was kept compare by their rate alone.
    """
    high = theirs.get("rateHigh", _rate(theirs))
    low = mine.get("rateLow", _rate(mine))
    return high < PASS_MARGIN * low


def _num(value: Any) -> bool:
    return is_number(value) and value > 0


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


# --------------------------------------------------------------------------- placement by speed

_online: dict[str, tuple[float, list[dict[str, Any]]]] = {}


def _online_workers(settings: Settings) -> list[dict[str, Any]]:
    """Online workers with the queues they consume (cached as briefly as the figures)."""
    key = f"{settings.mongo_url}/{settings.mongo_db}"
    cached = _online.get(key)
    if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    found = worker_store.alive(settings, ("name", "queues"))
    _online[key] = (time.monotonic(), found)
    return found


def _rate(fig: dict[str, Any]) -> float:
    return float(fig.get("secondsPerEpoch") or fig["secondsPerJob"])


def _someone_faster(me: str, figs: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Cheap first test, from cached figures only: is any machine measured faster than me on a script?"""
    mine = figs.get(me) or {}
    return any(other != me and script in mine and clearly_faster(fig, mine[script])
               for other, scripts in figs.items() for script, fig in scripts.items())


def destination(job_id: str, delivery: str, me: str, settings: Settings) -> tuple[dict[str, Any], str, str] | None:
    """Where this delivery would finish sooner than here: ``(order, worker, why)``, or None to run it here.

    Earliest finish time: here = my expected duration; there = what that worker still has to do (its
    running Job's ETA plus the Jobs already placed on it) + its expected duration.
    """
    if not settings.placement:
        return None
    figs = figures(settings)
    if not _someone_faster(me, figs):
        return None
    order = order_store.with_delivery(job_id, delivery, settings)
    if not order or order.get("state") != "unassigned" or order.get("pinnedWorker") or order.get("placedOn"):
        return None
    job = {"epochs": order.get("epochs")}
    script = order.get("scriptName", "").removesuffix(".py")
    my_figure = _script_figure(figs.get(me), script)
    mine = expected_seconds(my_figure, job)
    if mine is None or my_figure is None:
        return None
    from mlqueue import routing

    queue = routing.queue_of(order, settings)
    others = {w["name"] for w in _online_workers(settings) if w["name"] != me and queue in (w.get("queues") or [])}
    best: tuple[float, str] | None = None
    for name in others:
        their_figure = _script_figure(figs.get(name), script)
        theirs = expected_seconds(their_figure, job)
        if theirs is None or their_figure is None or not clearly_faster(their_figure, my_figure):
            continue
        finish = _busy_for(name, figs, settings) + theirs
        if best is None or finish < best[0]:
            best = (finish, name)
    if best is None or best[0] >= PASS_MARGIN * mine:
        return None
    why = f"placed on {best[1]}: expected done in {best[0]:.0f}s there, {mine:.0f}s here ({me})"
    return order, best[1], why


def _script_figure(worker_figs: dict[str, dict[str, Any]] | None, script: str) -> dict[str, Any] | None:
    if not worker_figs:
        return None
    return worker_figs.get(script) or worker_figs.get(f"{script}.py")


def _busy_for(worker: str, figs: dict[str, dict[str, dict[str, Any]]], settings: Settings) -> float:
    """Seconds until ``worker`` is through its running Job and the Jobs placed on it."""
    now = datetime.now(UTC)
    total = 0.0
    for order in order_store.running_on_or_placed_on(
            worker, ["assigned", "running"], "unassigned", settings,
            {"scriptName": 1, "epochs": 1, "startedDate": 1, "latestMetrics": 1, "state": 1}):
        fig = _script_figure(figs.get(worker), order.get("scriptName", "").removesuffix(".py"))
        job = {"epochs": order.get("epochs")}
        if order["state"] == "unassigned":
            total += expected_seconds(fig, job) or 0.0
        else:
            total += eta_seconds(order, job, fig, now) or 0.0
    return total


def unstrand(settings: Settings) -> int:
    """Orders placed on a worker that went offline go back to their own queue (run by every reaper)."""
    from mlqueue import orders

    placed = order_store.placed("unassigned", settings, {"jobId": 1, "delivery": 1, "placedOn": 1,
                                                         "requirementClass": 1, "pinnedWorker": 1, "state": 1})
    if not placed:
        return 0
    alive = {w["name"] for w in worker_store.alive(settings)}
    moved = 0
    for order in placed:
        if order["placedOn"] not in alive:
            moved += orders.reroute(order, {"placedOn": None}, f"{order['placedOn']} went offline; back to its queue",
                                    "placement", settings) is not None
    return moved


def _someone_slower(me: str, figs: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Could Jobs have been placed on me? Only if some machine is measured slower than me on a script."""
    mine = figs.get(me) or {}
    return any(other != me and script in mine and clearly_faster(mine[script], fig)
               for other, scripts in figs.items() for script, fig in scripts.items())


def placed_first(job_id: str, delivery: str, me: str, settings: Settings) -> tuple[str, str, Any] | None:
    """Jobs placed on me come before shared-queue ones: swap this delivery for my oldest placed Order.

    The received Order goes back to its own queue (new delivery, so its message is stale). Without this
    a fast worker alternates between its own queue and the shared one, and placed Jobs wait longer than
    the placement assumed. Returns ``(jobId, delivery, scriptVersion)`` to run instead, or None.
    """
    if not settings.placement or not _someone_slower(me, figures(settings)):
        return None
    mine = order_store.oldest_placed_on(me, "unassigned", settings)
    if not mine or mine["jobId"] == job_id:
        return None
    received = order_store.with_delivery(job_id, delivery, settings, state="unassigned")
    if not received or received.get("placedOn") or received.get("pinnedWorker"):
        return None
    from mlqueue import orders

    if orders.reroute(received, {}, f"{me} runs the Job placed on it first; back to its queue", me, settings) is None:
        return None
    return mine["jobId"], mine["delivery"], mine.get("scriptVersion")
