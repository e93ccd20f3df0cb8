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
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "owner_reaction.json"
IDLE_AFTER = 3.0
TARGET_SECONDS = 2.0


def history_since(db: object, job_id: str, prefix: str, since: datetime) -> datetime | None:
    order = db.orders.find_one({"jobId": job_id}, {"history": 1})
    hits = [e["at"] for e in order["history"] if (e.get("why") or "").startswith(prefix) and e["at"] >= since]
    return hits[0] if hits else None


def wait(predicate: object, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit("timed out: see the worker log")


def run(cycles: int, tmp: Path, env: dict[str, str]) -> dict[str, list[float]]:
    from mlqueue import orders, store
    from mlqueue.settings import reload_settings

    os.environ.update(env)
    settings = reload_settings()
    store.forget_clients()
    store.ensure_indexes(settings)
    db = store.db(settings)
    probe = tmp / "owner-input"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-c", "1", "-l", "info", "-n", "bench@%h",
         "--without-mingle", "--without-gossip", "--when-owner-active", "pause", "--idle-after", str(IDLE_AFTER)],
        cwd=ROOT, env={**env, "MLQUEUE_IDLE_PROBE": f"file:{probe}"}, stdout=open(tmp / "worker.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True)
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
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    return {"reaction": reaction, "back": back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=8)
    args = parser.parse_args()
    from mlqueue.servers import MongoServer, RedisServer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rs = RedisServer(tmp / "redis", tmp / "redis.log", password=secrets.token_hex(8)).start()
        ms = MongoServer(tmp / "mongo", tmp / "mongo.log").start()
        try:
            base = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
            env = {**base, "MLQUEUE_HOME": str(tmp / "home"), "MLQUEUE_BROKER_URL": rs.url,
                   "MLQUEUE_MONGO_URL": ms.url, "MLQUEUE_MONGO_DB": "bench", "MLQUEUE_QUEUE": "bench"}
            times = run(args.cycles, tmp, env)
        finally:
            ms.stop()
            rs.stop()
    figures = {
        "cycles": args.cycles, "idleAfterSeconds": IDLE_AFTER, "targetReactionSeconds": TARGET_SECONDS,
        "reactionSeconds": {"p50": round(statistics.median(times["reaction"]), 3),
                            "max": round(max(times["reaction"]), 3)},
        "backToWorkSeconds": {"p50": round(statistics.median(times["back"]), 3), "max": round(max(times["back"]), 3)},
        "underTarget": max(times["reaction"]) < TARGET_SECONDS,
    }
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
