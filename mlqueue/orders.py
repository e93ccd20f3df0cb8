"""The job lifecycle, in one place: every state an Order can be in and every way it moves.

    unassigned -> assigned -> running -> succeeded | failed | cancelled | pruned
         ^___________|___________|  (lost: no heartbeat -> back to unassigned, or failed at maxAttempts;
                                     yielded: the worker's owner came back -> back to unassigned;
                                     environment: the machine's fault, e.g. a module missing there ->
                                     back to unassigned, not charged, failed after max_environment_failures)

Each move is one atomic, conditional update of the Order document ("only if it is still in the state
and delivery I think it is"), so two workers, a late report from a worker presumed dead, a duplicate
Celery delivery and the reaper can never both win. The final Outcome is written into the Order by the
winning move and then copied to the ``outcomes`` collection (unique per Job), so a crash between the two
is repaired by the reaper and a Job can never get a second final Outcome.

A worker that can start at once claims and starts in one move (``claim(..., start_with=...)``): the
Order goes from unassigned to running in a single conditional update whose history still records both
steps, so each Job costs the store one write to start, one to finish and one for the Outcome copy.

Celery messages carry ``(jobId, delivery)``, and the Job itself in a header when it is small (``carry``);
a message sent at submit also carries the new Order, so the claim is one conditional update with no read
before it (a claim that does not match reads the Order to say why). A new ``delivery`` id is minted for
every (re)queue; a message whose delivery is not the Order's current one is stale and is acknowledged
and ignored.

Over 400 lines on purpose: every move of the state diagram above is here, so that whether two moves can
both win is answered by reading one file. The queries and updates themselves are functions of
``store/orders.py`` (the collection's one owner); reads that are not moves live in ``outcomes`` and ``store/``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from bson import ObjectId, json_util

from mlqueue import environment, routing, scripts, speed, store
from mlqueue.errors import NotFound
from mlqueue.settings import Settings, get_settings
from mlqueue.store import jobs as job_store
from mlqueue.store import orders as order_store
from mlqueue.store import outcomes as outcome_store

log = logging.getLogger(__name__)

UNASSIGNED, ASSIGNED, RUNNING = "unassigned", "assigned", "running"
SUCCEEDED, FAILED, CANCELLED, PRUNED = "succeeded", "failed", "cancelled", "pruned"
ACTIVE = (UNASSIGNED, ASSIGNED, RUNNING)
HELD = (ASSIGNED, RUNNING)
FINAL = (SUCCEEDED, FAILED, CANCELLED, PRUNED)
STATES = ACTIVE + FINAL

# Outcome ``status`` for outcomes mlqueue writes itself (a script's own status is kept as it returned it).
STATUS_FOR_REASON = {"error": 500, "lost": 500, "timeout": 504, "cancelled": 499}
METRICS_KEPT = 20000
LOG_LINES_KEPT = 5000
CARRIED_JOB, CARRIED_JOB_BYTES = "mlqueue_job", 8192  # a Job this small rides in its message's headers
CARRIED_ORDER = "mlqueue_order"  # and its Order as submitted (Extended JSON text), as small
CARRIED_SCRIPT = "mlqueue_script"  # and the script version it runs (scripts.version_now)
_BULK = ("history", "metrics", "log")  # an Order's growing lists: never carried
_CARRIED_JSON = json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)
REPAIR_MARGIN = timedelta(seconds=30)  # a final move stamped this long before a sweep may commit after it


def now() -> datetime:
    return datetime.now(UTC)


def new_delivery() -> str:
    return uuid.uuid4().hex


def _event(to: str, by: str, why: str, **extra: Any) -> dict[str, Any]:
    return {"at": now(), "to": to, "by": by, "why": why, **extra}


def _move(
    query: dict[str, Any],
    to: str,
    by: str,
    why: str,
    settings: Settings | None = None,
    set_: dict[str, Any] | None = None,
    inc: dict[str, int] | None = None,
    known: dict[str, Any] | None = None,
    via: tuple[str, str] | None = None,
) -> dict[str, Any] | None:
    """Atomically move the Order matching ``query`` to state ``to``; None if it no longer matches.

    With ``known`` (the Order as the caller last saw it) the write is a plain conditional update and the
    new document is computed locally: on the MongoDB server we embed, that is half the cost of a
    find-and-modify, and it is paid on every Job. ``via`` = (state, why) passes through a state on the
    way, in the same write: both steps are in the history, only the last one is ever visible.
    """
    events = [_event(via[0], by, via[1])] if via else []
    events.append(_event(to, by, why))
    update: dict[str, Any] = {
        "$set": {"state": to, "updatedDate": now(), **(set_ or {})},
        "$push": {"history": {"$each": events}},
    }
    if inc:
        update["$inc"] = inc
    if known is None:
        return order_store.update_returning(query, update, settings, f"move order to {to}")
    result = order_store.update(query, update, settings, f"move order to {to}")
    if result.matched_count != 1:
        return None
    after = {**known, **update["$set"], "history": [*known.get("history", []), *events]}
    for key, step in (inc or {}).items():
        after[key] = known.get(key, 0) + step
    return after


def _note(job_id: str, by: str, why: str, settings: Settings | None = None) -> None:
    """Add a history line without changing state (ignored duplicates, discarded late results)."""
    order_store.add_history(job_id, {"at": now(), "to": None, "by": by, "why": why}, settings)


def note(job_id: str, by: str, why: str, settings: Settings | None = None) -> None:
    """A history line from another module (a resumed checkpoint, an owner pause)."""
    _note(job_id, by, why, settings)


# --------------------------------------------------------------------------- submit and queue


def submit(jobs: list[dict[str, Any]], by: str = "cli", settings: Settings | None = None) -> list[str]:
    """Store validated Jobs with their Orders, then queue them. Returns the new Job ids.

    Jobs and Orders are written in batches (one write per collection however many Jobs), and the
    messages are sent only once every Job is stored: all or nothing is queued.

    Jobs arrive checked: their fields (``jobs.validate``) and their datasets (``datasets.require``, done by
    ``service.submit`` and the sweep driver), so the lifecycle module does not reach up into datasets.
    """
    from mlqueue.access import require_write

    require_write("submit Jobs")
    settings = settings or get_settings()
    created = now()
    docs = [{**{k: v for k, v in job.items() if k != "_id"}, "_id": ObjectId(), "createdDate": created} for job in jobs]
    versions: dict[tuple[str, str | None], dict[str, str] | None] = {}   # the script each Job runs, looked up once
    for job in jobs:
        if (key := _script_key(job)) not in versions:
            versions[key] = scripts.version_now(*key, settings)
    job_store.insert(docs, settings)
    new_orders = [_new_order(str(doc["_id"]), job, created, by, settings, versions[_script_key(job)])
                  for doc, job in zip(docs, jobs, strict=True)]
    order_store.insert(new_orders, settings)
    routing.announce(new_orders, settings)  # workers that satisfy a new requirement class start consuming it
    headers = {order["jobId"]: carry({k: v for k, v in doc.items() if k not in ("_id", "createdDate")}, order,
                                     versions[_script_key(doc)]) for doc, order in zip(docs, new_orders, strict=True)}
    enqueue_all([(o["jobId"], o["delivery"], routing.queue_of(o, settings)) for o in new_orders], settings, headers)
    return [o["jobId"] for o in new_orders]


def _script_key(job: dict[str, Any]) -> tuple[str, str | None]:
    return job["scriptName"], job.get("scriptHash")


def _new_order(job_id: str, job: dict[str, Any], created: datetime, by: str, settings: Settings,
               version: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "state": UNASSIGNED,
        "createdDate": created,
        "updatedDate": created,
        "attempts": 0,
        "maxAttempts": int(job.get("maxAttempts") or settings.max_attempts),
        "timeLimit": float(job.get("timeLimit") or settings.default_time_limit),
        "scriptName": job["scriptName"],
        "projectName": job.get("projectName", "default"),
        "sweepId": job.get("sweepId"),
        "delivery": new_delivery(),
        "enqueuedAt": None,
        "worker": None,
        "outcome": None,
        "history": [_event(UNASSIGNED, by, "submitted")],
        **({"scriptVersion": version} if version else {}),  # what every message of this Order runs
        "metrics": [],
        "log": [],
        **routing.place(job, settings, version),  # requires, requirementClass, pinnedWorker: which queue
    }


def enqueue(order: dict[str, Any], delivery: str, queue: str | None, settings: Settings | None = None) -> bool:
    """Send the Celery message of this Order's ``delivery`` to ``queue`` (``routing.queue_of``; None: the
    base queue), carrying the script version its submit chose (``scriptVersion``), so a message sent
    again runs what the first one would have.

    If the broker is down the reaper sends it later.
    """
    return enqueue_all([(order["jobId"], delivery, queue)], settings, {order["jobId"]: resend_headers(order)}) == 1


def resend_headers(order: dict[str, Any]) -> dict[str, Any]:
    """The headers of a message sent again for an Order: its script version (``carry``)."""
    return carry(None, None, order.get("scriptVersion"))


def enqueue_all(messages: list[tuple[str, str, str | None]], settings: Settings | None = None,
                headers: dict[str, dict[str, Any]] | None = None) -> int:
    """Send the messages ``(jobId, delivery, queue)`` of several Orders, marking the sent ones after
    each ``store.IN_CHUNK`` of them; returns how many were sent. ``headers`` (by jobId, from ``carry``)
    ride in their messages, so the worker need not read back what submit just wrote.

    The mark (``enqueuedAt``) only spares the reaper a re-send: a message sent twice carries the same
    delivery, and the second one is ignored as a duplicate. Marking as the batch goes means a process
    killed midway leaves only its last chunk unmarked, not every message it had sent.
    """
    settings = settings or get_settings()
    sent = 0
    for start in range(0, len(messages), store.IN_CHUNK):
        try:
            chunk = _send_chunk(messages[start:start + store.IN_CHUNK], settings, headers or {})
        except Exception as exc:  # noqa: BLE001 - no connection at all: these Orders wait for the reaper
            log.warning("could not queue %d job(s) now (%s); they stay unassigned and will be re-sent",
                        len(messages) - start, exc)
            return sent
        order_store.mark_enqueued(chunk, now(), settings)
        sent += len(chunk)
    return sent


def _send_chunk(messages: list[tuple[str, str, str | None]], settings: Settings,
                headers: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The ``(jobId, delivery)`` of the messages sent, over one pooled broker connection."""
    from mlqueue.celery_app import app_for

    with app_for(settings).producer_or_acquire() as producer:
        return [(job_id, delivery) for job_id, delivery, queue in messages
                if _send(job_id, delivery, queue, settings, producer, headers.get(job_id))]


def carry(job: dict[str, Any] | None, order: dict[str, Any] | None = None,
          script: dict[str, str] | None = None) -> dict[str, Any]:
    """The message headers that carry a Job (``CARRIED_JOB`` header): a Job is written once and never
    changed, so the copy in its message is the Job. Left out when it is large or not plain JSON; the
    worker then reads it (as it does for messages the reaper re-sends, and old workers ignore it).

    ``order``, an Order just inserted, rides as ``CARRIED_ORDER`` (without its growing lists): until a
    claim, only notes, the sent mark and a stop request touch it, and none changes its delivery, state
    or attempts, the claim's conditions (``carried_order``). ``script``, the version the Job runs
    (``scripts.version_now``), rides as ``CARRIED_SCRIPT``: the worker then asks the store nothing
    before the claim when it has that version cached."""
    headers: dict[str, Any] = {CARRIED_SCRIPT: script} if script else {}
    try:
        if job is not None and len(json.dumps(job, allow_nan=False)) <= CARRIED_JOB_BYTES:
            headers[CARRIED_JOB] = job
        if order is not None:
            text = json_util.dumps({k: v for k, v in order.items() if k not in _BULK}, allow_nan=False)
            if len(text) <= CARRIED_JOB_BYTES:
                headers[CARRIED_ORDER] = text
    except (TypeError, ValueError):
        pass
    return headers


def carried_order(header: Any, job_id: str, delivery: str) -> dict[str, Any] | None:
    """The Order a message carried (``carry``), if it is this delivery's, unclaimed; else None."""
    if not isinstance(header, str):
        return None
    try:
        order = json_util.loads(header, json_options=_CARRIED_JSON)
    except (TypeError, ValueError):
        return None
    if not isinstance(order, dict) or order.get("jobId") != job_id or order.get("delivery") != delivery \
            or order.get("state") != UNASSIGNED or not isinstance(order.get("attempts"), int):
        return None
    return order


def _send(job_id: str, delivery: str, queue: str | None, settings: Settings, producer: Any,
          headers: dict[str, Any] | None = None) -> bool:
    from mlqueue.celery_app import app_for

    try:
        app_for(settings).send_task(
            "mlqueue.run_order", args=[job_id, delivery], task_id=delivery, queue=queue or settings.queue,
            producer=producer, headers=headers or {}, retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception as exc:  # noqa: BLE001 - the Order is safe in the store; the reaper re-sends
        log.warning("could not queue job %s now (%s); it stays unassigned and will be re-sent", job_id, exc)
        return False
    return True


# --------------------------------------------------------------------------- worker side


def claim(job_id: str, delivery: str, worker: str, settings: Settings | None = None,
          start_with: dict[str, str] | None = None, carried: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Take an Order for this delivery. None means: stale or duplicate message, ignore it.

    With ``start_with`` (the identity of the script the worker has ready) the Order is claimed and
    started in one move. A running Order with this very delivery may be claimed again only when its
    holder is provably gone: the holding process on this host has died (Celery re-delivers after a
    pool process crash), or its heartbeat is older than ``lost_after``. Each such claim counts as a new
    attempt and the lost one is recorded in the history.

    ``carried``: the Order as its message carried it (``carried_order``). The claim is then tried
    blind, conditional on the delivery, state and attempts it shows; only if that does not match is the
    Order read, to claim it as it is now or to say why not.
    """
    settings = settings or get_settings()
    if carried is not None:
        order = _take(carried, {"jobId": job_id, "delivery": delivery, "state": UNASSIGNED,
                                "attempts": carried["attempts"]}, worker, "picked up", settings, start_with)
        if order:
            return order
    current = _read(job_id, settings)
    if current is not None and current.get("delivery") == delivery and current["state"] == UNASSIGNED:
        order = _take(current, {"jobId": job_id, "delivery": delivery, "state": UNASSIGNED}, worker,
                      "picked up", settings, start_with)
        if order:
            return order
        current = _read(job_id, settings)  # someone else moved it meanwhile
    if current is None:
        log.warning("message for unknown job %s ignored", job_id)
        return None
    why = _holder_gone(current, delivery, socket.gethostname(), settings)
    if why and counted_attempts(current) >= current.get("maxAttempts", settings.max_attempts):
        _close(current, FAILED, "lost", f"attempt {current['attempts']} lost ({why}); gave up after "
               f"{current['attempts']} attempts (maxAttempts)", worker, settings)
        return None
    if why:
        order = _take(
            current,
            {"jobId": job_id, "delivery": delivery, "state": current["state"], "pid": current.get("pid"),
             "heartbeatAt": current.get("heartbeatAt")},
            worker, f"attempt {current.get('attempts')} lost ({why}); picked up again", settings, start_with,
        )
        if order:
            return order
    _note(job_id, worker, f"duplicate delivery {delivery[:8]} ignored (order is {current['state']})", settings)
    return None


def _read(job_id: str, settings: Settings) -> dict[str, Any] | None:
    return order_store.by_job(job_id, settings, durable=True)


def _take(current: dict[str, Any], query: dict[str, Any], worker: str, why: str, settings: Settings,
          start_with: dict[str, str] | None) -> dict[str, Any] | None:
    """The claiming move: to assigned, or through assigned to running when the script is ready."""
    stamp = now()
    set_ = {"worker": worker, "host": socket.gethostname(), "pid": _pid(), "assignedDate": stamp, "heartbeatAt": stamp}
    if start_with is None:
        return _move(query, ASSIGNED, worker, why, settings, set_=set_, inc={"attempts": 1}, known=current)
    attempt = current.get("attempts", 0) + 1
    return _move(query, RUNNING, worker, f"attempt {attempt} started", settings,
                 set_={**set_, **_running(current, start_with, stamp)}, inc={"attempts": 1}, known=current,
                 via=(ASSIGNED, why))


def _running(order: dict[str, Any], script_identity: dict[str, str], started: datetime) -> dict[str, Any]:
    """The fields a start sets: its deadline starts now."""
    return {"startedDate": started, "heartbeatAt": started, "script": script_identity,
            "deadline": started + timedelta(seconds=order["timeLimit"])}


def _holder_gone(order: dict[str, Any], delivery: str, host: str, settings: Settings) -> str | None:
    if order.get("delivery") != delivery or order["state"] not in HELD:
        return None
    if order.get("host") == host and order.get("pid") and not psutil.pid_exists(order["pid"]):
        return f"process {order['pid']} on {host} died"
    heartbeat = order.get("heartbeatAt")
    if heartbeat and now() - heartbeat > timedelta(seconds=settings.lost_after):
        return f"no heartbeat since {heartbeat:%H:%M:%S}"
    return None


def _pid() -> int:
    return os.getpid()


def start(order: dict[str, Any], script_identity: dict[str, str], settings: Settings | None = None) -> dict | None:
    """Mark the Order running; its deadline starts now."""
    return _move(
        _gate(order, ASSIGNED), RUNNING, order["worker"], f"attempt {order['attempts']} started", settings,
        set_=_running(order, script_identity, now()), known=order,
    )


def _gate(order: dict[str, Any], state: str = RUNNING) -> dict[str, Any]:
    """The condition under which this attempt still owns the Order."""
    return {"jobId": order["jobId"], "delivery": order["delivery"], "attempts": order["attempts"], "state": state}


def heartbeat(order: dict[str, Any], settings: Settings | None = None) -> bool:
    """Refresh the Order's heartbeat. False means this attempt no longer owns it (cancelled, reaped)."""
    result = order_store.update({**_gate(order), "state": {"$in": list(HELD)}}, {"$set": {"heartbeatAt": now()}},
                                settings)
    return result.matched_count == 1


def record_metrics(order: dict[str, Any], metrics: dict[str, Any] | list[dict[str, Any]],
                   settings: Settings | None = None) -> str:
    """Store one intermediate report (or several, in order, in one write) on the Order.

    Returns "ok", "lost" (this attempt no longer owns the Order) or "stop" (someone, e.g. a sweep's
    pruner, asked this Job to end early: see ``request_stop``). A point without ``at`` is stamped now.
    """
    points = [{"at": now(), **m} for m in ([metrics] if isinstance(metrics, dict) else metrics)]
    after = order_store.update_returning(
        _gate(order),
        {"$push": {"metrics": {"$each": points, "$slice": -METRICS_KEPT}},
         "$set": {"latestMetrics": points[-1], "heartbeatAt": now()}},
        settings, "record metrics", projection={"stopRequested": 1},
    )
    if after is None:
        return "lost"
    return "stop" if after.get("stopRequested") else "ok"


def counted_attempts(order: dict[str, Any]) -> int:
    """Attempts that count toward ``maxAttempts``: not those that made progress (a new checkpoint) or
    were given back by an owner yield — a machine going away is not the Job's fault. A Job that kills
    its machine before making progress still runs out of attempts."""
    return order.get("attempts", 0) - len(order.get("exemptAttempts") or [])


def set_checkpoint(order: dict[str, Any], pointer: dict[str, Any], progress: bool,
                   settings: Settings | None = None) -> bool:
    """Point the Order at a fully uploaded checkpoint, if this attempt still holds it (see checkpoints)."""
    update: dict[str, Any] = {"$set": {"checkpoint": pointer, "heartbeatAt": now()}}
    if progress:
        update["$addToSet"] = {"exemptAttempts": order["attempts"]}
    result = order_store.update(_gate(order), update, settings, "point order at checkpoint")
    return result.matched_count == 1


def give_back(order: dict[str, Any], why: str, by: str, settings: Settings | None = None) -> bool:
    """Yield: a held Order goes back to unassigned for another machine, keeping its checkpoint.

    Conditional on the attempt still holding it; the attempt does not count toward ``maxAttempts``.
    """
    delivery = new_delivery()
    moved = _move({**_gate(order), "state": {"$in": list(HELD)}}, UNASSIGNED, by,
                  f"attempt {order['attempts']} yielded ({why}); queued again", settings,
                  set_={"delivery": delivery, "enqueuedAt": None, "worker": None, "pid": None, "pausedBy": None})
    if not moved:
        return False
    order_store.update({"jobId": order["jobId"], "delivery": delivery},
                       {"$addToSet": {"exemptAttempts": order["attempts"]}}, settings)
    enqueue(order, delivery, routing.queue_of(order, settings), settings)
    return True


def hold_paused(order: dict[str, Any], why: str, deadline: datetime | None, paused_for: float,
                settings: Settings | None = None) -> bool:
    """Heartbeat a Job its worker suspended (owner policy): not lost, and its deadline waits too."""
    update: dict[str, Any] = {"heartbeatAt": now(), "pausedBy": why}
    if deadline:
        update["deadline"] = deadline + timedelta(seconds=paused_for)
    result = order_store.update({**_gate(order), "state": {"$in": list(HELD)}}, {"$set": update}, settings)
    return result.matched_count == 1


def resume_paused(order: dict[str, Any], deadline: datetime | None, paused_for: float, by: str,
                  settings: Settings | None = None) -> None:
    """A suspended Job runs again: its deadline moves by the time it was paused."""
    update: dict[str, Any] = {"heartbeatAt": now(), "pausedBy": None}
    if deadline:
        update["deadline"] = deadline + timedelta(seconds=paused_for)
    order_store.update(
        {**_gate(order), "state": {"$in": list(HELD)}},
        {"$set": update, "$push": {"history": {"at": now(), "to": None, "by": by,
                                               "why": f"resumed after {paused_for:.0f}s paused"}}}, settings)


def append_log(order: dict[str, Any], lines: list[dict[str, Any]], settings: Settings | None = None) -> None:
    """Append a script's output lines to its Order (the last ``LOG_LINES_KEPT`` are kept).

    ``logCount`` counts every line ever appended, so readers can number lines (see ``live_log``)."""
    order_store.update(
        {"jobId": order["jobId"], "delivery": order["delivery"]},
        {"$push": {"log": {"$each": lines, "$slice": -LOG_LINES_KEPT}}, "$inc": {"logCount": len(lines)}},
        settings,
    )


def request_stop(job_id: str, why: str, by: str, settings: Settings | None = None) -> bool:
    """Ask a running Job to end early at its next report (pruning); it ends in state ``pruned``."""
    from mlqueue.access import require_write

    require_write("stop Jobs")
    result = order_store.update(
        {"jobId": job_id, "state": {"$in": list(ACTIVE)}, "stopRequested": {"$in": [None, False]}},
        {"$set": {"stopRequested": why},
         "$push": {"history": {"at": now(), "to": None, "by": by, "why": f"stop requested: {why}"}}},
        settings,
    )
    return result.modified_count == 1


def finish(
    order: dict[str, Any], to: str, outcome: dict[str, Any], why: str, settings: Settings | None = None,
    copy: Callable[[dict[str, Any], Settings | None], None] | None = None,
) -> bool:
    """Close this attempt with its final Outcome. False (and nothing written) if it lost the Order.

    A failure that is the machine's fault (``environment.judge``) is not final: the Order bounces.
    ``copy`` writes the Outcome copy (default ``store_outcome``, at once; the worker passes
    ``deferred.copy_outcome``: the reaper repairs a copy that never comes).
    """
    if to == FAILED and (judged := environment.judge(outcome)):
        return bounce(order, outcome, judged, settings)
    outcome = {**outcome, "jobId": order["jobId"], "orderId": str(order["_id"]), "attempt": order["attempts"],
               "worker": order.get("worker"), "host": order.get("host"), "state": to, "finishedDate": now()}
    done = _move(
        _gate(order), to, order["worker"], why, settings,
        set_={"finishedDate": outcome["finishedDate"], "outcome": outcome}, known=order,
    )
    if not done:
        _note(order["jobId"], order.get("worker") or "?",
              f"late result of attempt {order['attempts']} discarded (order no longer held by it)", settings)
        return False
    (copy or store_outcome)(done, settings)
    return True


def bounce(order: dict[str, Any], outcome: dict[str, Any], judged: dict[str, Any],
           settings: Settings | None = None) -> bool:
    """Environment failure: running -> unassigned for another machine, the attempt not charged.

    A module the Job did not declare joins its requirement (so only machines that have it get it
    again); this worker stops taking the Job's class (``routing.refuse``). After
    ``max_environment_failures`` such attempts the Job fails with ``reason: environment``.
    """
    settings = settings or get_settings()
    worker = order.get("worker") or "?"
    cause = f"{environment.describe(judged)} on {worker}: {outcome.get('message') or '?'}"[:500]
    failures = int(order.get("environmentFailures") or 0) + 1
    if failures >= settings.max_environment_failures:
        final = {**outcome, "reason": "environment",
                 "message": f"failed for environment reasons on {failures} attempts (last: {cause}); fix the "
                            "machines or give the Job a `requires` no machine fails"}
        return finish(order, FAILED, final, final["message"], settings)
    routing_fields = routing.learn(order, judged)
    delivery = new_delivery()
    exempt = sorted({*(order.get("exemptAttempts") or []), order["attempts"]})
    moved = _move(
        _gate(order), UNASSIGNED, worker,
        f"attempt {order['attempts']} failed because of its machine ({cause}); not charged, queued again",
        settings, known=order, inc={"environmentFailures": 1},
        set_={"delivery": delivery, "enqueuedAt": None, "worker": None, "pid": None, "exemptAttempts": exempt,
              "lastEnvironmentFailure": {"reason": "environment", "worker": worker, "kind": judged["kind"],
                                         "message": cause, "at": now()}, **routing_fields},
    )
    if not moved:
        return False
    if not routing_fields:  # its class stays: this machine's environment fails it, so stop taking it here
        routing.refuse(worker, moved, cause, settings)
    routing.announce([moved], settings)
    enqueue(order, delivery, routing.queue_of(moved, settings), settings)
    return True


def reroute(order: dict[str, Any], fields: dict[str, Any], why: str, by: str,
            settings: Settings | None = None) -> dict[str, Any] | None:
    """unassigned -> unassigned with a new message: on another queue (placed on a faster worker, or back
    from a vanished one), or on the same one when its message was lost with a worker (``stranded``).

    Conditional on the delivery the caller saw; a new delivery makes the old message stale.
    """
    delivery = new_delivery()
    moved = _move({"jobId": order["jobId"], "state": UNASSIGNED, "delivery": order["delivery"]}, UNASSIGNED, by, why,
                  settings, set_={"delivery": delivery, "enqueuedAt": None, **fields}, known=order)
    if moved:
        enqueue(order, delivery, routing.queue_of(moved, settings), settings)
    return moved


def store_outcome(order: dict[str, Any], settings: Settings | None = None) -> None:
    """Copy a final Order's Outcome into ``outcomes`` (idempotent: one per Job, first write wins)."""
    outcome_store.insert_once(order["jobId"], order["outcome"], settings)


def system_outcome(order: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """The Outcome mlqueue writes when the script could not give one (lost, timeout, cancelled)."""
    return {"status": STATUS_FOR_REASON.get(reason, 500), "reason": reason, "message": message,
            "loss": None, "metric": None, "jobId": order["jobId"], "orderId": str(order["_id"]),
            "attempt": order.get("attempts", 0), "worker": order.get("worker"), "host": order.get("host"),
            "script": order.get("script")}


def _close(order: dict[str, Any], to: str, reason: str, message: str, by: str,
           settings: Settings | None = None) -> dict[str, Any] | None:
    """Finalize an Order on behalf of nobody's attempt (reaper, cancel), if it is still as we saw it."""
    outcome = {**system_outcome(order, reason, message), "state": to, "finishedDate": now()}
    query = {"jobId": order["jobId"], "state": order["state"], "delivery": order["delivery"],
             "attempts": order.get("attempts", 0)}
    done = _move(query, to, by, message, settings,
                 set_={"finishedDate": outcome["finishedDate"], "outcome": outcome, "reason": reason}, known=order)
    if done:
        store_outcome(done, settings)
    return done


# --------------------------------------------------------------------------- user actions


class OrderError(NotFound):
    """Raised when a user action names a Job that does not exist (or an ambiguous id prefix), or a Job that
    cannot take that action (``service`` reports those as ``Conflict``)."""


def get(job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """The Order of a Job, by full id or unique prefix."""
    matches = order_store.by_job_or_prefix(job_id, settings)
    if len(matches) > 1:
        raise OrderError(f"job id prefix {job_id!r} is ambiguous; give more characters")
    if not matches:
        raise OrderError(f"no job with id {job_id!r}; `mlqueue results` lists Job ids (first column), "
                         "and a unique prefix of one is enough")
    return matches[0]


def cancel(job_id: str, by: str = "cli", settings: Settings | None = None) -> dict[str, Any]:
    """Cancel a Job that has not finished; a running one is stopped by its worker's heartbeat."""
    from mlqueue.access import require_write

    require_write("cancel Jobs")
    for _ in range(5):
        order = get(job_id, settings)
        if order["state"] in FINAL:
            raise OrderError(f"job {order['jobId']} already {order['state']}; nothing to cancel")
        done = _close(order, CANCELLED, "cancelled", f"cancelled by {by}", by, settings)
        if done:
            return done
    raise OrderError(f"job {job_id} kept changing state; try again")


def requeue(job_id: str, by: str = "cli", settings: Settings | None = None) -> str:
    """Run a Job again. A finished Job keeps its one Outcome: a copy is submitted as a new Job.

    An unfinished Order (e.g. stuck after a broker wipe) gets a fresh delivery instead.
    Returns the id of the Job that will run.
    """
    from mlqueue.access import require_write

    require_write("requeue Jobs")
    order = get(job_id, settings)
    if order["state"] in FINAL:
        job = job_store.get(order["jobId"], settings)
        # a requeued trial is a Job of its own: it must not count in (or confuse) its sweep's study
        copy = {k: v for k, v in job.items() if k not in ("_id", "createdDate", "sweepId", "trialNumber")}
        copy["requeuedFrom"] = order["jobId"]
        return submit([copy], by=by, settings=settings)[0]
    delivery = new_delivery()
    moved = _move({"jobId": order["jobId"], "state": order["state"], "delivery": order["delivery"]},
                  UNASSIGNED, by, f"requeued by {by}", settings,
                  set_={"delivery": delivery, "enqueuedAt": None, "worker": None})
    if not moved:
        raise OrderError(f"job {job_id} changed state meanwhile; look at `mlqueue status` and retry")
    enqueue(order, delivery, routing.queue_of(order, settings), settings)
    return order["jobId"]


# --------------------------------------------------------------------------- the reaper


class Reaper:
    """Finds Orders whose worker went silent, Jobs past their deadline, and unsent messages.

    Runs in the HQ and in every worker's main process; every action is a conditional update, so any
    number of reapers are safe together. A reaper only judges silence it could have seen: right after
    it starts, or after the store was unreachable, it waits a full ``lost_after`` before declaring an
    Order lost (the workers could not write heartbeats while the store was down either).
    """

    def __init__(self, name: str, settings: Settings | None = None, full_repair: bool = True) -> None:
        self.name = name
        self.settings = settings or get_settings()
        self.watching_since = time.monotonic()
        # Outcomes are repaired for the Orders that ended since this time; None: compare everything once
        self.repair_since = None if full_repair else now() - timedelta(seconds=2 * self.settings.lost_after)
        self.full_repair_due = False  # set by ``repair_everything_next``

    def repair_everything_next(self) -> None:
        """Have the next sweep compare whole collections (the HQ asks once its start's reads are done)."""
        self.full_repair_due = True

    def run_forever(self, stop: Any) -> None:
        """Sweep every ``reap_every`` seconds until ``stop`` (a threading.Event) is set."""
        while not stop.wait(self.settings.reap_every):
            self.sweep_safely()

    def sweep_safely(self) -> dict[str, int]:
        try:
            return self.sweep()
        except store.TRANSIENT as exc:
            log.warning("reaper: store unreachable (%s)", exc)
            self.watching_since = time.monotonic()
        except Exception:  # noqa: BLE001 - the reaper must outlive any one bad document
            log.exception("reaper sweep failed")
        return {}

    def sweep(self) -> dict[str, int]:
        from mlqueue import checkpoints

        counts = {"lost": 0, "timeout": 0, "resent": 0, "repaired": 0, "stranded": 0}
        lost_after = self.settings.lost_after
        if time.monotonic() - self.watching_since >= lost_after:
            cutoff = now() - timedelta(seconds=lost_after)
            for order in order_store.silent(HELD, cutoff, self.settings):
                counts[self._handle_silent(order)] += 1
        overdue = now() - timedelta(seconds=self.settings.timeout_grace * 3)
        for order in order_store.past_deadline(RUNNING, overdue, self.settings):
            if _close(order, FAILED, "timeout", f"killed: time limit {order['timeLimit']:g}s exceeded",
                      self.name, self.settings):
                counts["timeout"] += 1
        unsent_before = now() - timedelta(seconds=max(5.0, self.settings.reap_every))
        unsent = order_store.unsent(UNASSIGNED, unsent_before, self.settings)
        counts["resent"] = enqueue_all([(o["jobId"], o["delivery"], routing.queue_of(o, self.settings))
                                        for o in unsent], self.settings,
                                       {o["jobId"]: resend_headers(o) for o in unsent})
        counts["repaired"] = self._repair_outcomes()
        counts["checkpoints"] = checkpoints.remove_ended(self.settings)   # of Jobs that ended
        from mlqueue import stranded  # it builds on this module

        counts["stranded"] = stranded.resend(self.name, self.settings)
        counts["vanished"] = stranded.resend_vanished(self.name, self.settings)
        speed.unstrand(self.settings)  # Jobs placed on a worker that went offline go back to their queue
        if any(counts.values()):
            log.info("reaper %s: %s", self.name, counts)
        return counts

    def _repair_outcomes(self) -> int:
        """Copy Outcomes of final Orders that never reached ``outcomes`` (a crash between two writes).

        A sweep looks only at the Orders that ended since the previous one (a range of the ``updatedDate``
        index, with a margin for writes that commit after their stamp), so its cost does not grow with
        the history. The first sweep of a ``full_repair`` reaper (the HQ's) compares whole collections,
        once, read in short windows so the store answers pages meanwhile (counting them first cost as
        much as reading them, in one go).
        """
        started = now()
        if self.repair_since is None or self.full_repair_due:
            self.full_repair_due = False
            ended = order_store.job_ids_in(FINAL, self.settings)
            stored = outcome_store.job_ids(self.settings)
        else:
            changed = order_store.states_changed_since(self.repair_since, self.settings)
            ended = [job_id for job_id, state in changed if state in FINAL]
            stored = outcome_store.job_ids_among(ended, self.settings)
        missing = [job_id for job_id in ended if job_id not in stored]
        repaired = 0
        for order in order_store.by_job_ids(missing, self.settings, order_store.WITHOUT_BULK):
            if order.get("state") in FINAL and order.get("outcome"):
                store_outcome(order, self.settings)
                repaired += 1
        self.repair_since = started - REPAIR_MARGIN
        return repaired

    def _handle_silent(self, order: dict[str, Any]) -> str:
        """A held Order with no heartbeat: time out, give up, or queue another attempt."""
        silent = f"attempt {order.get('attempts')} lost: no heartbeat from {order.get('worker')} since " \
                 f"{order['heartbeatAt']:%Y-%m-%d %H:%M:%S} UTC"
        deadline = order.get("deadline")
        if deadline and now() > deadline:
            _close(order, FAILED, "timeout", f"{silent}; time limit {order['timeLimit']:g}s exceeded",
                   self.name, self.settings)
            return "timeout"
        if counted_attempts(order) >= order.get("maxAttempts", self.settings.max_attempts):
            _close(order, FAILED, "lost", f"{silent}; gave up after {order['attempts']} attempts (maxAttempts)",
                   self.name, self.settings)
            return "lost"
        delivery = new_delivery()
        moved = _move(
            {"jobId": order["jobId"], "state": order["state"], "delivery": order["delivery"],
             "heartbeatAt": order["heartbeatAt"]},
            UNASSIGNED, self.name, f"{silent}; queued again", self.settings,
            set_={"delivery": delivery, "enqueuedAt": None, "worker": None, "pid": None},
        )
        if moved:
            enqueue(order, delivery, routing.queue_of(order, self.settings), self.settings)
        return "lost"
