"""What a worker machine does: register itself, take Orders, run scripts in-process, report back.

One Celery task, ``mlqueue.run_order(jobId, delivery)``, runs inside a Celery pool process. While the
script runs, a watch thread heartbeats the Order, enforces the Job's time limit and notices when the
Order was taken away (cancelled, or presumed lost by the reaper). To stop a script it first raises
``JobInterrupted`` inside it; if the script does not return within ``timeout_grace`` the pool process
kills itself (Celery replaces it, and re-delivers the message, which ``orders.claim`` then ignores).

Over 400 lines because one attempt (claim, run, watch, report, finish) is one story best read in one
place; what is not part of it lives beside it (``owner``, ``routing``, ``reports``, ``checkpoints``).
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from bson import ObjectId
from celery import signals

from ml_scripts._json_safe import json_safe
from mlqueue import (
    artifacts,
    checkpoints,
    datasets,
    deferred,
    metric_lines,
    names,
    orders,
    owner,
    routing,
    scripts,
    speed,
    store,
)
from mlqueue import capabilities as machine
from mlqueue.celery_app import app
from mlqueue.errors import ConfigError
from mlqueue.reports import ReportSender
from mlqueue.settings import Settings, get_settings
from mlqueue.store import jobs as job_store
from mlqueue.store import workers as worker_store
from mlqueue.values import is_whole
from mlqueue.verdicts import Rungs, wake

log = logging.getLogger(__name__)
TRACEBACK_LINES = 25


class JobInterrupted(BaseException):
    """Raised inside a running script to stop it (BaseException: a script's ``except Exception`` can't eat it)."""


class JobPruned(JobInterrupted):
    """Raised from ``report`` when the Job was asked to stop early; its partial results are kept."""


# --------------------------------------------------------------------------- the task


@app.task(name="mlqueue.run_order", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_order(self: Any, job_id: str, delivery: str) -> str:
    """Celery entry point: everything else is plain functions."""
    carried = getattr(self.request, orders.CARRIED_JOB, None)   # the Job, when its message carries it
    return execute(job_id, delivery, self.request.hostname or socket.gethostname(), carried=carried,
                   carried_order=getattr(self.request, orders.CARRIED_ORDER, None),
                   carried_script=getattr(self.request, orders.CARRIED_SCRIPT, None))


def execute(job_id: str, delivery: str, worker: str, settings: Settings | None = None,
            carried: dict[str, Any] | None = None, carried_order: Any = None, carried_script: Any = None) -> str:
    """Run one delivery of one Order to its end. Returns what happened, for logs and tests.

    ``carried``: the Job as its message carried it (``orders.carry``), which spares reading it;
    ``carried_order``: the Order as submitted (its header's text), which spares the read before the claim;
    ``carried_script``: the script version it runs (``scripts.version_now``), which spares asking for it."""
    settings = settings or get_settings()
    if placed := speed.destination(job_id, delivery, worker, settings):  # a faster machine would finish it sooner
        order, target, why = placed
        return "placed" if orders.reroute(order, {"placedOn": target}, why, worker, settings) else "ignored"
    if swapped := speed.placed_first(job_id, delivery, worker, settings):  # my placed Jobs first
        (job_id, delivery, carried_script), carried, carried_order = swapped, None, None
    as_sent = orders.carried_order(carried_order, job_id, delivery)
    if isinstance(carried, dict) and isinstance(carried.get("scriptName"), str):
        job = {**carried, "_id": ObjectId(job_id)}
    else:
        job = job_store.get(job_id, settings, durable=True)
    if job is None:
        log.warning("message for unknown job %s ignored", job_id)
        return "ignored"
    try:  # the script is made ready first, so the Order can be claimed and started in one move
        script = scripts.resolve(job["scriptName"], settings, pinned=job.get("scriptHash"), carried=carried_script)
        module = scripts.runner_for(script, job)
    except Exception as exc:  # noqa: BLE001 - any failure to load is this Job's error, not the worker's
        order = orders.claim(job_id, delivery, worker, settings, carried=as_sent)
        running = order and orders.start(order, {"name": job["scriptName"]}, settings)
        if not running:
            return "ignored"
        orders.finish(running, orders.FAILED, error_outcome(exc), "script could not be loaded", settings)
        return "failed"
    running = orders.claim(job_id, delivery, worker, settings, start_with=script.identity, carried=as_sent)
    if running is None:
        return "ignored"
    workspace = Workspace(running, settings)
    try:
        try:
            script_job = workspace.prepare(_script_job(job))
        except Exception as exc:  # noqa: BLE001 - e.g. a dataset deleted after submit: this Job's failure
            orders.finish(running, orders.FAILED, error_outcome(exc), "inputs could not be prepared", settings)
            return "failed"
        return Attempt(running, settings, workspace).run(module, script_job)
    finally:
        workspace.cleanup()


def _script_job(job: dict[str, Any]) -> dict[str, Any]:
    """The Job as the script sees it: its own fields plus ``jobId``."""
    out = {k: v for k, v in job.items() if k not in ("_id", "createdDate")}
    out["jobId"] = str(job["_id"])
    return out


class Workspace:
    """A Job's working directory: its datasets fetched in, the files it writes collected out."""

    def __init__(self, order: dict[str, Any], settings: Settings) -> None:
        self.order = order
        self.settings = settings
        self.project = order.get("projectName", "default")
        self.dir = Path(settings.home) / "work" / f"{order['jobId']}-{order['attempts']}"
        self.resumed: dict[str, Any] | None = None

    def prepare(self, job: dict[str, Any]) -> dict[str, Any]:
        """Fill in ``dataPath``/``dataPaths`` (local cached copies) and an empty ``writePath``."""
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "out").mkdir(parents=True)
        cache = datasets.Cache(self.settings)
        if isinstance(job.get("dataFileName"), str) and job["dataFileName"]:
            job["dataPath"] = str(cache.path_for(self.project, job["dataFileName"]))
        if isinstance(job.get("dataFileNames"), list):
            job["dataPaths"] = [str(cache.path_for(self.project, n)) for n in job["dataFileNames"]]
        job["writePath"] = str(self.dir / "out")
        self.resumed = checkpoints.prepare(job, self.order, self.dir, self.settings)
        return job

    def collect(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """Upload the files the Outcome lists; keep their store ids in the Outcome instead of paths."""
        if isinstance(outcome.get("artifacts"), list):
            outcome["artifacts"] = [self._upload_artifact(a) for a in outcome["artifacts"]]
        if isinstance(outcome.get("datasets"), list):
            outcome["datasets"] = [self._push_dataset(d) for d in outcome["datasets"]]
        return outcome

    def _output(self, item: Any) -> Path | str:
        """The file an Outcome entry names, if it lies inside this Job's directory; else why not."""
        raw = item.get("path") if isinstance(item, dict) else None
        if not isinstance(raw, str) or not raw:
            return "file not found"
        try:  # only what the Job wrote is collected: never a file elsewhere on this machine
            path = names.inside(self.dir, raw)
        except names.UnsafeName:
            return f"refused: {raw} is outside the Job's writePath"
        return path if path.is_file() else "file not found"

    def _upload_artifact(self, item: Any) -> Any:
        path = self._output(item)
        if isinstance(path, str):
            return {**(item if isinstance(item, dict) else {"value": item}), "error": path}
        try:
            return artifacts.upload(self.order["jobId"], path, item.get("name"), self.settings)
        except artifacts.ArtifactError as exc:
            return {**item, "error": str(exc)}

    def _push_dataset(self, item: Any) -> Any:
        path = self._output(item)
        if isinstance(path, str):
            return {**(item if isinstance(item, dict) else {"value": item}), "error": path}
        project = item.get("project") or self.project
        try:
            meta = datasets.push(path, project, item.get("fileName") or path.name,
                                 source=f"job {self.order['jobId']}", settings=self.settings)
        except datasets.DatasetError as exc:
            return {**item, "error": str(exc)}
        return {"project": project, "fileName": meta["name"], "sha256": meta["sha256"], "size": meta["size"]}

    def cleanup(self) -> None:
        deferred.remove_dir(self.dir)   # in the background: the next Job need not wait for it


class LogSink(io.TextIOBase):
    """Tees a script's stdout/stderr to the worker's own stream and, in batches, to the Order's log."""

    def __init__(self, stream: Any, stream_name: str, buffer: list[dict[str, Any]], lock: threading.Lock,
                 on_line: Any = None) -> None:
        self.stream, self.stream_name, self.buffer, self.lock = stream, stream_name, buffer, lock
        self.on_line = on_line  # called after a complete line arrives (the Attempt starts its flusher)
        self.partial = ""

    def write(self, text: str) -> int:
        try:
            self.stream.write(text)
        except Exception:  # noqa: BLE001 - the worker's own stream failing must not fail the job
            pass
        with self.lock:
            self.partial += text
            *lines, self.partial = self.partial.split("\n")
            self.buffer.extend({"at": orders.now(), "stream": self.stream_name, "line": ln[:2000]} for ln in lines)
        if lines and self.on_line:
            self.on_line()
        return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except Exception:  # noqa: BLE001
            pass


class Attempt:
    """One run of a script for one Order, with its heartbeat, deadline and stop handling."""

    def __init__(self, order: dict[str, Any], settings: Settings, workspace: Workspace | None = None) -> None:
        self.order = order
        self.settings = settings
        self.workspace = workspace
        self.log_lines: list[dict[str, Any]] = []
        self.log_lock = threading.Lock()
        self.flush_lock = threading.Lock()  # one flush at a time, so batches reach the store in order
        self.stop_reason: str | None = None
        self.checkpointed = False
        self.last_metrics: dict[str, Any] = {}
        self.reports: ReportSender | None = None   # made at the first report (see mlqueue.reports)
        self.rungs: Rungs | None = None    # a sweep trial's pruner steps (see mlqueue.verdicts)
        self.done = threading.Event()
        self.flusher: threading.Thread | None = None   # started at the script's first output line
        self.main_thread = threading.get_ident()
        self.started = time.monotonic()
        self.deadline = self.started + order["timeLimit"]

    def run(self, module: Any, job: dict[str, Any]) -> str:
        watch = threading.Thread(target=self._watch, name="mlqueue-watch", daemon=True)
        watch.start()
        state, why = orders.FAILED, "script raised an error"
        saved = sys.stdout, sys.stderr
        sys.stdout = LogSink(saved[0], "stdout", self.log_lines, self.log_lock, self._start_flusher)
        sys.stderr = LogSink(saved[1], "stderr", self.log_lines, self.log_lock, self._start_flusher)
        self.rungs = Rungs.of(job, self.order)
        try:
            result = module.run(job, self.report)
            outcome, state, why = interpret(result)
        except JobPruned as stop:
            outcome, state, why = self._pruned_outcome(str(stop)), orders.PRUNED, f"stopped early: {stop}"
        except JobInterrupted:
            outcome = None
        except Exception as exc:  # noqa: BLE001 - a crashing script is an Outcome, not a worker crash
            outcome = error_outcome(exc)
        finally:
            sys.stdout, sys.stderr = saved
            if self.reports:
                self.reports.close()   # every report stored before the final move
            self.done.set()
            self.flush_log()
        if self.stop_reason or outcome is None:
            return self.stop_reason or "interrupted"
        outcome.update(self._timing())
        if self.rungs and self.rungs.waited:
            outcome["rungWaits"] = self.rungs.summary()
        if self.workspace:
            outcome = self.workspace.collect(outcome)
            if self.workspace.resumed:
                outcome["resumed"] = checkpoints.describe(self.workspace.resumed, self.order["attempts"])
        if orders.finish(self.order, state, outcome, why, self.settings, copy=deferred.copy_outcome) and \
                state == orders.SUCCEEDED and \
                (self.order.get("checkpoint") or self.checkpointed):  # a Job that kept none costs no lookup
            checkpoints.remove(self.order["jobId"], self.settings)
        if self.order.get("sweepId"):
            wake(self.settings)   # the sweep's driver tells it and queues the next trial now
        return state

    def flush_log(self) -> None:
        """Send buffered output lines to the Order, and the metric lines among them as metric points
        (every ``log_flush_interval`` while the script runs, and once at the end)."""
        with self.flush_lock:
            with self.log_lock:
                lines, self.log_lines[:] = list(self.log_lines), []
            if not lines:
                return
            try:
                orders.append_log(self.order, lines, self.settings)
                for point in filter(None, (metric_lines.parse(ln["line"]) for ln in lines
                                           if ln["stream"] == "stdout")):
                    if "checkpoint" in point and not self._printed_checkpoint(point):
                        continue
                    if orders.record_metrics(self.order, json_safe(point, dates=True), self.settings) == "ok":
                        self.last_metrics = point
            except store.TRANSIENT as exc:
                log.warning("could not store %d log lines: %s", len(lines), exc)

    def _start_flusher(self) -> None:
        """The live-log thread, started at the first output line: a silent script costs no thread."""
        if self.flusher is None:
            with self.log_lock:
                if self.flusher is not None:
                    return
                self.flusher = threading.Thread(target=self._flush_often, name="mlqueue-log-flush", daemon=True)
            self.flusher.start()

    def _flush_often(self) -> None:
        """Live output: a script's lines reach the store within ``log_flush_interval`` (a write only when
        there is something new, so a quiet script costs nothing). A write into an Order whose log has
        grown long costs more (tens of ms at thousands of lines), so the wait stretches to keep the
        store's time on one chatty script under about a fifth."""
        wait = self.settings.log_flush_interval
        while not self.done.wait(wait):
            started = time.monotonic()
            self.flush_log()
            wait = max(self.settings.log_flush_interval, 4 * (time.monotonic() - started))

    def report(self, checkpoint: str | Path | None = None, **metrics: Any) -> None:
        """Given to the script: store intermediate metrics on the Order as they come; with ``checkpoint``
        (a file or folder the script just saved) also upload it as the Job's newest checkpoint."""
        if self.stop_reason:
            raise JobInterrupted(self.stop_reason)
        if self.reports is None:
            self.reports = ReportSender(self.order, self.settings)
        if checkpoint is not None:
            self._answer(self.reports.drain())   # kept only after the reports before it are stored
            self._save_checkpoint(checkpoint, metrics.get("epoch"))
            if set(metrics) <= {"epoch", "step"}:   # a checkpoint alone: the epoch's metrics came already
                return
        metrics = json_safe(metrics, dates=True)
        self._answer(self.reports.put(metrics))   # stored in the background; the answer of earlier writes
        self.last_metrics = metrics
        if self.rungs and (step := self.rungs.at(metrics)) is not None:   # where the pruner decides: wait
            self._answer(self.reports.drain())
            self._answer(self.rungs.wait(step, self.settings))

    def _answer(self, answer: str) -> None:
        """The store's answer to this attempt's reports: stop the script if pruned or no longer ours."""
        if answer == "lost":
            self.stop_reason = "released"
            raise JobInterrupted("this attempt no longer holds the order")
        if answer == "stop":
            raise JobPruned("pruned")

    def _printed_checkpoint(self, point: dict[str, Any]) -> bool:
        """A printed ``checkpoint=PATH`` (command-line scripts): upload it if it lies in the Job's own
        directory. True when the point has metrics left to record."""
        path = point.pop("checkpoint")
        try:
            inside = names.inside(self.workspace.dir, str(path)) if self.workspace else None
        except names.UnsafeName:
            inside = None
        if inside is None or not inside.exists():
            log.warning("printed checkpoint %r ignored: not a file in the Job's directory", path)
        else:
            self._save_checkpoint(inside, point.get("epoch"))
        return not set(point) <= {"epoch", "step"}

    def _save_checkpoint(self, path: str | Path, step: Any) -> None:
        resumed = (self.workspace.resumed or {}).get("step") if self.workspace else None
        step = step if is_whole(step) else None
        self.checkpointed = True  # even a failed upload may have left a file behind
        try:
            checkpoints.save(self.order, path, step, self.settings, resumed_step=resumed)
        except store.TRANSIENT as exc:  # a checkpoint is an optimisation: the Job goes on without it
            log.warning("checkpoint of job %s not stored: %s", self.order["jobId"], exc)

    def _pruned_outcome(self, why: str) -> dict[str, Any]:
        """A pruned Job's Outcome: the last reported metrics stand in for the final ones."""
        last = dict(self.last_metrics)
        loss = last.get("val_loss", last.get("loss"))  # a trainer's validation loss is what it is judged by
        return {**last, "status": 200, "reason": "pruned", "pruned": True, "message": why,
                "loss": loss, "metric": last.get("metric")}

    def _timing(self) -> dict[str, Any]:
        return {"durationSeconds": round(time.monotonic() - self.started, 3),
                "startedDate": self.order.get("startedDate"), "script": self.order.get("script")}

    def _watch(self) -> None:
        """Heartbeat until the script ends; stop it at its deadline or when the Order is taken away."""
        while not self._wait_unless_done():
            if time.monotonic() >= self.deadline:
                limit = self.order["timeLimit"]
                self._stop("timeout", {**orders.system_outcome(self.order, "timeout",
                                                                f"killed: time limit {limit:g}s exceeded"),
                                       **self._timing()})
                return
            self.flush_log()
            try:
                still_ours = orders.heartbeat(self.order, self.settings)
            except store.TRANSIENT as exc:
                log.warning("heartbeat failed (store unreachable: %s); the job keeps running", exc)
                continue
            if not still_ours:
                self._stop("released", None)
                return

    def _wait_unless_done(self) -> bool:
        """Wait one watch period. Time this process spent stopped (an owner pause: SIGSTOP) is added to
        the deadline, as the worker's owner watch adds it to the Order's."""
        wait, before = self._next_wait(), time.monotonic()
        if self.done.wait(wait):
            return True
        stopped = time.monotonic() - before - wait
        if stopped > 1.0:
            self.deadline += stopped
        return False

    def _next_wait(self) -> float:
        return max(0.05, min(self.settings.heartbeat_every, self.deadline - time.monotonic()))

    def _stop(self, reason: str, outcome: dict[str, Any] | None) -> None:
        """Record the final Outcome first (so nothing is lost if we must kill), then stop the script."""
        self.stop_reason = reason
        if outcome is not None:
            orders.finish(self.order, orders.FAILED, outcome, outcome["message"], self.settings)
        log.warning("stopping job %s (%s)", self.order["jobId"], reason)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.main_thread), ctypes.py_object(JobInterrupted))
        if not self.done.wait(self.settings.timeout_grace):
            log.error("job %s ignored the stop request; killing its process", self.order["jobId"])
            os.kill(os.getpid(), signal.SIGKILL)


def interpret(result: Any) -> tuple[dict[str, Any], str, str]:
    """Turn what ``run`` returned into (Outcome, final state, history note)."""
    if not isinstance(result, dict):
        exc = TypeError(f"run() returned {type(result).__name__}, expected a dict of outcome fields "
                        "such as {'status': 200, 'loss': 0.1, 'metric': 0.9}")
        return error_outcome(exc), orders.FAILED, "script returned no outcome"
    outcome = json_safe(result, dates=True)
    outcome.setdefault("status", 200)
    try:
        status = int(outcome["status"])
    except (TypeError, ValueError):
        status = 500
    if status >= 400:
        outcome.setdefault("reason", "rejected")
        return outcome, orders.FAILED, f"script answered status {outcome['status']}"
    return outcome, orders.SUCCEEDED, "script finished"


def error_outcome(exc: BaseException) -> dict[str, Any]:
    """An Outcome for a script that raised: type, message and the tail of the traceback."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    tail = "".join(tb).splitlines()[-TRACEBACK_LINES:]
    return {"status": 500, "reason": "error", "loss": None, "metric": None,
            "message": f"{type(exc).__name__}: {exc}",
            "error": {"type": type(exc).__name__, "message": str(exc), "traceback": "\n".join(tail)}}


# --------------------------------------------------------------------------- worker registration


def capabilities() -> dict[str, Any]:
    """What this machine offers (``mlqueue/capabilities.py``), as its routing last published it."""
    subscriptions = routing.subscriptions()
    return subscriptions.caps if subscriptions and subscriptions.caps else machine.detect()


def register(name: str, settings: Settings | None = None) -> None:
    worker_store.register(name, {"nodeName": name, "host": socket.gethostname(), "pid": os.getpid(),
                                 "capabilities": capabilities()}, settings)


class WorkerLife:
    """The worker main process' background duties: heartbeat its Worker document and run a reaper."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.stop = threading.Event()
        self.reaper = orders.Reaper(f"reaper@{name}", settings, full_repair=False)  # the HQ's does the full one

    def start(self) -> None:
        threading.Thread(target=self._beat, name="mlqueue-worker-heartbeat", daemon=True).start()
        threading.Thread(target=self.reaper.run_forever, args=(self.stop,), name="mlqueue-reaper",
                         daemon=True).start()

    def _beat(self) -> None:
        while not self.stop.wait(self.settings.heartbeat_every):
            try:
                worker_store.heartbeat(self.name, self.settings)
                if routing.subscriptions():
                    routing.subscriptions().refresh()  # new requirement classes, changed capabilities
            except store.TRANSIENT as exc:
                log.warning("worker heartbeat failed: %s", exc)


_life: WorkerLife | None = None


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    global _life
    settings = get_settings()
    name = getattr(sender, "hostname", None) or socket.gethostname()
    store.ensure_indexes(settings)
    register(name, settings)
    _life = WorkerLife(name, settings)
    _life.start()
    try:
        owner.start(name, settings, sender, _life.stop)
    except ConfigError as exc:   # e.g. MLQUEUE_IDLE_PROBE names no probe: the worker's start-up ends here
        raise SystemExit(str(exc)) from None
    log.info("mlqueue worker %s ready (queue %s, store %s)", name, settings.queue, settings.mongo_db)


@signals.worker_shutdown.connect
def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    if _life is None:
        return
    _life.stop.set()
    try:
        worker_store.goodbye(_life.name, _life.settings)
    except store.TRANSIENT:
        pass


@signals.worker_process_shutdown.connect
def _on_pool_process_shutdown(**_: Any) -> None:
    """Outcome copies still pending are written before a pool process exits (else the reaper does)."""
    deferred.flush()


@signals.worker_process_init.connect
def _on_pool_process_init(**_: Any) -> None:
    """A forked pool process must not reuse its parent's MongoDB sockets."""
    store.forget_clients()
