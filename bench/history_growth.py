"""Whether a Job's cost grows with the history in the store: per-Job store work and the background
queries every worker and the HQ run (a reaper sweep), at 0, 10k and 100k stored finished Jobs.

One embedded store; finished Jobs are inserted straight into it between the steps (as bench/api_latency.py
does). At each step: the worker's code path (``worker.execute``) on a batch of toy Jobs, in this process,
and one ``Reaper.sweep``. The baseline is the same step at 0 stored Jobs in the same run; ratios should
stay near 1.0. Run: `.venv/bin/python bench/history_growth.py [--steps 0,10000,100000] [--jobs N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("history_growth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="0,10000,100000")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--sweeps", type=int, default=3)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    from api_latency import insert

    from mlqueue import deferred, orders, store, worker

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (rs, ms):
            settings = harness.connect(harness.mlqueue_env(tmp / "home", rs, ms))
            d = store.db(settings)
            reaper = orders.Reaper("bench-reaper", settings)
            reaper.watching_since -= settings.lost_after
            stored = 0
            job = {"scriptName": "toy", "x": 1.0}
            for target in steps:
                if target > stored:
                    insert(d, target - stored)
                    stored = target
                ids = orders.submit([job] * args.jobs, settings=settings)
                deliveries = {o["jobId"]: o["delivery"] for o in d.orders.find({"state": "unassigned"})}
                t = time.perf_counter()
                for job_id in ids:
                    worker.execute(job_id, deliveries[job_id], "bench", settings, carried=job)
                deferred.flush()  # the Outcome copies written after each Job count too
                per_job = (time.perf_counter() - t) / len(ids) * 1000
                sweeps = []
                for _ in range(args.sweeps):
                    t = time.perf_counter()
                    reaper.sweep()
                    sweeps.append((time.perf_counter() - t) * 1000)
                stored += len(ids)
                rows.append({"stored_jobs": target, "ms_per_job": round(per_job, 1),
                             "reaper_sweep_ms": round(statistics.median(sweeps), 1)})
                print(rows[-1], flush=True)
    base = rows[0]
    for row in rows:
        row["ratio_per_job"] = round(row["ms_per_job"] / base["ms_per_job"], 2)
        row["ratio_sweep"] = round(row["reaper_sweep_ms"] / max(base["reaper_sweep_ms"], 0.1), 2)
    print(json.dumps(rows, indent=2))
    harness.save(RESULTS, {"steps": rows, "load": os.getloadavg()})


if __name__ == "__main__":
    main()
