"""What N idle workers cost the HQ: CPU share and memory of the broker and the store, simulated connections.

An idle mlqueue worker does three things: Celery polls its queue on Redis (BRPOP with a 1-s timeout), its
main process heartbeats its Worker document every ``heartbeat_every``, and runs a reaper sweep every
``reap_every``. This bench runs exactly those, N times over (threads, one Redis and one MongoDB connection
each), against the embedded servers for ``--seconds``, and reads the servers' CPU time and memory
(psutil). The baseline is the same servers with no worker for the same time, measured first.
Run: `.venv/bin/python bench/idle_workers.py [--workers 50] [--seconds 60]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("idle_workers")


def idle_worker(i: int, settings: object, stop: threading.Event) -> None:
    from mlqueue import orders, store, worker

    name = f"idle{i}@bench"
    worker.register(name, settings)
    reaper = orders.Reaper(f"reaper@{name}", settings, full_repair=False)
    broker = redis.Redis.from_url(settings.broker_url)
    next_beat = next_reap = time.monotonic()
    while not stop.is_set():
        broker.brpop([settings.queue], timeout=1)
        now = time.monotonic()
        if now >= next_beat:
            store.db(settings).workers.update_one({"name": name}, {"$set": {"lastHeartbeat": orders.now()}})
            next_beat = now + settings.heartbeat_every
        if now >= next_reap:
            reaper.sweep_safely()
            next_reap = now + settings.reap_every


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (rs, ms):
            settings = harness.connect(harness.mlqueue_env(tmp / "home", rs, ms))
            procs = [psutil.Process(rs.process.pid), psutil.Process(ms.process.pid)]
            before = cpu_seconds(procs)
            time.sleep(args.seconds)
            idle_share = (cpu_seconds(procs) - before) / args.seconds
            stop = threading.Event()
            threads = [threading.Thread(target=idle_worker, args=(i, settings, stop), daemon=True)
                       for i in range(args.workers)]
            for t in threads:
                t.start()
            time.sleep(min(10.0, args.seconds / 4))  # everyone registered and swept once
            before = cpu_seconds(procs)
            time.sleep(args.seconds)
            share = (cpu_seconds(procs) - before) / args.seconds
            memory = {"redis_mb": round(procs[0].memory_info().rss / 2**20, 1),
                      "store_mb": round(procs[1].memory_info().rss / 2**20, 1)}
            stop.set()
            for t in threads:
                t.join(5)
    figures = {"workers": args.workers, "seconds": args.seconds,
               "servers_cpu_share_no_workers": round(idle_share, 3),
               "servers_cpu_share_with_workers": round(share, 3),
               "per_worker_cpu_share": round((share - idle_share) / args.workers, 4), **memory,
               "load": os.getloadavg()}
    print(json.dumps(figures, indent=2))
    harness.save(RESULTS, figures)


if __name__ == "__main__":
    main()
