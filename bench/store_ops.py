"""Store operations per Job, counted: what a Job costs the store, independent of machine noise.

Runs the worker's own code path (``worker.execute``, given the Job as its message carries it) in this
process against the embedded store, with every MongoDB command counted by name (pymongo command
monitoring), the Outcome copies written after each Job included. Prints per Job: commands by kind,
writes (each one a commit, fsynced on the embedded store), and the mean time of one commit measured in
the same run (a bare ``update_one``), so "store work per Job" is writes x commit + reads x read.
Run: `.venv/bin/python bench/store_ops.py [--jobs N] [--stored N]`.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

from pymongo import monitoring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("store_ops")
WRITES = {"insert", "update", "delete", "findAndModify"}


class Counter(monitoring.CommandListener):
    """Counts commands and their server time, by name (``find`` on ``fs.files`` counts as ``find``)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.micros: collections.Counter[str] = collections.Counter()
        self.targets: collections.Counter[str] = collections.Counter()  # "find orders": how many
        self.on = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on:
            self.counts[event.command_name] += 1
            self.targets[f"{event.command_name} {event.command.get(event.command_name)}"] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.on:
            self.micros[event.command_name] += event.duration_micros

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def carried(job: dict, order: dict) -> dict:
    """The Job (and the new Order) as its Celery message carries them (``orders.carry``), for a checkout
    whose worker takes them."""
    import inspect

    from mlqueue import orders, worker

    takes = inspect.signature(worker.execute).parameters
    extra = {"carried": job} if "carried" in takes else {}
    if "carried_order" in takes:
        extra["carried_order"] = orders.carry(None, order).get(orders.CARRIED_ORDER)
    if "carried_script" in takes:
        from mlqueue import scripts

        extra["carried_script"] = scripts.version_now(job["scriptName"])
    return extra


def flush_deferred() -> None:
    try:
        from mlqueue import deferred
    except ImportError:  # a checkout from before mlqueue/deferred.py (an A/B run): nothing is deferred
        return
    deferred.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    counter = Counter()
    monitoring.register(counter)
    from mlqueue import orders, store, worker

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (rs, ms):
            settings = harness.connect(harness.mlqueue_env(tmp / "home", rs, ms))
            d = store.db(settings)
            d.probe.insert_one({"_id": 1, "n": 0})
            t = time.perf_counter()
            for i in range(200):
                d.probe.update_one({"_id": 1}, {"$set": {"n": i}})
            commit_ms = (time.perf_counter() - t) / 200 * 1000
            job = {"scriptName": "toy", "x": 1.0}
            warm = orders.submit([job], settings=settings)
            worker.execute(warm[0], d.orders.find_one({"jobId": warm[0]})["delivery"], "bench", settings)
            flush_deferred()
            counter.on = True
            t = time.perf_counter()
            ids = orders.submit([job] * args.jobs, settings=settings)
            submit_s = time.perf_counter() - t
            submit_counts = dict(counter.counts)
            submit_targets = dict(counter.targets)
            counter.targets.clear()
            counter.counts.clear()
            counter.micros.clear()
            as_sent = {o["jobId"]: {**o, "enqueuedAt": None} for o in d.orders.find({"jobId": {"$in": ids}})}
            headers = {job_id: carried(job, order) for job_id, order in as_sent.items()}  # as submit sent them
            counter.counts.clear()
            counter.targets.clear()
            counter.micros.clear()
            t = time.perf_counter()
            for job_id in ids:
                worker.execute(job_id, as_sent[job_id]["delivery"], "bench", settings, **headers[job_id])
            run_s = time.perf_counter() - t
            flush_deferred()  # the Outcome copies written after each Job are still the Job's store work
            counter.on = False
    n = args.jobs
    per_job = {k: round(v / n, 2) for k, v in sorted(counter.counts.items())}
    figures = {
        "jobs": n,
        "commit_ms": round(commit_ms, 2),
        "submit_commands_per_job": {k: round(v / n, 2) for k, v in sorted(submit_counts.items())},
        "submit_commands_by_collection": {k: round(v / n, 2) for k, v in sorted(submit_targets.items())},
        "submit_ms_per_job": round(submit_s / n * 1000, 2),
        "worker_commands_per_job": per_job,
        "worker_commands_by_collection": {k: round(v / n, 2) for k, v in sorted(counter.targets.items())},
        "worker_writes_per_job": round(sum(v for k, v in counter.counts.items() if k in WRITES) / n, 2),
        "worker_store_ms_per_job": round(sum(counter.micros.values()) / n / 1000, 2),
        "worker_ms_per_command": {k: round(counter.micros[k] / counter.counts[k] / 1000, 2)
                                  for k in sorted(counter.counts)},
        "worker_ms_per_job": round(run_s / n * 1000, 2),
        "worker_ms_per_job_in_commits": round(run_s / n * 1000 / commit_ms, 2),
    }
    print(json.dumps(figures, indent=2))
    harness.save(RESULTS, figures)


if __name__ == "__main__":
    main()
