"""How long the dashboard's Jobs page takes to show its first page of 100,000 Jobs, in headless Chromium.

A fresh store gets N Jobs, their Orders (history, per-epoch metrics, embedded Outcome) and Outcomes,
inserted directly (as N submitted-and-finished Jobs would leave them). The HQ's HTTP app
(``mlqueue.api.create_app``, dashboard at /ui, token required) is then started, and Chromium measures
from navigation to the first rows drawn in the grid:

- ``cold``: navigating the moment the HQ's HTTP side has started, while the dashboard still reads the
  table (the worst a person can see: opening the dashboard right after starting the HQ); the newest
  Jobs are shown from the store meanwhile;
- ``tableRead``: when the whole table is in memory (sorting and filtering wait for it until then);
- ``warm``: a new tab once the table is in memory (every later visit);
- then, in that tab, sorting by loss, filtering by state and going to the next page;
- ``restartTableReady``: for a restarted HQ, how long until the whole table is usable again (it starts
  from the copy the first run saved in the HQ home).

Prints and saves bench/results/dashboard_first_page.json.
Run: `.venv/bin/python bench/dashboard_first_page.py [--jobs N] [--store DIR]` (needs /usr/bin/chromium:
`make chromium`); ``--store`` keeps the filled store in DIR and reuses it on the next run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "dashboard_first_page.json"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BATCH = 5000
STATES = ["succeeded"] * 90 + ["failed"] * 7 + ["cancelled"] * 2 + ["pruned"]


def documents(i: int, start: datetime, rng: random.Random) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One finished Job as mlqueue stores it: the Job, its Order (Outcome embedded) and its Outcome."""
    oid = ObjectId()
    job_id = str(oid)
    created = start + timedelta(seconds=i * 3)
    began, ended = created + timedelta(seconds=1), created + timedelta(seconds=3)
    state = rng.choice(STATES)
    job = {"_id": oid, "scriptName": "toy", "projectName": f"project{i % 20}", "lr": round(rng.uniform(1e-4, 0.1), 5),
           "momentum": round(rng.uniform(0, 0.99), 3), "batchSize": rng.choice([16, 32, 64, 128]),
           "optimizer": rng.choice(["adam", "sgd", "rmsprop"]), "epochs": 5, "createdDate": created}
    loss = rng.uniform(0.05, 5.0) if state == "succeeded" else None
    worker = f"w{i % 4}@host{i % 4}"
    outcome = {"status": 200 if state == "succeeded" else 500, "loss": loss,
               "metric": 1 / (1 + loss) if loss is not None else None, "epochsRun": 5, "jobId": job_id,
               "orderId": str(ObjectId()), "attempt": 1, "worker": worker, "host": f"host{i % 4}", "state": state,
               "finishedDate": ended, "durationSeconds": 2.0, "startedDate": began}
    history = [{"at": created, "to": "unassigned", "by": "cli", "why": "submitted"},
               {"at": began, "to": "assigned", "by": worker, "why": "picked up"},
               {"at": began, "to": "running", "by": worker, "why": "attempt 1 started"},
               {"at": ended, "to": state, "by": worker, "why": "script finished"}]
    metrics = [{"at": began, "epoch": e, "loss": (loss or 1.0) + 10 / e} for e in range(1, 6)]
    order = {"jobId": job_id, "state": state, "createdDate": created, "updatedDate": ended, "attempts": 1,
             "maxAttempts": 3, "timeLimit": 86400.0, "scriptName": "toy", "projectName": job["projectName"],
             "sweepId": None, "delivery": secrets.token_hex(16), "enqueuedAt": created, "worker": worker,
             "host": f"host{i % 4}", "pid": 1000 + i % 4, "assignedDate": began, "startedDate": began,
             "heartbeatAt": ended, "finishedDate": ended, "outcome": outcome, "outcomeStored": True,
             "history": history, "metrics": metrics, "latestMetrics": metrics[-1], "log": []}
    return job, order, dict(outcome)


def fill(db: Any, n: int) -> float:
    """Insert n finished Jobs; returns the seconds it took."""
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(seconds=3 * n)
    began = time.perf_counter()
    for first in range(0, n, BATCH):
        batch = [documents(i, start, rng) for i in range(first, min(n, first + BATCH))]
        db.jobs.insert_many([b[0] for b in batch], ordered=False)
        db.orders.insert_many([b[1] for b in batch], ordered=False)
        db.outcomes.insert_many([b[2] for b in batch], ordered=False)
        print(f"  inserted {first + len(batch):,} Jobs", flush=True)
    return time.perf_counter() - began


def first_rows(page: Any, url: str) -> float:
    """Seconds from navigation to the first row drawn in the Jobs grid."""
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#jobs-grid .ag-center-cols-container .ag-row [col-id='state']:not(:empty)",
                           timeout=300_000)
    return time.perf_counter() - started


def timed(action: Any, done: Any) -> float:
    started = time.perf_counter()
    action()
    done()
    return time.perf_counter() - started


def measure(url: str, token: str, started: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_cookies([{"name": "mlqueue_token", "value": token, "url": url}])
        context.set_default_timeout(300_000)
        cold_page = context.new_page()
        cold = first_rows(cold_page, f"{url}/ui/")
        cold_page.wait_for_selector("#jobs-summary:has-text('jobs:')", timeout=900_000)  # the 5 s summary tick
        table_read = time.perf_counter() - started
        page = context.new_page()
        warm = first_rows(page, f"{url}/ui/")
        summary = "#jobs-grid .ag-paging-row-summary-panel"

        first_row = "#jobs-grid .ag-center-cols-container [row-index='0']"
        before = page.locator(f"{first_row} [col-id='outcome.loss']").inner_text()
        changed = ("([row, before]) => { const c = document.querySelector(row + \" [col-id='outcome.loss']\");"
                   " return c && c.innerText && c.innerText !== before; }")
        sort = timed(lambda: page.click("#jobs-grid .ag-header-cell[col-id='outcome.loss'] .ag-header-cell-label"),
                     lambda: page.wait_for_function(changed, arg=[first_row, before]))
        page.click("#jobs-f-state")
        filter_ = timed(lambda: page.locator("[role=option]", has_text="failed").first.click(),
                        lambda: page.wait_for_function(
                            "() => { const r = document.querySelector(\"#jobs-grid .ag-center-cols-container "
                            "[row-index='0'] [col-id='state']\"); return r && r.innerText === 'failed'; }"))
        page.keyboard.press("Escape")
        shown = page.locator(summary).inner_text()
        next_page = timed(lambda: page.click("#jobs-grid .ag-paging-button[aria-label='Next Page']"),
                          lambda: page.wait_for_selector("#jobs-grid .ag-center-cols-container [row-index='50']"))
        browser.close()
    return {"coldFirstPageSeconds": round(cold, 3), "tableReadWithinSeconds": round(table_read, 1),
            "warmFirstPageSeconds": round(warm, 3),
            "sortByLossSeconds": round(sort, 3), "filterByStateSeconds": round(filter_, 3),
            "nextPageSeconds": round(next_page, 3), "afterFilterPager": shown}


def restart_ready(settings: Any) -> float:
    """Seconds for a new dashboard (as after an HQ restart) to have the whole table, from the saved copy."""
    from mlqueue.dashboard.table import JobTable, snapshot_path

    deadline = time.monotonic() + 120
    while not snapshot_path(settings).is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
    started = time.perf_counter()
    JobTable(settings).frame()
    elapsed = time.perf_counter() - started
    logging.getLogger("mlqueue.dashboard.table").setLevel(logging.CRITICAL)  # its background re-read meets the
    return round(elapsed, 3)                                                 # store being stopped: not news


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--store", type=Path, help="keep the filled store here and reuse it next time")
    args = parser.parse_args()
    if not Path("/usr/bin/chromium").exists():
        raise SystemExit("/usr/bin/chromium is missing: `make chromium` (apt-get install -y chromium)")

    import pymongo
    import uvicorn

    from mlqueue import api, store
    from mlqueue.servers import MongoServer, free_port
    from mlqueue.settings import Settings

    with tempfile.TemporaryDirectory(prefix="mlqueue-bench-") as tmp:
        data = args.store or Path(tmp)
        mongo = MongoServer(data / "mongo", data / "mongo.log").start()
        try:
            token = secrets.token_urlsafe(16)
            settings = Settings(home=Path(tmp), broker_url=f"redis://127.0.0.1:{free_port()}/0", mongo_url=mongo.url,
                                mongo_db="bench", token=token)
            store.ensure_indexes(settings)
            client = pymongo.MongoClient(mongo.url, tz_aware=True)
            have = client.bench.jobs.estimated_document_count()
            insert_seconds = None
            if have != args.jobs:
                client.drop_database("bench")
                store.ensure_indexes(settings)
                print(f"filling a fresh store with {args.jobs:,} finished Jobs ...", flush=True)
                insert_seconds = round(fill(client.bench, args.jobs), 1)
            port = free_port()
            started = time.perf_counter()
            server = uvicorn.Server(uvicorn.Config(api.create_app(settings), host="127.0.0.1", port=port,
                                                   log_level="warning"))
            threading.Thread(target=server.run, daemon=True).start()
            while not server.started:
                time.sleep(0.05)
            load = os.getloadavg()[0]
            figures = measure(f"http://127.0.0.1:{port}", token, started)
            server.should_exit = True
            figures["restartTableReadySeconds"] = restart_ready(settings)
        finally:
            mongo.stop()
    result = {"jobs": args.jobs, "insertSeconds": insert_seconds, **figures,
              "cpus": os.cpu_count(), "loadAverage1mBefore": round(load, 2),
              "measuredAt": datetime.now(UTC).isoformat(timespec="seconds")}
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
