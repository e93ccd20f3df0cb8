"""How fast the API's result pages are with 100,000 Outcomes, against the same queries straight through pymongo.

Starts its own embedded Redis and MongoDB-protocol server (``mlqueue.servers``) in a temporary directory,
inserts N finished Jobs (Job + final Order + Outcome each; one in ten failed, without a loss) directly into a
fresh database, serves ``create_app`` with uvicorn on a free port, then times over real HTTP:
first page, a deep page, a filter by state, a sort by metric (indexed) and by an unindexed metric, and the
Orders list. The baseline is the store query each page needs (find/sort/skip/limit), timed with pymongo.
Prints p50/p95 per query and the API/pymongo ratio, and saves bench/results/api_latency.json.
Run: `make bench` or `.venv/bin/python bench/api_latency.py [--outcomes N] [--reps R]`.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "api_latency.json"

from mlqueue import order_index, store  # noqa: E402
from mlqueue.api import create_app  # noqa: E402
from mlqueue.servers import MongoServer, RedisServer, free_port  # noqa: E402
from mlqueue.settings import Settings  # noqa: E402

NUMBER = {"$gte": float("-inf")}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def insert(db: Any, n: int, batch: int = 5000) -> float:
    """N finished Jobs written straight to the store; returns the seconds it took."""
    rng = random.Random(42)
    started = time.perf_counter()
    base = datetime.now(UTC) - timedelta(days=1)
    for first in range(0, n, batch):
        jobs, orders, outcomes = [], [], []
        for i in range(first, min(n, first + batch)):
            job_id, created = ObjectId(), base + timedelta(milliseconds=i)
            failed = i % 10 == 0
            loss = None if failed else rng.lognormvariate(0, 1)
            outcome = {"jobId": str(job_id), "orderId": str(ObjectId()), "attempt": 1, "worker": f"w{i % 8}@host",
                       "host": "host", "state": "failed" if failed else "succeeded",
                       "finishedDate": created + timedelta(seconds=30), "status": 500 if failed else 200,
                       "reason": "error" if failed else None, "loss": loss,
                       "metric": None if failed else 1 / (1 + loss), "acc": None if failed else rng.random(),
                       "durationSeconds": 30.0}
            project = f"bench{i % 7}"
            jobs.append({"_id": job_id, "scriptName": "toy", "projectName": project, "createdDate": created,
                         "lr": rng.uniform(1e-4, 1), "layers": rng.randint(1, 6)})
            orders.append({"jobId": str(job_id), "state": outcome["state"], "createdDate": created,
                           "updatedDate": created, "attempts": 1, "maxAttempts": 3, "timeLimit": 600.0,
                           "scriptName": "toy", "projectName": project, "sweepId": None, "delivery": "bench",
                           "enqueuedAt": created, "worker": outcome["worker"], "outcome": outcome,
                           "history": [{"at": created, "to": outcome["state"], "by": "bench", "why": "inserted"}],
                           "metrics": [], "log": []})
            outcomes.append(dict(outcome))
        db.jobs.insert_many(jobs)
        db.orders.insert_many(orders)
        db.outcomes.insert_many(outcomes)
        print(f"  inserted {min(n, first + batch)}/{n}", end="\r", flush=True)
    print()
    return time.perf_counter() - started


def cases(n: int) -> list[tuple[str, dict[str, Any], Any]]:
    """(name, API query parameters, the pymongo query the page needs) for each measured page."""
    deep = max(0, int(n * 0.8))

    def first_page(d: Any) -> list:
        return list(d.outcomes.find({"loss": NUMBER}).sort("loss", 1).limit(50))

    def deep_page(d: Any) -> list:
        return list(d.outcomes.find({"loss": NUMBER}).sort("loss", 1).skip(deep).limit(50))

    def failed(d: Any) -> list:
        return list(d.outcomes.find({"state": "failed"}).sort("jobId", -1).limit(50))

    def by_metric(d: Any) -> list:
        return list(d.outcomes.find({"metric": NUMBER}).sort("metric", -1).limit(50))

    def by_acc(d: Any) -> list:
        return list(d.outcomes.find({"acc": NUMBER}).sort("acc", -1).limit(50))

    listed = {"metrics": 0, "history": 0, "log": 0}

    def orders(d: Any) -> list:
        return list(d.orders.find({}, listed).sort("jobId", -1).limit(50))

    def orders_failed(d: Any) -> list:
        return list(d.orders.find({"state": "failed", "projectName": "bench3"}, listed).sort("jobId", -1).limit(50))

    def orders_deep(d: Any) -> list:
        return list(d.orders.find({}, listed).sort("jobId", -1).skip(deep).limit(50))

    def jobs(d: Any) -> list:
        return list(d.jobs.find({"projectName": "bench6"}).sort("_id", -1).skip(100).limit(50))

    return [
        ("first page (sort by loss)", {"path": "/outcomes", "limit": 50}, first_page),
        (f"deep page (offset {deep})", {"path": "/outcomes", "limit": 50, "offset": deep}, deep_page),
        ("filter state=failed", {"path": "/outcomes", "limit": 50, "state": "failed"}, failed),
        ("sort by metric desc (indexed)", {"path": "/outcomes", "limit": 50, "sort": "metric", "desc": "true"},
         by_metric),
        ("sort by acc desc (not indexed)", {"path": "/outcomes", "limit": 50, "sort": "acc", "desc": "true"}, by_acc),
        ("orders, first page", {"path": "/orders", "limit": 50}, orders),
        ("orders, state=failed projectName=bench3", {"path": "/orders", "limit": 50, "state": "failed",
                                                     "projectName": "bench3"}, orders_failed),
        (f"orders, deep page (offset {deep})", {"path": "/orders", "limit": 50, "offset": deep}, orders_deep),
        ("jobs, projectName=bench6 offset 100", {"path": "/jobs", "limit": 50, "projectName": "bench6",
                                                 "offset": 100}, jobs),
    ]


def timed(action: Any, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlqueue-api-bench-") as tmp:
        base = Path(tmp)
        redis_server = RedisServer(base / "redis", base / "redis.log", password=secrets.token_hex(8)).start()
        mongo = MongoServer(base / "mongo", base / "mongo.log").start()
        try:
            report = run(args.outcomes, args.reps, base, redis_server.url, mongo.url)
        finally:
            mongo.stop()
            redis_server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS.relative_to(ROOT)}")


def run(n: int, reps: int, base: Path, broker_url: str, mongo_url: str) -> dict[str, Any]:
    port = free_port()
    settings = Settings(home=base, broker_url=broker_url, mongo_url=mongo_url, mongo_db="bench", queue="bench",
                        token=secrets.token_urlsafe(16), http_port=port)
    store.ensure_indexes(settings)
    db = store.db(settings)
    print(f"inserting {n} finished jobs (job + order + outcome each)...")
    insert_seconds = insert(db, n)
    print(f"  {insert_seconds:.1f}s")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    started = time.perf_counter()  # as the HQ does at its start: read the Orders' index in the background
    index = order_index.index_for(settings)
    index.start_loading()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {settings.token}"},
                        timeout=600)
    rows = []
    while order_index.ready_index(settings) is None:  # a failed read (store too busy) starts again
        time.sleep(0.2)
    index_seconds = time.perf_counter() - started
    print(f"orders index read in {index_seconds:.1f}s")
    try:
        for name, params, baseline in cases(n):
            query = {k: v for k, v in params.items() if k != "path"}

            def call(path: str = params["path"], query: dict = query) -> None:
                response = http.get(path, params=query)
                assert response.status_code == 200, response.text
                assert len(response.json()["items"]) == 50, (path, query, len(response.json()["items"]))

            warm = timed(call, 1)[0]  # the first call may build caches; reported apart
            api = timed(call, reps)
            direct = timed(lambda baseline=baseline: baseline(db), reps)
            row = {"query": name, "api_first_ms": round(warm, 1),
                   "api_p50_ms": round(statistics.median(api), 1), "api_p95_ms": round(pct(api, 0.95), 1),
                   "pymongo_p50_ms": round(statistics.median(direct), 1),
                   "pymongo_p95_ms": round(pct(direct, 0.95), 1)}
            row["ratio_p50"] = round(row["api_p50_ms"] / max(row["pymongo_p50_ms"], 0.001), 2)
            rows.append(row)
            print(f"{name:34} api p50 {row['api_p50_ms']:8.1f} ms  p95 {row['api_p95_ms']:8.1f} ms  "
                  f"(first {row['api_first_ms']:8.1f})  pymongo p50 {row['pymongo_p50_ms']:8.1f} ms  "
                  f"p95 {row['pymongo_p95_ms']:8.1f} ms  ratio {row['ratio_p50']:.2f}")
    finally:
        server.should_exit = True
        thread.join(10)
    return {"outcomes": n, "reps": reps, "store": "SecantusDB (embedded, as the HQ runs it)",
            "insert_seconds": round(insert_seconds, 1), "orders_index_read_seconds": round(index_seconds, 1),
            "page_size": 50, "queries": rows,
            "measured": datetime.now(UTC).isoformat(timespec="seconds")}


if __name__ == "__main__":
    main()
