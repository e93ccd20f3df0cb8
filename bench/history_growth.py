"""Whether a Job's cost grows with the history in the store: per-Job store work and the background
queries every worker and the HQ run (a reaper sweep), at 0, 10k and 100k stored finished Jobs.

One embedded store holds two databases: ``history``, into which finished Jobs are inserted straight
between the steps (as bench/api_latency.py does), and ``empty``, which holds only this bench's own few
Jobs. **The baseline is the empty database, measured in the same minutes**: at each step the worker's
code path (``worker.execute``, in this process, on a batch of toy Jobs) and one ``Reaper.sweep`` run on
both databases in turn (A B, B A, ...) for ``--rounds`` rounds, so that the machine's load, which swings
a lot on a shared machine, falls on both sides alike; the ratio history / empty should stay near 1.0.
Run: `.venv/bin/python bench/history_growth.py [--steps 0,10000,100000] [--jobs N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("history_growth")
JOB = {"scriptName": "toy", "x": 1.0}


class House:
    """One database of the store, its settings and its reaper (as one HQ would see it)."""

    def __init__(self, settings: Any, name: str) -> None:
        from mlqueue import orders, store

        self.settings = settings.model_copy(update={"mongo_db": name, "queue": name})
        store.ensure_indexes(self.settings)
        self.db = store.db(self.settings)
        self.reaper = orders.Reaper(f"bench-reaper-{name}", self.settings)
        self.reaper.watching_since -= self.settings.lost_after

    def ms_per_job(self, jobs: int) -> float:
        """The worker's path for ``jobs`` toy Jobs, Outcome copies included, in ms per Job."""
        from mlqueue import deferred, orders, worker

        ids = orders.submit([JOB] * jobs, settings=self.settings)
        deliveries = {o["jobId"]: o["delivery"] for o in self.db.orders.find({"state": "unassigned"})}
        started = time.perf_counter()
        for job_id in ids:
            worker.execute(job_id, deliveries[job_id], "bench", self.settings, carried=JOB)
        deferred.flush()  # the Outcome copies written after each Job count too
        return (time.perf_counter() - started) / len(ids) * 1000

    def sweep_ms(self) -> float:
        started = time.perf_counter()
        self.reaper.sweep()
        return (time.perf_counter() - started) * 1000


def measure_step(empty: House, history: House, jobs: int, rounds: int) -> dict[str, Any]:
    """Both databases in turn, ``rounds`` times, the order swapped each round; medians and their ratio."""
    per_job: dict[str, list[float]] = {"empty": [], "history": []}
    sweeps: dict[str, list[float]] = {"empty": [], "history": []}
    for round_ in range(rounds):
        pair = [("empty", empty), ("history", history)]
        for name, house in pair if round_ % 2 == 0 else reversed(pair):
            per_job[name].append(house.ms_per_job(jobs))
            sweeps[name].append(house.sweep_ms())
    row = {kind + "_" + name: round(statistics.median(values[name]), 1)
           for kind, values in (("ms_per_job", per_job), ("reaper_sweep_ms", sweeps)) for name in values}
    row["ratio_per_job"] = round(row["ms_per_job_history"] / row["ms_per_job_empty"], 2)
    row["ratio_sweep"] = round(row["reaper_sweep_ms_history"] / max(row["reaper_sweep_ms_empty"], 0.1), 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="0,10000,100000")
    parser.add_argument("--jobs", type=int, default=40, help="toy Jobs per measurement")
    parser.add_argument("--rounds", type=int, default=4, help="measurements of each database per step")
    args = parser.parse_args()
    from api_latency import insert

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (rs, ms):
            settings = harness.connect(harness.mlqueue_env(tmp / "home", rs, ms))
            empty, history = House(settings, "empty"), House(settings, "history")
            stored = 0
            for target in [int(s) for s in args.steps.split(",")]:
                if target > stored:
                    insert(history.db, target - stored)
                    stored = target
                row = {"stored_jobs": target, "load": round(os.getloadavg()[0], 1),
                       **measure_step(empty, history, args.jobs, args.rounds)}
                rows.append(row)
                print(row, flush=True)
    harness.save(RESULTS, {"steps": rows, "rounds": args.rounds, "jobsPerMeasurement": args.jobs})


if __name__ == "__main__":
    main()
