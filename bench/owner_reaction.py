"""How fast does a worker step aside when its owner comes back, and come back when the owner leaves?

A real worker (``--when-owner-active pause``, the file probe, ``idle_after`` 3 s) runs a long toy Job;
each cycle the "owner" touches the probe file once. Measured per cycle, on the machine's wall clock:

- reaction: first input -> the Job's process is stopped (the "paused" line the worker writes into the
  Order's history right after ``SIGSTOP``). Target < 2 s.
- back to work: the owner's last input -> the Job runs again ("resumed after" line); at least
  ``idle_after`` by design.

Usage: ``python bench/owner_reaction.py [--cycles N]`` -> prints the figures, writes
``bench/results/owner_reaction.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("owner_reaction")
IDLE_AFTER = 3.0
TARGET_SECONDS = 2.0


def history_since(db: object, job_id: str, prefix: str, since: datetime) -> datetime | None:
    order = db.orders.find_one({"jobId": job_id}, {"history": 1})
    hits = [e["at"] for e in order["history"] if (e.get("why") or "").startswith(prefix) and e["at"] >= since]
    return hits[0] if hits else None


def wait(predicate: object, timeout: float = 30.0) -> object:
    return harness.wait_until(predicate, timeout, "the worker: see the worker log", every=0.02)


def run(cycles: int, tmp: Path, env: dict[str, str]) -> dict[str, list[float]]:
    from mlqueue import orders, store

    settings = harness.connect(env)
    db = store.db(settings)
    probe = tmp / "owner-input"
    worker = harness.start_worker({**env, "MLQUEUE_IDLE_PROBE": f"file:{probe}"}, tmp / "worker.log",
                                  "--when-owner-active", "pause", "--idle-after", str(IDLE_AFTER),
                                  name="bench@%h", level="info")
    reaction: list[float] = []
    back: list[float] = []
    try:
        wait(lambda: db.workers.find_one({"online": True, "pid": worker.pid}), timeout=60)
        [job_id] = orders.submit([{"scriptName": "toy", "epochs": 100000, "sleepSeconds": 100000}], settings=settings)
        wait(lambda: (db.orders.find_one({"jobId": job_id}).get("latestMetrics") or {}).get("epoch"), timeout=60)
        for _ in range(cycles):
            time.sleep(0.3)
            touched = datetime.now(UTC)
            probe.touch()
            paused = wait(lambda t=touched: history_since(db, job_id, "attempt 1 paused", t))
            reaction.append((paused - touched).total_seconds())
            resumed = wait(lambda p=paused: history_since(db, job_id, "resumed after", p))
            back.append((resumed - touched).total_seconds())
        orders.cancel(job_id, settings=settings)
    finally:
        harness.stop_worker(worker)
    return {"reaction": reaction, "back": back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (rs, ms):
            env = harness.child_env(harness.mlqueue_env(tmp / "home", rs, ms))
            times = run(args.cycles, tmp, env)
    figures = {
        "cycles": args.cycles, "idleAfterSeconds": IDLE_AFTER, "targetReactionSeconds": TARGET_SECONDS,
        "reactionSeconds": {"p50": round(statistics.median(times["reaction"]), 3),
                            "max": round(max(times["reaction"]), 3)},
        "backToWorkSeconds": {"p50": round(statistics.median(times["back"]), 3), "max": round(max(times["back"]), 3)},
        "underTarget": max(times["reaction"]) < TARGET_SECONDS,
    }
    print(json.dumps(figures, indent=2))
    harness.save(RESULTS, figures)
    print(f"saved {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
