"""Placement by measured speed: sweep makespan on a house of unequal machines, against first-free-worker.

Three real workers whose toy Jobs take 1x, 2x and 4x as long (``TOY_SLOWDOWN``) first run two short pinned
Jobs each, so mlqueue has a speed figure per machine; then a batch of trials of mixed lengths (more trials
than machines, as a sweep's queue is) is submitted at once and the time until the last one ends is the
makespan. The same batch runs with placement off (``MLQUEUE_PLACEMENT=false``: plain first-free-worker,
what Celery does alone) and on (a slower worker passes a Job to a machine that would finish it sooner,
see ``mlqueue/speed.py``). Modes alternate over ``--repeats``; medians are reported.

Prints and saves ``bench/results/placement.json``; the ratio < 1 means placement shortened the sweep.
Run: `make bench` or `.venv/bin/python bench/placement.py [--repeats N] [--unit SECONDS]`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("placement")
MACHINES = {"fast": 1, "mid": 2, "slow": 4}
EPOCHS = [8, 2, 6, 4, 8, 2, 10, 4, 6, 2, 8, 4]  # trial lengths, in epochs (a sweep's trials differ)


def start_workers(env: dict[str, str], home: Path, placement: bool) -> list[subprocess.Popen]:
    return [harness.start_worker({**env, "TOY_SLOWDOWN": str(slowdown), "MLQUEUE_PLACEMENT": str(placement).lower()},
                                 home / f"worker-{name}.log", name=f"{name}@%h")
            for name, slowdown in MACHINES.items()]


def finished(settings: Any, ids: list[str]) -> list[dict[str, Any]] | None:
    from mlqueue import store

    done = list(store.db(settings).outcomes.find({"jobId": {"$in": ids}}, {"finishedDate": 1, "worker": 1}))
    return done if len(done) == len(ids) else None


def run_once(placement: bool, unit: float, servers: tuple[Any, Any], tmp: Path) -> dict[str, Any]:
    """One house, one batch: returns makespan and which machine ran how many trials."""
    from mlqueue import orders, speed, store

    redis_server, mongo_server = servers
    name = f"place{secrets.token_hex(3)}"
    env = harness.child_env({**harness.mlqueue_env(tmp, redis_server, mongo_server, name), "PYTHONUNBUFFERED": "1"})
    settings = harness.connect(env)
    workers = start_workers(env, tmp, placement)
    try:
        harness.wait_until(lambda: store.db(settings).workers.count_documents({"online": True}) == len(MACHINES),
                           120, "workers to register")
        warm = [{"scriptName": "toy", "projectName": "warm-up", "worker": w, "epochs": 2, "sleepSeconds": 2 * unit,
                 "x": float(i)} for w in MACHINES for i in range(2)]
        ids = orders.submit(warm, by="bench", settings=settings)
        harness.wait_until(lambda: finished(settings, ids), 120, "warm-up jobs")
        time.sleep(speed.CACHE_SECONDS + 1)  # workers' cached speed figures now include the warm-up
        trials = [{"scriptName": "toy", "projectName": "sweep", "epochs": e, "sleepSeconds": e * unit,
                   "x": float(i)} for i, e in enumerate(EPOCHS)]
        started = time.time()
        ids = orders.submit(trials, by="bench", settings=settings)
        done = harness.wait_until(lambda: finished(settings, ids), 600, "trials")
        makespan = max(o["finishedDate"].timestamp() for o in done) - started
        per_machine = {m: sum(1 for o in done if o["worker"].startswith(f"{m}@")) for m in MACHINES}
        placed = store.db(settings).orders.count_documents({"jobId": {"$in": ids}, "placedOn": {"$ne": None}})
        if os.environ.get("BENCH_VERBOSE"):
            for o in store.db(settings).orders.find({"jobId": {"$in": ids}}).sort("startedDate", 1):
                print(f"    {o['epochs']:3} epochs  {o['worker']:12} {o['startedDate'].timestamp() - started:6.2f} -> "
                      f"{o['finishedDate'].timestamp() - started:6.2f}  "
                      f"{[e['why'][:60] for e in o['history'] if 'placed' in e['why'] or 'first' in e['why']]}")
    finally:
        harness.stop_workers(workers)
        store.client(settings).drop_database(name)
    return {"placement": placement, "makespanSeconds": round(makespan, 2), "trialsPerMachine": per_machine,
            "placed": placed}


def ideal_makespan(unit: float) -> float:
    """A lower bound: all work shared in proportion to the machines' speeds."""
    return sum(EPOCHS) * unit / sum(1 / s for s in MACHINES.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--unit", type=float, default=0.25, help="seconds per epoch on the fastest machine")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlqueue-placement-bench-"))
    redis_server, mongo_server = harness.start_servers(tmp)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = []
    try:
        for repeat in range(args.repeats):
            for placement in ((False, True) if repeat % 2 == 0 else (True, False)):
                run = run_once(placement, args.unit, (redis_server, mongo_server), tmp)
                runs.append(run)
                print(f"  {'speed-aware' if placement else 'first-free '}  makespan {run['makespanSeconds']:6.2f}s  "
                      f"trials per machine {run['trialsPerMachine']}  placed {run['placed']}", flush=True)
    finally:
        mongo_server.stop()
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    plain = statistics.median(r["makespanSeconds"] for r in runs if not r["placement"])
    aware = statistics.median(r["makespanSeconds"] for r in runs if r["placement"])
    report = {"machines": MACHINES, "trialEpochs": EPOCHS, "secondsPerEpochOnFastest": args.unit,
              "idealMakespanSeconds": round(ideal_makespan(args.unit), 2), "firstFreeMakespanSeconds": plain,
              "speedAwareMakespanSeconds": aware, "ratio": round(aware / plain, 3), "runs": runs}
    harness.save(RESULTS, report)
    print(f"makespan: first-free {plain:.2f}s, speed-aware {aware:.2f}s, ideal {report['idealMakespanSeconds']:.2f}s; "
          f"ratio speed-aware / first-free = {report['ratio']:.3f}")
    print(f"saved {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
