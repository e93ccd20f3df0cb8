"""mlqueue's cost per Job, measured against bare Celery on the same Redis, in one run.

Prints and saves (bench/results/throughput.json):
- jobs/s for N short Jobs through mlqueue (full bookkeeping) vs N bare Celery no-op tasks, and the ratio
  (also against bare Celery with task events on, which mlqueue keeps for Flower);
- submit->start latency p50/p95 with an idle worker (Jobs submitted one at a time);
- the idle gap on a worker between two consecutive Jobs (queue kept full);
- where the time per Job goes (queue+claim, script load, script run, finish+next fetch); with ``--spans``,
  one more run with the worker logging at INFO splits the gap between two Jobs by Celery's own "received"
  and "succeeded" lines: received -> start (the claim), start -> final move stamped, -> succeeded (the
  final move's commit, Celery's bookkeeping), -> next received (ack, task events, next message).
Run: `make bench` or `.venv/bin/python bench/throughput.py [--jobs N] [--rounds R]` (with R rounds,
bare Celery and mlqueue alternate R times and the medians are printed, each round's ratio too).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("throughput")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bare_celery(n: int, broker: str, tmp: Path, events: bool = False) -> float:
    """Tasks/s of a no-op task on one bare Celery worker; ``events``: with task events, as mlqueue sends them."""
    env = {**os.environ, "BENCH_BROKER_URL": broker, "BENCH_TASK_EVENTS": "1" if events else "0"}
    worker = harness.start_worker(env, tmp / "bare.log", app="bare_celery", cwd=ROOT / "bench")
    sys.path.insert(0, str(ROOT / "bench"))
    os.environ["BENCH_BROKER_URL"] = broker
    import bare_celery as bare

    bare.app.conf.task_send_sent_event = events
    bare.app._pool = bare.app.amqp._producer_pool = None  # a round before may have closed kombu's pools

    r = redis.Redis.from_url(broker)
    time.sleep(4)
    bare.noop.delay(-1)
    while r.llen("bare"):
        time.sleep(0.05)
    time.sleep(1)
    start = time.perf_counter()
    for i in range(n):
        bare.noop.delay(i)
    # done when the queue is empty and the worker has acked everything (no unacked messages left)
    while r.llen("bare") or r.hlen("unacked"):
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    harness.stop_worker(worker)
    return n / elapsed


CELERY_LINE = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/[\w-]+\] "
                         r"Task mlqueue.run_order\[(\w+)\] (received|succeeded)")


def spans(n: int, env: dict[str, str], tmp: Path) -> dict[str, float]:
    """Medians, in ms, of each step between two Jobs on one worker (see the module docstring)."""
    from mlqueue import orders, store

    settings = harness.connect(env)
    db = store.db(settings)
    log_path = tmp / "worker-spans.log"
    worker = harness.start_worker(env, log_path, name="spans@%h", level="info")
    while not db.workers.find_one({"online": True, "pid": worker.pid}):
        time.sleep(0.1)
    expected = db.outcomes.estimated_document_count() + n
    ids = orders.submit([{"scriptName": "toy", "x": 1.0}] * n, settings=settings)
    while db.outcomes.estimated_document_count() < expected:
        time.sleep(0.1)
    harness.stop_worker(worker)
    seen: dict[str, dict[str, datetime]] = {"received": {}, "succeeded": {}}
    for m in CELERY_LINE.finditer(log_path.read_text()):   # the worker's local time: this machine's (UTC)
        seen[m.group(3)][m.group(2)] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
    docs = sorted(db.orders.find({"jobId": {"$in": ids}}), key=lambda o: o["startedDate"])
    steps: dict[str, list[float]] = {"received_to_start": [], "start_to_final_move": [], "final_move_to_succeeded": [],
                                     "succeeded_to_next_received": []}
    for a, b in zip(docs, docs[1:], strict=False):
        if a["delivery"] in seen["succeeded"] and b["delivery"] in seen["received"]:
            ms = [(y - x).total_seconds() * 1000 for x, y in (
                (seen["received"][b["delivery"]], b["startedDate"]), (a["startedDate"], a["finishedDate"]),
                (a["finishedDate"], seen["succeeded"][a["delivery"]]),
                (seen["succeeded"][a["delivery"]], seen["received"][b["delivery"]]))]
            for key, value in zip(steps, ms, strict=True):
                steps[key].append(value)
    return {k: round(statistics.median(v), 1) for k, v in steps.items() if v}


def mlqueue_run(n: int, latency_samples: int, env: dict[str, str], tmp: Path) -> dict[str, object]:
    from mlqueue import orders, store

    settings = harness.connect(env)
    db = store.db(settings)
    worker = harness.start_worker(env, tmp / "worker.log", name="bench@%h")
    while not db.workers.find_one({"online": True, "pid": worker.pid}):
        time.sleep(0.1)
    job = {"scriptName": "toy", "x": 1.0}

    def run_all(jobs: list[dict]) -> list[str]:
        # poll gently and cheaply (the store is shared with the worker being measured): every Job of this
        # run writes exactly one Outcome, so the Outcomes' count says how many have ended
        expected = db.outcomes.estimated_document_count() + len(jobs)
        ids = orders.submit(jobs, settings=settings)
        while db.outcomes.estimated_document_count() < expected:
            time.sleep(0.1 if len(ids) > 1 else 0.005)
        return ids

    run_all([job])  # warm-up: script import, connections
    latencies = []
    for _ in range(latency_samples):
        [job_id] = run_all([job])
        order = db.orders.find_one({"jobId": job_id})
        latencies.append((order["startedDate"] - order["createdDate"]).total_seconds() * 1000)
    start = time.perf_counter()
    ids = run_all([job] * n)
    elapsed = time.perf_counter() - start
    docs = sorted(db.orders.find({"jobId": {"$in": ids}}), key=lambda o: o["assignedDate"])
    pairs = zip(docs, docs[1:], strict=False)
    # the gap is the time the worker runs no script: from one Job's finish to the next one's start
    gaps = [(b["startedDate"] - a["finishedDate"]).total_seconds() * 1000 for a, b in pairs]
    phases = {
        "claim_to_start_ms": statistics.mean((o["startedDate"] - o["assignedDate"]).total_seconds() * 1000
                                             for o in docs),
        "run_and_finish_ms": statistics.mean((o["finishedDate"] - o["startedDate"]).total_seconds() * 1000
                                             for o in docs),
        "finish_to_next_claim_ms": statistics.mean(gaps),
    }
    harness.stop_worker(worker)
    return {"jobs_per_s": n / elapsed, "latency_ms": latencies, "gaps_ms": gaps, "phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--latency-samples", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate bare Celery and mlqueue this many times (--jobs each); on a shared, noisy "
                             "machine the ratio of each round is worth more than one ratio of two distant runs")
    parser.add_argument("--spans", action="store_true",
                        help="then one more run of --jobs Jobs, the worker logging at INFO, split into steps")
    args = parser.parse_args()

    rounds = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with harness.servers(tmp) as (rs, ms):
            env = harness.child_env(harness.mlqueue_env(tmp / "home", rs, ms))
            for _ in range(args.rounds):
                bare_rate = bare_celery(args.jobs, rs.url, tmp)
                bare_events_rate = bare_celery(args.jobs, rs.url, tmp, events=True)
                ours = mlqueue_run(args.jobs, max(1, args.latency_samples // args.rounds), env, tmp)
                rounds.append((bare_rate, bare_events_rate, ours, os.getloadavg()[0]))
            steps = spans(args.jobs, env, tmp) if args.spans else None
    latencies = [x for r in rounds for x in r[2]["latency_ms"]]
    gaps = [x for r in rounds for x in r[2]["gaps_ms"]]
    figures = {
        "jobs": args.jobs,
        "bare_celery_tasks_per_s": round(statistics.median(r[0] for r in rounds), 1),
        "bare_celery_with_task_events_tasks_per_s": round(statistics.median(r[1] for r in rounds), 1),
        "mlqueue_jobs_per_s": round(statistics.median(r[2]["jobs_per_s"] for r in rounds), 1),
        "ratio_mlqueue_vs_bare": round(statistics.median(r[2]["jobs_per_s"] / r[0] for r in rounds), 3),
        "ratio_mlqueue_vs_bare_with_task_events": round(statistics.median(r[2]["jobs_per_s"] / r[1] for r in rounds),
                                                        3),
        "submit_to_start_ms_p50": round(pct(latencies, 0.5), 1),
        "submit_to_start_ms_p95": round(pct(latencies, 0.95), 1),
        "idle_gap_between_jobs_ms_p50": round(pct(gaps, 0.5), 1),
        "idle_gap_between_jobs_ms_p95": round(pct(gaps, 0.95), 1),
        "time_per_job_ms": {k: round(statistics.median(r[2]["phases"][k] for r in rounds), 1)
                            for k in rounds[0][2]["phases"]},
        "rounds": [{"bare": round(b, 1), "bare_events": round(be, 1), "mlqueue": round(o["jobs_per_s"], 1),
                    "ratio": round(o["jobs_per_s"] / b, 3), "ratio_events": round(o["jobs_per_s"] / be, 3),
                    "load": round(load, 1)} for b, be, o, load in rounds],
        "targets": {"ratio_mlqueue_vs_bare": ">= 0.5", "submit_to_start_ms_p50_p95": "<= 10 / 30",
                    "idle_gap_between_jobs_ms_p50_p95": "<= 10 / 30"},  # issue 19's goals
    }
    if steps:
        figures["between_two_jobs_ms_p50"] = steps
    print(json.dumps(figures, indent=2))
    harness.save(RESULTS, figures)
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
