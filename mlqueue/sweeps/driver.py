"""Running sweeps: Optuna ask-and-tell over ordinary Jobs, safe in any number of processes.

A sweep lives in three places:
- the Mongo ``sweeps`` collection: its file, state, budgets, counters, best so far and ``driverLease``;
- the ``sweep_trials`` collection: one record per trial (Optuna number and id, the values chosen,
  its Job id, ``told``), so each trial is submitted once and told once;
- an Optuna study in journal storage on the HQ's Redis (the broker, or ``redis_url`` beside RabbitMQ:
  ``brokers.redis_url``), which survives an HQ restart (Redis writes an fsynced append-only file) and is
  reachable from every machine.

Trials are ordinary Jobs (``sweepId``, ``trialNumber``) sent through ``orders.submit``, so the job
lifecycle does everything else: a trial lost with its worker is re-run as the same Job and its Order
reaches a final state once, so it is told once.

The ``Driver`` keeps at most ``maxParallel`` trials unfinished (queued or running): when a trial's Order
reaches a final state it tells the study (succeeded -> value, pruned -> PRUNED, else FAIL) and asks for
the next one in the same step, so machines never wait for the sweep. It feeds running trials' reported
metrics to the study's pruner and asks a trial the pruner gives up on to stop (``orders.request_stop``).
Only the holder of a sweep's lease (a conditional update on ``driverLease``) advances it, so the HQ and
any number of ``mlqueue sweep --wait`` processes can run drivers at once; telling is claimed on the
trial record (``told``) before the study hears it, and re-told idempotently after a crash.

Over 400 lines because the lease, the asking, the telling and the pruning share the one step of a
sweep and its crash cases; the file format is ``sweeps.spec``, the command line ``sweeps.cli``.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from mlqueue import brokers, datasets, jobs, orders, store, sweeps, verdicts
from mlqueue.errors import ConfigError, NotFound
from mlqueue.settings import Settings, get_settings
from mlqueue.store import jobs as job_store
from mlqueue.store import orders as order_store
from mlqueue.values import is_number, is_whole

log = logging.getLogger(__name__)

RUNNING, STOPPING, DONE, STOPPED = "running", "stopping", "done", "stopped"
ACTIVE = (RUNNING, STOPPING)
FINAL = (DONE, STOPPED)
INVALID = "invalid"           # a trial whose Job was refused; told FAIL, never queued
QUEUED = "queued"             # trial record made, Job not yet submitted
STUDY_PREFIX = "mlqueue-sweep-"
REFRESH_EVERY = 5.0           # seconds between counter refreshes when nothing changed (elapsed times move)


class SweepNotFound(NotFound):
    """A sweep id (or prefix) that names no sweep."""


# --------------------------------------------------------------------------- storage


_storages: dict[tuple[int, str, str], Any] = {}


def study_storage(settings: Settings | None = None) -> Any:
    """Optuna journal storage on the HQ's Redis, one per process (and per HQ database name)."""
    import optuna

    settings = settings or get_settings()
    settings.require_urls()
    broker = brokers.redis_url(settings)
    if broker is None:
        raise ConfigError(
            f"sweeps keep their Optuna study in Redis, and this machine knows none: the broker "
            f"({settings.broker_url.split('://')[0]}://) is not Redis and no redis_url is set. Set "
            "MLQUEUE_REDIS_URL (or redis_url in config/mlqueue.json) to the HQ's Redis — `mlqueue hq` starts one "
            "beside RabbitMQ and writes its URL in the HQ's home config — or drive sweeps from the HQ (--hq URL).")
    key = (os.getpid(), broker, settings.mongo_db)
    if key not in _storages:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            backend = optuna.storages.journal.JournalRedisBackend(broker, prefix=f"mlqueue:optuna:{settings.mongo_db}")
        _storages[key] = optuna.storages.JournalStorage(backend)
    return _storages[key]


def ensure_indexes(settings: Settings | None = None) -> None:
    d = store.db(settings)
    d.sweeps.create_index("state")
    d.sweep_trials.create_index([("sweepId", 1), ("trialNumber", 1)], unique=True)
    d.sweep_trials.create_index([("sweepId", 1), ("told", 1)])
    order_store.ensure_indexes(settings)  # its trials are found by ``sweepId``
    job_store.ensure_indexes(settings)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- sweep records


def create(sweep: sweeps.Sweep, text: str, where: str, by: str = "cli", settings: Settings | None = None) -> str:
    """Store a checked sweep and create its study; the driver starts asking for trials at its next step.

    The study is created first, so a broker that is down leaves nothing behind in the store.
    """
    import optuna

    from mlqueue import datasets
    from mlqueue.access import require_write

    require_write("start sweeps")
    settings = settings or get_settings()
    datasets.require([sweep.file.base], settings)
    _quiet_optuna()
    ensure_indexes(settings)
    sweep_id = ObjectId()
    study_name = f"{STUDY_PREFIX}{sweep_id}"
    optuna.create_study(study_name=study_name, storage=study_storage(settings), direction=sweep.direction)
    created = orders.now()
    doc = {
        "_id": sweep_id, "name": sweep.name, "file": where, "text": text, "spec": sweep.raw,
        "studyName": study_name, "storage": f"optuna journal on redis (prefix mlqueue:optuna:{settings.mongo_db})",
        "state": RUNNING, "method": sweep.file.method, "objective": {"field": sweep.file.objective.field,
                                                                      "direction": sweep.direction},
        "earlyStopping": sweep.file.earlyStopping.method,
        "budget": {**sweep.file.budget.model_dump(), "maxTrials": sweep.max_trials},
        "counters": {}, "best": None, "toldCount": 0, "createdDate": created, "startedDate": created,
        "updatedDate": created, "finishedDate": None, "driverLease": None, "createdBy": by,
    }
    store.durable(lambda: store.db(settings).sweeps.insert_one(doc), "store sweep", settings)
    return str(sweep_id)


def get(sweep_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """A sweep by full id or unique prefix."""
    matches = store.by_id_or_prefix(store.db(settings).sweeps, sweep_id)
    if len(matches) > 1:
        raise SweepNotFound(f"sweep id prefix {sweep_id!r} is ambiguous; give more characters")
    if not matches:
        raise SweepNotFound(f"no sweep with id {sweep_id!r}; `mlqueue sweep list` shows them")
    return matches[0]


def spec_of(doc: dict[str, Any]) -> sweeps.Sweep:
    """The stored sweep's checked spec (its Jobs were checked when it was created)."""
    return sweeps.parse_data(doc["spec"], where=doc.get("file") or str(doc["_id"]), check_jobs=False)


def request_stop(sweep_id: str, by: str = "cli", settings: Settings | None = None) -> dict[str, Any]:
    """Stop a sweep: no new trials; its unfinished trials are cancelled now; the driver closes it."""
    from mlqueue.access import require_write

    require_write("stop sweeps")
    doc = get(sweep_id, settings)
    if doc["state"] in FINAL:
        return doc
    store.db(settings).sweeps.update_one(
        {"_id": doc["_id"], "state": {"$in": list(ACTIVE)}},
        {"$set": {"state": STOPPING, "stopAs": STOPPED, "stopReason": f"stopped by {by}", "updatedDate": orders.now()}})
    cancel_unfinished(str(doc["_id"]), by, settings)
    return get(str(doc["_id"]), settings)


def cancel_unfinished(sweep_id: str, by: str, settings: Settings | None = None) -> int:
    """Cancel every unfinished trial's Job (each cancel is the lifecycle's own atomic move)."""
    cancelled = 0
    for record in store.db(settings).sweep_trials.find({"sweepId": sweep_id, "told": False, "jobId": {"$ne": None}}):
        try:
            orders.cancel(record["jobId"], by=by, settings=settings)
            cancelled += 1
        except orders.OrderError:
            continue
    return cancelled


def trials(sweep_id: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    return list(store.db(settings).sweep_trials.find({"sweepId": sweep_id}, {"_id": 0}).sort("trialNumber", 1))


def best_job(sweep_id: str, settings: Settings | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The best trial's Job, ready to submit on its own (sweep bookkeeping removed), and the best record."""
    doc = get(sweep_id, settings)
    best = doc.get("best")
    if not best:
        return None
    job = job_store.get(best["jobId"], settings, {"_id": 0, "createdDate": 0})
    if job is None:
        return None
    for key in ("sweepId", "trialNumber", "pruneSteps"):
        job.pop(key, None)
    return job, best


def status(sweep_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Trials by state, best so far, wall time, machine time and the machines used."""
    doc = get(sweep_id, settings)
    sid = str(doc["_id"])
    now = orders.now()
    machine_seconds, machines = 0.0, set()
    for order in order_store.matching({"sweepId": sid}, settings, {"startedDate": 1, "finishedDate": 1, "worker": 1,
                                                                   "outcome.worker": 1, "state": 1}):
        started = order.get("startedDate")
        if started:
            machine_seconds += ((order.get("finishedDate") or now) - started).total_seconds()
        worker = (order.get("outcome") or {}).get("worker") or order.get("worker")
        if worker:
            machines.add(worker)
    end = doc.get("finishedDate") or now
    return {
        "sweepId": sid, "name": doc.get("name"), "state": doc["state"], "method": doc.get("method"),
        "objective": doc.get("objective"), "earlyStopping": doc.get("earlyStopping"), "budget": doc.get("budget"),
        "trials": doc.get("counters") or {}, "told": doc.get("toldCount", 0), "best": doc.get("best"),
        "wallSeconds": round((end - doc["startedDate"]).total_seconds(), 1),
        "machineSeconds": round(machine_seconds, 1), "machines": sorted(machines),
        "stopReason": doc.get("stopReason"), "lastError": doc.get("lastError"),
        "driver": (doc.get("driverLease") or {}).get("owner"),
    }


def listing(settings: Settings | None = None) -> list[dict[str, Any]]:
    rows = []
    for doc in store.db(settings).sweeps.find({}, {"text": 0, "spec": 0}).sort("createdDate", -1):
        best = doc.get("best") or {}
        rows.append({"sweepId": str(doc["_id"]), "name": doc.get("name"), "state": doc["state"],
                     "method": doc.get("method"), "told": doc.get("toldCount", 0),
                     "maxTrials": (doc.get("budget") or {}).get("maxTrials"), "best": best.get("value"),
                     "objective": doc.get("objective"),
                     "created": doc.get("createdDate")})
    return rows


# --------------------------------------------------------------------------- the driver


class _Context:
    """What a driver keeps for a sweep while it holds the lease: its spec and its Optuna study."""

    def __init__(self, doc: dict[str, Any], sweep: sweeps.Sweep, study: Any) -> None:
        self.doc = doc
        self.sweep = sweep
        self.study = study
        self.id = str(doc["_id"])
        self.refreshed = 0.0   # monotonic time of the last counters/best refresh
        self.rungs = frozenset(sweep.rung_steps())   # where its trials wait for the pruner's verdict
        self.reported: dict[int, int] = {}   # trial number -> last step given to the study (stored at rungs)


class Driver:
    """Advances running sweeps; run one in the HQ and/or in ``mlqueue sweep --wait``.

    ``step()`` does one pass over the sweeps whose lease it holds or can take; ``run_forever`` repeats
    it every ``poll`` seconds until its stop event is set, then gives its leases back.
    """

    def __init__(self, owner: str | None = None, settings: Settings | None = None, sweep_ids: list[str] | None = None,
                 poll: float = 0.3, lease_seconds: float = 15.0) -> None:
        self.settings = settings or get_settings()
        self.owner = owner or f"driver@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.sweep_ids = sweep_ids
        self.poll = poll
        self.lease_seconds = lease_seconds
        self._contexts: dict[str, _Context] = {}
        self._leases: dict[ObjectId, Any] = {}   # sweep -> until when this driver holds its lease
        self._errors: dict[str, str] = {}
        _quiet_optuna()

    # ----------------------------------------------------------------- loop

    def run_forever(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set; leases are released on the way out so another driver takes over."""
        try:
            ensure_indexes(self.settings)
        except store.TRANSIENT as exc:
            log.warning("sweep driver: store unreachable (%s); will retry", exc)
        waker = verdicts.Waker(self.settings)   # a worker's rung report or finished trial: step at once
        try:
            while not stop.is_set():
                self.step_safely()
                waker.wait(stop, self.poll)
        finally:
            waker.close()
            self.release()

    def step_safely(self) -> dict[str, int]:
        try:
            return self.step()
        except store.TRANSIENT as exc:
            log.warning("sweep driver: store unreachable (%s)", exc)
        except Exception:  # noqa: BLE001 - one bad sweep must not stop the driver for the others
            log.exception("sweep driver step failed")
        self._contexts.clear()
        return {}

    def step(self) -> dict[str, int]:
        """One pass: for each active sweep whose lease we hold, tell, report, prune, ask, close."""
        counts = {"sweeps": 0, "told": 0, "asked": 0, "stopRequests": 0}
        query: dict[str, Any] = {"state": {"$in": list(ACTIVE)}}
        if self.sweep_ids is not None:
            query["_id"] = {"$in": [ObjectId(s) for s in self.sweep_ids]}
        d = store.db(self.settings)
        for doc in list(d.sweeps.find(query, {"_id": 1})):
            held = self._take_lease(doc["_id"])
            if held is None:
                self._contexts.pop(str(doc["_id"]), None)
                continue
            counts["sweeps"] += 1
            try:
                advanced = self._advance(held)
            except store.TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001 - one broken sweep must not hold up the others
                self._contexts.pop(str(doc["_id"]), None)
                self._sweep_failed(doc["_id"], exc)
                continue
            for key, n in advanced.items():
                counts[key] = counts.get(key, 0) + n
        return counts

    def _sweep_failed(self, sweep_oid: ObjectId, exc: Exception) -> None:
        """Show the problem on the sweep (``sweep status``); log it once, not at every poll."""
        message = f"driver error: {type(exc).__name__}: {exc}"
        if self._errors.get(str(sweep_oid)) != message:
            log.exception("sweep %s: %s", sweep_oid, message)
            self._errors[str(sweep_oid)] = message
        store.db(self.settings).sweeps.update_one({"_id": sweep_oid}, {"$set": {"lastError": message}})

    def release(self) -> None:
        """Give back every lease this driver holds (the next driver need not wait for expiry)."""
        self._leases.clear()
        try:
            store.db(self.settings).sweeps.update_many({"driverLease.owner": self.owner},
                                                       {"$set": {"driverLease": None}})
        except store.TRANSIENT:
            pass
        self._contexts.clear()

    def _take_lease(self, sweep_oid: ObjectId) -> dict[str, Any] | None:
        """Hold (or renew) the sweep's lease with one conditional update; None if another driver has it.

        A lease with more than half its time left is only read, not renewed: a step woken by every trial's
        rung report would otherwise pay a store write before it can answer."""
        d = store.db(self.settings)
        now = orders.now()
        until = self._leases.get(sweep_oid)
        if until is not None and (until - now).total_seconds() > self.lease_seconds / 2:
            doc = d.sweeps.find_one({"_id": sweep_oid, "state": {"$in": list(ACTIVE)}, "driverLease.owner": self.owner},
                                    {"text": 0})
            if doc is not None:
                return doc
        until = now + timedelta(seconds=self.lease_seconds)
        doc = d.sweeps.find_one_and_update(
            {"_id": sweep_oid, "state": {"$in": list(ACTIVE)},
             "$or": [{"driverLease": None}, {"driverLease.owner": self.owner}, {"driverLease.until": {"$lt": now}}]},
            {"$set": {"driverLease": {"owner": self.owner, "until": until}}},
            projection={"text": 0}, return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            self._leases.pop(sweep_oid, None)
        else:
            self._leases[sweep_oid] = until
        return doc

    # ----------------------------------------------------------------- one sweep

    def _advance(self, doc: dict[str, Any]) -> dict[str, int]:
        ctx = self._contexts.get(str(doc["_id"]))
        if ctx is None:
            ctx = self._load(doc)
            self._contexts[ctx.id] = ctx
        ctx.doc = doc
        counts = {"told": 0, "asked": 0, "stopRequests": 0}
        d = store.db(self.settings)
        open_records = list(d.sweep_trials.find({"sweepId": ctx.id, "told": False}).sort("trialNumber", 1))
        for record in open_records:
            if record.get("jobId") is None:
                self._submit_recorded(ctx, record)
        job_ids = [r["jobId"] for r in open_records if r.get("jobId")]
        pruning = ctx.sweep.file.earlyStopping.method != "none"
        projection = {"history": 0, "log": 0} if pruning else {"history": 0, "log": 0, "metrics": 0}
        by_job = {o["jobId"]: o for o in order_store.by_job_ids(job_ids, self.settings, projection)}
        unfinished, changed = 0, False
        for record in open_records:
            order = by_job.get(record.get("jobId"))
            if order is None:
                unfinished += 1
                continue
            if pruning:   # intermediate values only cost time when nobody judges them
                counts["stopRequests"] += self._report(ctx, record, order)
            if order["state"] in orders.FINAL:
                counts["told"] += self._tell(ctx, record, order)
            else:
                unfinished += 1
                if record.get("state") != order["state"]:
                    d.sweep_trials.update_one({"_id": record["_id"], "told": False},
                                              {"$set": {"state": order["state"]}})
                    changed = True
        stopping = self._stopping(ctx)
        if stopping and unfinished:
            cancel_unfinished(ctx.id, self.owner, self.settings)
        elif not stopping:
            counts["asked"] += self._ask_more(ctx, unfinished)
        if changed or stopping or counts["told"] or counts["asked"] or \
                time.monotonic() - ctx.refreshed > REFRESH_EVERY:
            self._refresh(ctx)
        return counts

    def _load(self, doc: dict[str, Any]) -> _Context:
        """Open the sweep's study with a fresh sampler, and repair what a crashed driver left half done."""
        import optuna

        sweep = spec_of(doc)
        storage = study_storage(self.settings)
        study = optuna.load_study(study_name=doc["studyName"], storage=storage, pruner=sweep.pruner())
        done_before = len(study.get_trials(deepcopy=False))
        seed = None
        if sweep.file.seed is not None:
            # a restarted driver must not replay the first driver's random draws: offset by trials so far
            seed = sweep.file.seed if sweep.file.method == "qmc" else sweep.file.seed + 7919 * done_before
        study.sampler = sweep.sampler(seed)
        ctx = _Context(doc, sweep, study)
        self._recover(ctx)
        return ctx

    def _recover(self, ctx: _Context) -> None:
        """Re-tell trials claimed but not told; fail trials asked but never recorded (older than a lease)."""
        from optuna.trial import TrialState

        d = store.db(self.settings)
        running = {t.number: t for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        if not running:
            return
        records = {r["trialNumber"]: r for r in d.sweep_trials.find(
            {"sweepId": ctx.id, "trialNumber": {"$in": list(running)}})}
        too_old = orders.now() - timedelta(seconds=self.lease_seconds)
        for number, trial in running.items():
            record = records.get(number)
            if record is not None and record.get("told"):
                self._tell_study(ctx, number, record.get("state"), record.get("value"))
            elif record is None and trial.datetime_start and trial.datetime_start.astimezone() < too_old:
                log.warning("sweep %s: trial %d was asked but never recorded (driver crash); told FAIL", ctx.id, number)
                ctx.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    # ----------------------------------------------------------------- asking

    def _stopping(self, ctx: _Context) -> bool:
        """Stopped by a user, or out of wall time (then the sweep ends as done, with its reason)."""
        doc = ctx.doc
        if doc["state"] == STOPPING:
            return True
        wall = ctx.sweep.file.budget.maxWallSeconds
        if wall and (orders.now() - doc["startedDate"]).total_seconds() > wall:
            store.db(self.settings).sweeps.update_one(
                {"_id": doc["_id"], "state": RUNNING},
                {"$set": {"state": STOPPING, "stopAs": DONE, "stopReason": f"maxWallSeconds {wall:g} reached"}})
            doc.update(state=STOPPING, stopAs=DONE)
            return True
        return False

    def _ask_more(self, ctx: _Context, unfinished: int) -> int:
        """Ask for trials until ``maxParallel`` are unfinished or the trial budget is spent."""
        d = store.db(self.settings)
        asked = d.sweep_trials.count_documents({"sweepId": ctx.id})
        limit = ctx.sweep.max_trials
        parallel = ctx.sweep.file.budget.maxParallel
        made = 0
        while unfinished < parallel and (limit is None or asked < limit):
            if self._ask_one(ctx):
                unfinished += 1
            asked += 1
            made += 1
        return made

    def _ask_one(self, ctx: _Context) -> bool:
        """Ask the study for a trial, record it, then submit its Job. False if its Job was refused."""
        from optuna.trial import TrialState

        trial = ctx.study.ask()
        record: dict[str, Any] = {"sweepId": ctx.id, "trialNumber": trial.number, "trialId": trial._trial_id,
                                  "jobId": None, "told": False, "state": QUEUED, "createdDate": orders.now(),
                                  "reportedStep": None, "value": None}
        try:
            job, chosen = ctx.sweep.trial_job(trial, ctx.id, trial.number)
            record["params"] = _pairs(chosen)
            jobs.validate(job, f"sweep {ctx.sweep.name} trial {trial.number}", self.settings)
        except (jobs.JobError, sweeps.MissingPath) as exc:
            record.update(told=True, state=INVALID, message=str(exc), toldAt=orders.now(), toldBy=self.owner,
                          params=record.get("params", []))
            store.db(self.settings).sweep_trials.insert_one(record)
            self._note_error(ctx, f"trial {trial.number} refused: {exc}")
            self._count_told(ctx)
            ctx.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            return False
        try:
            store.db(self.settings).sweep_trials.insert_one(record)
        except DuplicateKeyError:   # another driver recorded this number: its study view is newer; let it be
            return True
        self._submit(ctx, record, job)
        return True

    def _submit_recorded(self, ctx: _Context, record: dict[str, Any]) -> None:
        """A trial recorded but not linked to a Job (a driver died in between): link or submit it once."""
        d = store.db(self.settings)
        existing = job_store.trial_id(ctx.id, record["trialNumber"], self.settings)
        if existing is not None and order_store.by_job(existing, self.settings, {"_id": 1}):
            job_id = existing
            d.sweep_trials.update_one({"_id": record["_id"]}, {"$set": {"jobId": job_id}})
            record["jobId"] = job_id
            return
        chosen = dict((p["name"], p["value"]) for p in record.get("params", []))
        self._submit(ctx, record, ctx.sweep.job_for(chosen, ctx.id, record["trialNumber"]))

    def _submit(self, ctx: _Context, record: dict[str, Any], job: dict[str, Any]) -> None:
        try:
            datasets.require([job], self.settings)
            [job_id] = orders.submit([job], by=self.owner, settings=self.settings)
        except jobs.JobError as exc:   # e.g. its dataset was deleted meanwhile
            self._note_error(ctx, f"trial {record['trialNumber']} could not be queued: {exc}")
            claimed = store.db(self.settings).sweep_trials.find_one_and_update(
                {"_id": record["_id"], "told": False},
                {"$set": {"told": True, "state": INVALID, "message": str(exc), "toldAt": orders.now()}})
            if claimed:
                self._count_told(ctx)
                self._tell_study(ctx, record["trialNumber"], INVALID, None)
            return
        store.db(self.settings).sweep_trials.update_one({"_id": record["_id"]}, {"$set": {"jobId": job_id}})
        record["jobId"] = job_id

    # ----------------------------------------------------------------- reporting and pruning

    def _report(self, ctx: _Context, record: dict[str, Any], order: dict[str, Any]) -> int:
        """Give the study the trial's new intermediate values; ask the Job to stop if the pruner says so."""
        import optuna

        es = ctx.sweep.file.earlyStopping
        metric, step_key = ctx.sweep.report_metric, es.step
        last = max((s for s in (record.get("reportedStep"), ctx.reported.get(record["trialNumber"])) if s is not None),
                   default=None)
        points = []
        for i, point in enumerate(order.get("metrics") or []):
            value, step = point.get(metric), point.get(step_key, i + 1)
            if not is_number(value) or not is_whole(step):
                continue
            if last is None or step > last:
                points.append((step, float(value)))
                last = step
        if not points:
            return 0
        try:
            trial = optuna.trial.Trial(ctx.study, record["trialId"])
            for step, value in points:
                trial.report(value, step)
            prune = es.method != "none" and order["state"] in orders.ACTIVE and not record.get("stopRequested") \
                and trial.should_prune()
        except RuntimeError as exc:   # the trial was already finished in the study (told by an earlier driver)
            log.debug("sweep %s: trial %s no longer takes reports (%s)", ctx.id, record["trialNumber"], exc)
            prune = False
        update: dict[str, Any] = {"reportedStep": last}
        ctx.reported[record["trialNumber"]] = last
        if prune:
            why = f"{es.method} pruner: {metric} {points[-1][1]:.4g} at {step_key} {points[-1][0]} is not promising"
            orders.request_stop(record["jobId"], why, self.owner, self.settings)
            update["stopRequested"] = why
        if prune or ctx.rungs.intersection(step for step, _ in points):   # the trial waits for this verdict
            verdicts.send(self.settings, record["jobId"], int(order.get("attempts") or 0), last, prune)
            # stored at rungs only (a write per report would slow every answer); a driver taking over
            # re-reports the points after it, which Optuna ignores
            store.db(self.settings).sweep_trials.update_one({"_id": record["_id"]}, {"$set": update})
        record.update(update)
        return int(prune)

    # ----------------------------------------------------------------- telling

    def _tell(self, ctx: _Context, record: dict[str, Any], order: dict[str, Any]) -> int:
        """Claim the telling on the trial record (exactly one driver wins), then tell the study."""
        state, value, message = self._result(ctx, order)
        outcome = order.get("outcome") or {}
        claimed = store.db(self.settings).sweep_trials.find_one_and_update(
            {"_id": record["_id"], "told": False},
            {"$set": {"told": True, "toldAt": orders.now(), "toldBy": self.owner, "state": state, "value": value,
                      "message": message, "startedDate": order.get("startedDate"),
                      "finishedDate": order.get("finishedDate"), "attempts": order.get("attempts"),
                      "worker": outcome.get("worker") or order.get("worker")}})
        if claimed is None:
            return 0
        self._count_told(ctx)
        self._tell_study(ctx, record["trialNumber"], state, value)
        if order["state"] == orders.SUCCEEDED and ctx.sweep.file.objective.field not in outcome:
            self._stop_for_missing_objective(ctx, record, outcome)
        return 1

    def _stop_for_missing_objective(self, ctx: _Context, record: dict[str, Any], outcome: dict[str, Any]) -> None:
        """A trial finished without the objective field at all: a typo, not bad luck. Stop at once and say
        which fields the Outcome has, rather than spend the whole budget on trials that all count as failed."""
        reason = missing_objective(ctx.sweep.file.objective.field, outcome, record["trialNumber"])
        store.db(self.settings).sweeps.update_one(
            {"_id": ctx.doc["_id"], "state": RUNNING},
            {"$set": {"state": STOPPING, "stopAs": STOPPED, "stopReason": reason}})
        log.warning("sweep %s: %s", ctx.id, reason)
        ctx.doc.update(state=STOPPING, stopAs=STOPPED)

    def _result(self, ctx: _Context, order: dict[str, Any]) -> tuple[str, float | None, str | None]:
        """(trial state, objective value, note) from a final Order."""
        outcome = order.get("outcome") or {}
        field = ctx.sweep.file.objective.field
        if order["state"] == orders.SUCCEEDED:
            value = outcome.get(field)
            if is_number(value):
                return orders.SUCCEEDED, float(value), None
            return orders.FAILED, None, f"the outcome has no number in {field!r}, so the trial counts as failed"
        if order["state"] == orders.PRUNED:
            value = outcome.get(ctx.sweep.report_metric)
            return orders.PRUNED, float(value) if is_number(value) else None, outcome.get("message")
        return order["state"], None, outcome.get("message")

    def _tell_study(self, ctx: _Context, number: int, state: str | None, value: float | None) -> None:
        from optuna.trial import TrialState

        if state == orders.SUCCEEDED and value is not None:
            ctx.study.tell(number, value, skip_if_finished=True)
        elif state == orders.PRUNED:
            ctx.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            ctx.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def _count_told(self, ctx: _Context) -> None:
        store.db(self.settings).sweeps.update_one({"_id": ctx.doc["_id"]}, {"$inc": {"toldCount": 1}})

    def _note_error(self, ctx: _Context, message: str) -> None:
        log.warning("sweep %s: %s", ctx.id, message)
        store.db(self.settings).sweeps.update_one({"_id": ctx.doc["_id"]}, {"$set": {"lastError": message}})

    # ----------------------------------------------------------------- bookkeeping

    def _refresh(self, ctx: _Context) -> None:
        """Counters and best from the trial records (recomputed, so never double-counted); close if done."""
        ctx.refreshed = time.monotonic()
        d = store.db(self.settings)
        counters = {row["_id"]: row["n"] for row in d.sweep_trials.aggregate(
            [{"$match": {"sweepId": ctx.id}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}])}
        asked = sum(counters.values())
        unfinished = d.sweep_trials.count_documents({"sweepId": ctx.id, "told": False})
        direction = 1 if ctx.sweep.direction == "minimize" else -1
        top = list(d.sweep_trials.find({"sweepId": ctx.id, "state": orders.SUCCEEDED, "value": {"$ne": None}})
                   .sort("value", direction).limit(1))
        best = None
        if top:
            t = top[0]
            best = {"trialNumber": t["trialNumber"], "jobId": t["jobId"], "value": t["value"], "params": t["params"],
                    "finishedDate": t.get("finishedDate")}
        update: dict[str, Any] = {"counters": {**counters, "asked": asked, "unfinished": unfinished}, "best": best,
                                  "updatedDate": orders.now()}
        doc = ctx.doc
        limit = ctx.sweep.max_trials
        if unfinished == 0 and (doc["state"] == STOPPING or (limit is not None and asked >= limit)):
            final = (doc.get("stopAs") or DONE) if doc["state"] == STOPPING else DONE
            update.update(state=final, finishedDate=orders.now(), driverLease=None)
            self._contexts.pop(ctx.id, None)
        d.sweeps.update_one({"_id": doc["_id"], "driverLease.owner": self.owner}, {"$set": update})


def missing_objective(field: str, outcome: dict[str, Any], trial: int) -> str:
    """Why a sweep stops when its objective is not a field of a finished trial's Outcome."""
    numeric = [k for k, v in outcome.items() if is_number(v)]
    close = difflib.get_close_matches(field, numeric, n=1, cutoff=0.5) or \
        difflib.get_close_matches(field, list(outcome), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"the objective {field!r} is not in the Outcome of trial {trial} (its numeric fields: "
            f"{', '.join(numeric) or 'none'}; all: {', '.join(outcome)}){hint} Fix `objective:` in the "
            "sweep file and start it again; the finished trials are kept.")


def _pairs(chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """Chosen values as a list: parameter names hold dots and brackets, which make poor Mongo keys."""
    return [{"name": k, "value": v} for k, v in chosen.items()]
