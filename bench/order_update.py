"""What one Order move costs the embedded store, by the indexes on ``orders``: CPU and wall time.

SecantusDB spends most of an update outside its commit: it reads its index catalog again and again
while planning and rewriting entries, so the cost grows with the number of indexes on the collection.
This bench makes one collection per index set, filled alike, and runs the worker's two moves (claim+start,
finish) on each, the sets taking turns so they see the same load. It reports, per move, the store
process' CPU time (user + system, from /proc: little affected by other processes' load) and the wall
time, and a bare commit measured between the turns. ``replica-set mode`` is the current index set on a
second store started as before 2026-11-30 13:00 (without ``--standalone``: it keeps a replication log),
and ``before`` the 7 indexes on it: the store a move paid for until then.
Run: `.venv/bin/python bench/order_update.py [--rounds R] [--per-round N]`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pymongo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("order_update")
BEFORE = [[("state", 1), ("heartbeatAt", 1)], [("state", 1), ("createdDate", 1)], [("worker", 1), ("state", 1)],
          [("updatedDate", 1)], [("sweepId", 1)], [("placedOn", 1), ("state", 1)]]   # until 2026-11-30 12:30


def index_sets() -> dict[str, list[Any]]:
    """Name -> the indexes besides ``jobId`` (``"current"``: what ``store/orders.py`` makes today)."""
    partial = {"partialFilterExpression": {"placedOn": {"$type": "string"}}}
    return {"before (7)": BEFORE, "current": "current", "jobId only": [],
            "current without sweepId": [[("state", 1)], [("updatedDate", 1)], [("placedOn", 1), ("state", 1)]],
            "current, placedOn partial": [[("state", 1)], [("updatedDate", 1)], [("sweepId", 1)],
                                          ([("placedOn", 1), ("state", 1)], partial)]}


def new_order(i: int) -> dict[str, Any]:
    """An Order as submit writes it (the fields that matter for its size and its index entries)."""
    now = datetime.now(UTC)
    return {"jobId": f"{i:024x}", "state": "unassigned", "createdDate": now, "updatedDate": now, "attempts": 0,
            "maxAttempts": 3, "timeLimit": 3600.0, "scriptName": "toy", "projectName": "default", "sweepId": None,
            "delivery": uuid.uuid4().hex, "enqueuedAt": now, "worker": None, "outcome": None,
            "history": [{"at": now, "to": "unassigned", "by": "cli", "why": "submitted"}], "metrics": [], "log": [],
            "requires": None, "requirementClass": "base", "pinnedWorker": None, "placedOn": None, "epochs": None}


def claim_start(coll: Any, o: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    coll.update_one(
        {"jobId": o["jobId"], "delivery": o["delivery"], "state": "unassigned", "attempts": 0},
        {"$set": {"state": "running", "updatedDate": now, "worker": "w@h", "host": "h", "pid": 1, "assignedDate": now,
                  "heartbeatAt": now, "startedDate": now, "script": {"name": "toy", "sha256": "ab" * 32},
                  "deadline": now + timedelta(hours=1)},
         "$push": {"history": {"$each": [{"at": now, "to": "assigned", "by": "w@h", "why": "picked up"},
                                         {"at": now, "to": "running", "by": "w@h", "why": "attempt 1 started"}]}},
         "$inc": {"attempts": 1}})


def finish(coll: Any, o: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    coll.update_one(
        {"jobId": o["jobId"], "delivery": o["delivery"], "attempts": 1, "state": "running"},
        {"$set": {"state": "succeeded", "updatedDate": now, "finishedDate": now,
                  "outcome": {"status": 200, "loss": 0.1, "metric": 0.9, "jobId": o["jobId"], "state": "succeeded",
                              "finishedDate": now, "durationSeconds": 0.001}},
         "$push": {"history": {"$each": [{"at": now, "to": "succeeded", "by": "w@h", "why": "script finished"}]}}})


@contextlib.contextmanager
def replica_set_mode(base: Path) -> Iterator[Any]:
    """A second embedded store launched as before: replica-set mode, with its replication log."""
    from mlqueue.servers import MongoServer

    spawn = MongoServer._spawn
    MongoServer._spawn = lambda self, argv: spawn(self, [a for a in argv if a != "--standalone"])
    try:
        server = MongoServer(base / "mongo-rs", base / "mongo-rs.log").start()
    finally:
        MongoServer._spawn = spawn
    try:
        yield server
    finally:
        server.stop()


def cpu_ms(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return (t.user + t.system) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--stored", type=int, default=2000, help="Orders in each collection before the moves")
    args = parser.parse_args()
    from mlqueue import store
    from mlqueue.store import orders as order_store

    walls: dict[str, collections.defaultdict[str, list[float]]] = {}
    cpus: dict[str, collections.defaultdict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (rs, ms), replica_set_mode(tmp) as old_ms:
            settings = harness.connect(harness.mlqueue_env(tmp / "home", rs, ms))
            proc = psutil.Process(ms.process.pid)
            procs = {}
            db = store.db(settings)
            colls = {}
            for n, (name, indexes) in enumerate(index_sets().items()):
                coll = db[f"orders_{n}"]
                if indexes == "current":
                    order_store.ensure_indexes(settings)
                    coll = db.orders
                else:
                    coll.create_index("jobId", unique=True)
                    for keys in indexes:
                        coll.create_index(keys[0], **keys[1]) if isinstance(keys, tuple) else coll.create_index(keys)
                coll.insert_many([new_order(i) for i in range(args.stored)])
                colls[name], procs[name] = coll, proc
                walls[name], cpus[name] = collections.defaultdict(list), collections.defaultdict(list)
            old_db = pymongo.MongoClient(old_ms.url, tz_aware=True).bench
            current = [(list(k["key"].items()), {"unique": True} if k.get("unique") else {})
                       for k in db.orders.list_indexes() if k["name"] != "_id_"]
            for name, indexes in (("current, replica-set mode", current),
                                  ("before: 7, replica-set mode", [([("jobId", 1)], {"unique": True}),
                                                                   *((k, {}) for k in BEFORE)])):
                coll = old_db[f"orders_{len(colls)}"]
                for keys, options in indexes:
                    coll.create_index(keys, **options)
                coll.insert_many([new_order(i) for i in range(args.stored)])
                colls[name], procs[name] = coll, psutil.Process(old_ms.process.pid)
                walls[name], cpus[name] = collections.defaultdict(list), collections.defaultdict(list)
            db.probe.insert_one({"_id": 1, "n": 0})
            commit: list[float] = []
            for rnd in range(args.rounds):
                for name, coll in colls.items():
                    batch = [new_order(10**6 * (rnd + 1) + i) for i in range(args.per_round)]
                    coll.insert_many(batch)
                    for move in (claim_start, finish):
                        c0, w0 = cpu_ms(procs[name]), time.perf_counter()
                        for o in batch:
                            move(coll, o)
                        walls[name][move.__name__].append((time.perf_counter() - w0) * 1000 / len(batch))
                        cpus[name][move.__name__].append((cpu_ms(procs[name]) - c0) / len(batch))
                w0 = time.perf_counter()
                for i in range(args.per_round):
                    db.probe.update_one({"_id": 1}, {"$set": {"n": i}})
                commit.append((time.perf_counter() - w0) * 1000 / args.per_round)
    figures = {
        "load": [round(x, 2) for x in os.getloadavg()],
        "bare_commit_wall_ms": round(statistics.median(commit), 2),
        "indexes": {name: {f"{move}_{kind}_ms": round(statistics.median(series[move]), 2)
                           for kind, table in (("store_cpu", cpus), ("wall", walls))
                           for move, series in [(m, table[name]) for m in ("claim_start", "finish")]}
                    for name in colls},
    }
    import json

    print(json.dumps(figures, indent=2))
    harness.save(RESULTS, figures)


if __name__ == "__main__":
    main()
