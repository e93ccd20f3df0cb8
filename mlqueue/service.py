"""The use cases: everything a person can ask of an HQ, written once for every interface.

The CLI (through ``client.LocalClient``), the HTTP API (``mlqueue/api/<resource>.py``) and the
dashboard all call these functions, so "validate, then store" or "an Order with its Job" cannot drift
apart between them. A use case takes plain arguments plus ``settings`` (and ``by``, who asks, when it
changes something), returns plain data (dicts of store values, shaped as ``mlqueue.models`` describes;
the API makes them JSON), and raises only ``mlqueue.errors`` (``InvalidInput`` 422, ``NotFound`` 404,
``Conflict`` 409), which every interface reports the same way. Nothing here knows about HTTP, click or Dash.

To add a use case:
  1. write ``def verb_noun(..., settings: Settings) -> ...`` here, calling the module that owns the
     data (``orders``, ``outcomes``, ``datasets``, ...), never the store directly in new code;
  2. expose it: a route in ``mlqueue/api/<resource>.py`` (one ``include_router`` line in
     ``mlqueue/api/__init__.py`` for a new resource), a method of the same name on both
     ``LocalClient`` and ``HttpClient`` in ``mlqueue/client.py``, and the CLI command calling the client;
  3. add it to the contract tests, which run every client method over both clients.

Over 400 lines on purpose: this file is the list of what the HQ does, read top to bottom by whoever adds
an interface. Each use case is a few lines delegating to its noun's module; when it outgrows ~600
lines it becomes a package with one module per section below (jobs, results, farm, data, sweeps).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlqueue import datasets, house, jobs, live_log, orders, outcomes, scripts
from mlqueue import script_versions as versions
from mlqueue.errors import Conflict, NotFound
from mlqueue.models import Order
from mlqueue.settings import Settings
from mlqueue.store import jobs as job_store
from mlqueue.store import orders as order_store
from mlqueue.store import workers as worker_store

# --------------------------------------------------------------------------- Jobs and Orders


def submit(documents: list[Any], by: str, settings: Settings, where: list[str] | None = None) -> list[str]:
    """Validate every Job (one bad Job refuses them all, ``InvalidInput``), then store and queue them.

    ``where`` names each document in error messages (file names for the CLI); default ``jobs[i]``.
    """
    labels = where or [f"jobs[{i}]" for i in range(len(documents))]
    valid = jobs.validate_all(list(zip(labels, documents, strict=True)), settings)
    datasets.require(valid, settings)   # a missing dataset refuses them all, before anything is stored
    return orders.submit(valid, by=by, settings=settings)


def find_order(job_id: str, settings: Settings) -> Order:
    """The Order of a Job, by full id or unique prefix; ``NotFound`` otherwise."""
    try:
        return orders.get(job_id, settings)
    except orders.OrderError as exc:
        raise NotFound(str(exc)) from None


def job(job_id: str, settings: Settings) -> dict[str, Any] | None:
    """The Job document as submitted (without ``_id``), or None."""
    return job_store.get(job_id, settings, {"_id": 0})


def show(job_id: str, settings: Settings, metrics: int | None = None) -> Order:
    """One Order (state, history, log, metrics, Outcome) with its Job under ``job``, and why it waits.

    ``metrics`` keeps only that many of the latest metric reports (None: all kept).
    """
    order, fields = outcomes.order_with_job(job_id, settings)
    order.pop("_id", None)
    order["job"] = fields
    if metrics is not None:
        order["metrics"] = order.get("metrics", [])[-metrics:] if metrics else []
    return order


def job_and_state(job_id: str, settings: Settings) -> dict[str, Any]:
    """A Job's fields and its Order's state."""
    order = find_order(job_id, settings)
    return {"jobId": order["jobId"], "state": order["state"], "job": job(order["jobId"], settings) or {}}


def states(job_ids: list[str], settings: Settings) -> dict[str, str]:
    """The state of each named Job's Order (unknown ids are left out)."""
    return order_store.states_of(job_ids, settings)


def cancel(job_id: str, by: str, settings: Settings) -> Order:
    """Cancel a Job that has not finished (``Conflict`` if it has); a running one stops within a heartbeat."""
    order = find_order(job_id, settings)
    try:
        return orders.cancel(order["jobId"], by=by, settings=settings)
    except orders.OrderError as exc:
        raise Conflict(str(exc)) from None


def requeue(job_id: str, by: str, settings: Settings) -> dict[str, str]:
    """Run a Job again: ``{"jobId": the Job that will run, "requeuedFrom": the one asked for}``."""
    order = find_order(job_id, settings)
    try:
        new_id = orders.requeue(order["jobId"], by=by, settings=settings)
    except orders.OrderError as exc:
        raise Conflict(str(exc)) from None
    return {"jobId": new_id, "requeuedFrom": order["jobId"]}


def final_order(job_id: str, settings: Settings) -> Order | None:
    """The Order if it is final (without history and metrics), else None."""
    return order_store.in_state_of(job_id, orders.FINAL, settings, {"metrics": 0, "history": 0})


def stored_job(job_id: str, settings: Settings) -> dict[str, Any] | None:
    """The Job document exactly as stored, ``_id`` included (the seeds' clients read it), or None."""
    return job_store.get(job_id, settings)


def stored_documents(job_id: str, settings: Settings) -> dict[str, Any]:
    """A Job and its Order as stored (the Order without its log and metric series)."""
    order = order_store.by_job(job_id, settings, {"log": 0, "metrics": 0})
    job = stored_job(job_id, settings)
    if job is None or order is None:
        raise NotFound(f"no job {job_id}")
    return {"job": job, "order": order}


def orders_oldest_first(settings: Settings, offset: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Orders as stored, oldest first, without their logs and metric series (the seeds' Boss listed them so)."""
    return order_store.oldest_first(offset, limit, settings, {"log": 0, "metrics": 0})


def jobs_page(settings: Settings, where: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
    """Jobs as submitted, newest first, each with ``jobId``."""
    docs = outcomes.job_page(settings, where, offset, limit)
    return [{"jobId": str(d.pop("_id")), **d} for d in docs]


def orders_page(settings: Settings, where: dict[str, Any] | None = None, offset: int = 0,
                limit: int = 50) -> list[dict[str, Any]]:
    """Orders (without history and metrics) with their Jobs, newest first."""
    return outcomes.order_page(settings, where or {}, offset, limit)


# --------------------------------------------------------------------------- results


def results(settings: Settings, sort: str = "loss", descending: bool = False, state: str | None = None,
            limit: int | None = None, ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Every Job (finished or not) with its Outcome and hyperparameters, best first."""
    query = {"jobId": {"$in": ids}} if ids else None
    return outcomes.results(settings, sort=sort, descending=descending, state=state, limit=limit, query=query)


def outcomes_page(settings: Settings, sort: str, descending: bool, match: dict[str, Any],
                  job_ids: list[str] | None, offset: int, limit: int) -> list[dict[str, Any]]:
    """Finished Jobs, best first: rows with the sort field in order, then the rest newest first."""
    return outcomes.page(settings, sort=sort, descending=descending, match=match, job_ids=job_ids,
                         offset=offset, limit=limit)


def job_ids_where(settings: Settings, where: dict[str, Any]) -> list[str]:
    """Ids of the Jobs whose Orders match ``where`` (projectName, scriptName, sweepId...)."""
    return outcomes.job_ids(settings, where)


# --------------------------------------------------------------------------- the farm


def status(settings: Settings) -> dict[str, Any]:
    """Orders counted by state, the workers, and why queued Jobs wait (what ``mlqueue status`` shows)."""
    found = outcomes.workers(settings)
    return {"orders": outcomes.state_counts(settings), "workers": found, "waiting": house.waiting(settings, found)}


def workers(settings: Settings) -> list[dict[str, Any]]:
    """Registered workers, their capabilities, what each runs and its heartbeat's age."""
    return outcomes.workers(settings)


def worker_command(name: str, action: str, by: str, settings: Settings) -> dict[str, Any]:
    """Pause (suspend its Job, take none), drain (finish its Job, take none) or resume a worker.

    ``name`` is ``w1@host`` or the unique ``w1``; the worker acts within a few seconds (``owner``).
    Returns ``{"worker", "action", "message"}``; ``NotFound`` names the known workers.
    """
    from mlqueue import worker_control

    return worker_control.command(name, action, by, settings)  # type: ignore[arg-type]


def worker_counts(settings: Settings) -> dict[str, int]:
    """Workers registered, and those online with a fresh heartbeat (cheap: two counts)."""
    return worker_store.counts(settings)


# --------------------------------------------------------------------------- scripts and datasets


def scripts_list(settings: Settings) -> list[dict[str, Any]]:
    """The scripts a Job may name: pushed bundles (which override) and built-in files."""
    return scripts.available(settings)


def script_check(name: str, settings: Settings) -> None:
    """``NotFound`` unless a Job could run the script ``name``."""
    scripts.resolve(name, settings)


# --------------------------------------------------------------------------- script versions, live output


def script_versions(name: str, settings: Settings) -> list[dict[str, Any]]:
    """Every version of a script, newest first (the first is what Jobs naming it run); ``NotFound`` if none."""
    found = versions.versions(name, settings)
    if not found:
        raise NotFound(f"no script {name!r}: save one (POST /scripts/{name}/versions) or push it")
    return found


def script_source(name: str, version: str | None, settings: Settings) -> dict[str, Any]:
    """One version's entry-file text, with ``previous`` and ``current``."""
    return versions.source(name, version, settings)


def save_script_version(name: str, text: str, base: str | None, settings: Settings) -> dict[str, Any]:
    """A new hash-addressed version of the script (never overwriting one); ``created`` False if unchanged."""
    return versions.save(name, text, base, settings)


def script_diff(name: str, version: str | None, against: str | None, settings: Settings) -> dict[str, Any]:
    """A unified diff of a version (default: current) against another (default: the one before it)."""
    return versions.diff(name, version, against, settings)


def script_template(name: str, version: str | None, settings: Settings) -> dict[str, Any]:
    """A Job for the script prefilled from its ``Params`` defaults."""
    return versions.job_template(name, settings, version)


def order_log(job_id: str, after: int, settings: Settings, limit: int | None = None) -> dict[str, Any]:
    """The lines a Job printed numbered above ``after`` (see ``live_log.read``); ``NotFound`` for no Job."""
    try:
        return live_log.read(job_id, after, settings, limit)
    except orders.OrderError as exc:
        raise NotFound(str(exc)) from None


def follow_order_log(job_id: str, after: int, settings: Settings) -> Iterator[dict[str, Any]]:
    """Chunks of new lines as they are printed, the last one ``final`` once the Job has ended."""
    first = order_log(job_id, after, settings)  # NotFound before anything is streamed
    return live_log.follow(first["jobId"], after, settings)


def datasets_list(settings: Settings, project: str | None = None) -> list[dict[str, Any]]:
    """Datasets in the store, newest version of each."""
    from mlqueue import datasets

    return datasets.listing(project, settings=settings)


# --------------------------------------------------------------------------- machines of the house


def create_invite(by: str, settings: Settings) -> dict[str, Any]:
    """A one-time code (10 minutes) that lets one machine join: ``{"code", "expires"}``."""
    from mlqueue import invites

    return invites.create(by=by, settings=settings)


def join_machine(name: str, code: str, host: str, address: str | None, settings: Settings) -> dict[str, Any]:
    """Spend ``code`` for machine ``name``: its own broker/store credentials, addressed to ``host``."""
    from mlqueue import machines

    return machines.enroll(name, code, host, settings, address=address)


def machines_list(settings: Settings) -> list[dict[str, Any]]:
    """Every machine that joined: online, offline or revoked, with its worker's capabilities."""
    from mlqueue import machines

    return machines.listing(settings)


def remove_machine(name: str, settings: Settings) -> dict[str, Any]:
    """Revoke machine ``name``: no more Jobs, no more store reads (``NotFound`` if it never joined)."""
    from mlqueue import machines

    return machines.revoke(name, settings)


# --------------------------------------------------------------------------- uploads and downloads


def dataset_push(path: Path, project: str, name: str | None, settings: Settings) -> dict[str, Any]:
    """Store a file as dataset ``project/name`` (default: the file's name); same content stores nothing."""
    from mlqueue import datasets

    return datasets.push(path, project, name, settings=settings)


def dataset_file(project: str, name: str, settings: Settings) -> tuple[dict[str, Any], Iterator[bytes]]:
    """A dataset's newest version: its description and its bytes, in chunks (``NotFound`` if absent)."""
    from mlqueue import datasets

    datasets.check_names(project, name)
    meta = datasets.latest(project, name, settings)
    if meta is None:
        raise datasets.DatasetError(f"dataset {project}/{name} is not in the store (see `mlqueue data ls`)")
    return meta, _chunks(datasets.open_stream(meta["fileId"], settings))


def dataset_pull(project: str, name: str, dest: Path, settings: Settings) -> Path:
    """Write a dataset's newest version to ``dest`` (a file, or a directory to put it in under its name)."""
    from mlqueue import datasets

    return datasets.pull(project, name, dest, settings)


def script_push(path: Path, name: str | None, settings: Settings) -> dict[str, Any]:
    """Store a script file or folder as a bundle every worker fetches by hash; same content stored once."""
    return scripts.push(path, name, settings)


# --------------------------------------------------------------------------- artifacts


def artifacts_of(job_id: str, settings: Settings) -> dict[str, Any]:
    """The files a Job stored (model weights...): ``{"jobId": full id, "artifacts": [name, fileId, size...]}``."""
    from mlqueue import artifacts

    full_id = find_order(job_id, settings)["jobId"]
    return {"jobId": full_id, "artifacts": artifacts.for_job(full_id, settings)}


def artifact_file(file_id: str, settings: Settings) -> tuple[dict[str, Any], Iterator[bytes]]:
    """One artifact: its description (name, size, sha256, jobId) and its bytes, in chunks."""
    from mlqueue import artifacts

    doc = artifacts.stored_file(file_id, settings)
    if doc is None:
        raise artifacts.ArtifactError(f"no artifact with id {file_id!r}; `mlqueue artifacts JOB_ID` lists a job's")
    meta = {**doc["metadata"], "fileId": str(doc["_id"]), "size": doc["length"]}
    return meta, _chunks(artifacts.open_stream(doc["_id"], settings))


def artifact_download(file_id: str, dest: Path, settings: Settings) -> Path:
    """Write an artifact into the directory ``dest`` under its own name (or to the file ``dest``)."""
    from mlqueue import artifacts

    return artifacts.download(file_id, dest, settings)


def _chunks(stream: Any, size: int = 1 << 20) -> Iterator[bytes]:
    try:
        while chunk := stream.read(size):
            yield chunk
    finally:
        stream.close()


# --------------------------------------------------------------------------- sweeps


def sweep_start(text: str, where: str, by: str, settings: Settings) -> dict[str, Any]:
    """Check a sweep file's text (``InvalidInput`` naming line and column) and store the sweep.

    The HQ's driver asks for trials from its next step. Returns ``sweepId``, ``name`` and ``maxTrials``.
    """
    from mlqueue import sweeps
    from mlqueue.sweeps import driver as sweep_driver

    spec = sweeps.parse_text(text, where, settings)
    sweep_id = sweep_driver.create(spec, text, where, by=by, settings=settings)
    return {"sweepId": sweep_id, "name": spec.name, "maxTrials": spec.max_trials}


def sweep_id_or_latest(sweep_id: str | None, settings: Settings) -> str:
    """The sweep named (id or prefix), or the newest one when none is named; ``NotFound`` if there is none."""
    from mlqueue.sweeps import driver as sweep_driver

    if sweep_id:
        return str(sweep_driver.get(sweep_id, settings)["_id"])
    rows = sweep_driver.listing(settings)
    if not rows:
        raise sweep_driver.SweepNotFound("there is no sweep yet: start one with `mlqueue sweep FILE` "
                                         "(e.g. tasks/toy_sweep.yaml)")
    return str(rows[0]["sweepId"])


def sweep_status(sweep_id: str | None, settings: Settings, trials: bool = False) -> dict[str, Any]:
    """Trials by state, best so far, wall and machine time, machines used; ``trialList`` with ``trials``."""
    from mlqueue.sweeps import driver as sweep_driver

    report = sweep_driver.status(sweep_id_or_latest(sweep_id, settings), settings)
    if trials:
        report["trialList"] = sweep_driver.trials(report["sweepId"], settings)
    return report


def sweep_best(sweep_id: str | None, settings: Settings) -> dict[str, Any]:
    """``{"sweepId", "job": the best trial's Job ready to submit, or None, "trial": its record}``."""
    from mlqueue.sweeps import driver as sweep_driver

    sid = sweep_id_or_latest(sweep_id, settings)
    found = sweep_driver.best_job(sid, settings)
    job, record = found if found else (None, None)
    return {"sweepId": sid, "job": job, "trial": record}


def sweep_stop(sweep_id: str, by: str, settings: Settings, settle_seconds: float = 10.0) -> dict[str, Any]:
    """Stop a sweep: no new trials, unfinished ones cancelled, finished ones kept. ``{"sweepId", "state"}``.

    Closes the sweep itself within ``settle_seconds`` unless another driver (the HQ's) holds it.
    """
    from mlqueue.sweeps import driver as sweep_driver

    doc = sweep_driver.request_stop(sweep_id, by=by, settings=settings)
    sid = str(doc["_id"])
    driver = sweep_driver.Driver(owner=f"stop:{by}:{os.getpid()}", settings=settings, sweep_ids=[sid])
    deadline = time.monotonic() + settle_seconds
    try:
        while doc["state"] not in sweep_driver.FINAL and time.monotonic() < deadline:
            if not driver.step().get("sweeps"):
                break   # another driver (the HQ) holds the sweep and will close it
            doc = sweep_driver.get(sid, settings)
            time.sleep(0.2)
    finally:
        driver.release()
    return {"sweepId": sid, "state": doc["state"]}


def sweeps_list(settings: Settings) -> list[dict[str, Any]]:
    """All sweeps, newest first: id, name, state, method, trials told, budget, best value."""
    from mlqueue.sweeps import driver as sweep_driver

    return sweep_driver.listing(settings)
