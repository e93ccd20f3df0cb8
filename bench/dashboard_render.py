"""How long the dashboard's Jobs page takes to show its first rows at 100,000 Jobs, in headless Chromium,
with the HQ warm and right after it starts; and what the HQ process holds in memory for them.

One store (``bench.harness``) gets two databases of finished Jobs inserted directly, as N submitted and
finished Jobs would leave them (Job, Order with history, per-epoch metrics and embedded Outcome, Outcome):
``big`` (``--jobs``, 100,000) and ``small`` (``--baseline-jobs``, 1,000): **the same page on the small one,
in the same run, is the baseline**. For each, the real HQ (``mlqueue hq``, a separate process, pointed at
the store by ``MLQUEUE_MONGO_URL``) is started, the store restarted with it as its embedded store would
be, and Chromium measures, from navigation start (the page's own clock) to the first frame with rows
on screen (``FirstRows``: the HQ's preview of them in the HTML, ``first_paint.py``, or the grid's, whichever
comes first) and to the grid's own first rows (``GridReady``; ``GridWall`` is the same from the bench's
clock, as earlier versions of this bench reported it):

- ``afterStart``: navigating the moment the HQ's HTTP port takes connections (its tables are still
  being read);
- ``warm``: once the HQ has read everything (median of ``--reps`` visits, each a fresh browser context,
  so nothing is cached by the browser either);
- ``afterRestart``: the HQ stopped (SIGTERM) and started again (its saved table in its home), navigating
  as soon as its port takes connections.

Also: the API's first ``/orders`` page (another baseline), sorting by loss, filtering by state and the next
page in a warm tab, and the HQ's resident memory (``VmRSS``) once everything is read.
Prints and saves bench/results/dashboard_render.json.
Run: `.venv/bin/python bench/dashboard_render.py [--jobs 100000] [--baseline-jobs 1000] [--reps 3]`
(needs /usr/bin/chromium: `make chromium`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIRST_ROW = "#jobs-grid .ag-center-cols-container .ag-row [col-id='state']:not(:empty)"
# In each visit's page, from its first byte: the time of the first frame after the HQ's preview rows
# (first_paint.py) and after the grid's own rows were put in the document.
MARKS = """(() => {
  const marks = window.mlqueueMarks = {};
  const seen = (name, selector) => {
    if (marks[name] === undefined && document.querySelector(selector)) {
      marks[name] = 0;
      requestAnimationFrame(() => { marks[name] = performance.now(); });
    }
  };
  new MutationObserver(() => { seen("preview", "#jobs-preview tbody tr"); seen("grid", GRID_ROW); })
    .observe(document, {childList: true, subtree: true});
})();""".replace("GRID_ROW", json.dumps(FIRST_ROW))
NETWORK: dict[str, float] = {"mbps": 0.0, "latencyMs": 0.0}  # 0: localhost as it is (--network-mbps)
BATCH = 5000
DATABASES = {"small": "baseline", "big": "bench"}  # "bench": a store kept by the older dashboard bench fits
STATES = ["succeeded"] * 90 + ["failed"] * 7 + ["cancelled"] * 2 + ["pruned"]


def documents(i: int, start: datetime, rng: random.Random) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One finished Job as mlqueue stores it: the Job, its Order (Outcome embedded) and its Outcome."""
    from bson import ObjectId

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
        print(f"  {db.name}: inserted {first + len(batch):,} Jobs", end="\r", flush=True)
    print()
    return time.perf_counter() - began


class HQProcess:
    """``mlqueue hq`` in its own session, on the bench's servers and one database."""

    def __init__(self, env: dict[str, str], home: Path, port: int) -> None:
        self.env, self.home, self.port = env, home, port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start it; returns the seconds until its HTTP port takes connections (not ``/health``: that one
        asks the store, which is busy with the start's whole reads)."""
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "hq.out", "ab")  # noqa: SIM115 - owned by the child
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "mlqueue.cli", "hq", "--home", str(self.home),
                                      "--port", str(self.port)], cwd=ROOT, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise SystemExit(f"the HQ ended: see {self.home / 'hq.out'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        harness.wait_until(answers, 180, "the HQ to answer HTTP", every=0.05)
        return time.perf_counter() - started

    @property
    def token(self) -> str:
        return json.loads((self.home / "config.json").read_text())["token"]

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def first_rows(browser: Any, hq: HQProcess) -> tuple[dict[str, float | None], Any]:
    """A visit of the Jobs page in a fresh browser context: seconds from navigation start (the page's own
    clock) to the first frame showing rows (``firstRows``: the HQ's preview or the grid, whichever first;
    ``preview`` None when the HQ served none) and to the grid's own first rows (``gridReady``); when the
    HTML page had arrived whole (``html``); and, as the earlier versions of this bench measured it, the
    bench's wall clock from ``goto`` to the grid's rows."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "mlqueue_token", "value": hq.token, "url": hq.url}])
    context.set_default_timeout(300_000)
    context.add_init_script(MARKS)
    page = context.new_page()
    if NETWORK["mbps"]:  # as over a home network: Chromium's own throttling (DevTools' network conditions)
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        rate = NETWORK["mbps"] * 1e6 / 8
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": NETWORK["latencyMs"],
                                                      "downloadThroughput": rate, "uploadThroughput": rate})
    started = time.perf_counter()
    page.goto(f"{hq.url}/ui/", wait_until="commit")
    page.wait_for_selector(FIRST_ROW)
    wall = time.perf_counter() - started
    page.wait_for_function("window.mlqueueMarks.grid > 0")
    marks = page.evaluate("window.mlqueueMarks")
    html = page.evaluate("performance.getEntriesByType('navigation')[0].responseEnd") / 1000
    preview = marks.get("preview") / 1000 if marks.get("preview") else None
    grid = marks["grid"] / 1000
    return {"firstRows": round(min(grid, preview or grid), 3), "preview": preview and round(preview, 3),
            "gridReady": round(grid, 3), "gridWall": round(wall, 3), "html": round(html, 3)}, page


def wait_read(page: Any, hq: HQProcess, started: float) -> float:
    """Seconds from ``started`` until the HQ's table is read whole (the page's summary shows the counts)."""
    page.wait_for_selector("#jobs-summary:has-text('jobs:')", timeout=900_000)  # the 5 s summary tick
    return time.perf_counter() - started


def timed(action: Any, done: Any) -> float:
    started = time.perf_counter()
    action()
    done()
    return time.perf_counter() - started


def interactions(page: Any) -> dict[str, float]:
    """Sort by loss, filter by state, next page: seconds until the grid shows each."""
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
    next_page = timed(lambda: page.click("#jobs-grid .ag-paging-button[aria-label='Next Page']"),
                      lambda: page.wait_for_selector("#jobs-grid .ag-center-cols-container [row-index='50']"))
    return {"sortByLossSeconds": round(sort, 3), "filterByStateSeconds": round(filter_, 3),
            "nextPageSeconds": round(next_page, 3)}


def api_first_page(hq: HQProcess, reps: int) -> float:
    """Median seconds of ``GET /orders?limit=50`` once the HQ has read its index."""
    import httpx

    with httpx.Client(base_url=hq.url, headers={"Authorization": f"Bearer {hq.token}"}, timeout=300) as http:
        samples = []
        for _ in range(reps):
            started = time.perf_counter()
            assert http.get("/orders", params={"limit": 50}).status_code == 200
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


class Store:
    """The bench's store, restarted with each HQ start as the HQ's embedded store would be (a store left
    running would still be busy with the whole reads the stopped HQ had asked for)."""

    def __init__(self, base: Path, redis_server: Any) -> None:
        self.base, self.redis_server, self.server = base, redis_server, None
        self.port: int | None = None

    def start(self) -> Any:
        """(Re)start it on the same port, as the HQ does: the dashboard's saved table is keyed by the store's URL."""
        from mlqueue.servers import MongoServer

        self.stop()
        self.server = MongoServer(self.base / "mongo", self.base / "mongo.log", port=self.port).start()
        self.port = self.server.port
        return self.server

    def env(self, home: Path, database: str) -> dict[str, str]:
        """A fresh store, and the environment of an HQ using it."""
        return harness.child_env(harness.mlqueue_env(home, self.redis_server, self.start(), database))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def visits(name: str, found: list[dict[str, float | None]]) -> dict[str, Any]:
    """Medians of some visits' figures: first rows (preview or grid), grid ready, the bench's wall clock."""
    return {f"{name}FirstRowsSeconds": statistics.median(v["firstRows"] for v in found),
            f"{name}GridReadySeconds": statistics.median(v["gridReady"] for v in found),
            f"{name}GridWallSeconds": statistics.median(v["gridWall"] for v in found),
            f"{name}HtmlSeconds": statistics.median(v["html"] for v in found),
            f"{name}PreviewShown": sum(v["preview"] is not None for v in found)}


def measure(browser: Any, store: Store, home: Path, database: str, reps: int, interact: bool) -> dict[str, Any]:
    """Every figure for one database: after start, warm, after restart, memory."""
    from mlqueue.servers import free_port

    hq = HQProcess(store.env(home, database), home, free_port())
    figures: dict[str, Any] = {}
    launched = time.perf_counter()
    try:
        figures["hqAnswersAfterSeconds"] = round(hq.start(), 2)
        after_start, page = first_rows(browser, hq)
        figures.update(visits("afterStart", [after_start]))
        figures["readWholeAfterLaunchSeconds"] = round(wait_read(page, hq, launched), 1)
        page.context.close()
        warm = []
        for _ in range(reps):
            seconds, page = first_rows(browser, hq)
            warm.append(seconds)
            if interact and len(warm) == reps:
                figures.update(interactions(page))
            page.context.close()
        figures.update(visits("warm", warm))
        figures["warmAll"] = warm
        figures["apiOrdersFirstPageSeconds"] = round(api_first_page(hq, reps), 4)
        time.sleep(2)  # let the last requests' garbage go
        figures["hqRssMb"] = round(hq.rss_mb(), 1)
        hq.stop()
        hq.port, hq.env = free_port(), store.env(home, database)
        figures["restartAnswersAfterSeconds"] = round(hq.start(), 2)
        after_restart, page = first_rows(browser, hq)
        figures.update(visits("afterRestart", [after_restart]))
        page.context.close()
    finally:
        hq.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--baseline-jobs", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--store", type=Path, help="keep the servers' data here and reuse the filled store next time")
    parser.add_argument("--network-mbps", type=float, default=0.0,
                        help="throttle the browser to this bandwidth (and --latency-ms), as over a home network")
    parser.add_argument("--latency-ms", type=float, default=5.0)
    args = parser.parse_args()
    NETWORK.update(mbps=args.network_mbps, latencyMs=args.latency_ms if args.network_mbps else 0.0)
    if not Path("/usr/bin/chromium").exists():
        raise SystemExit("/usr/bin/chromium is missing: `make chromium` (apt-get install -y chromium)")
    import pymongo
    from playwright.sync_api import sync_playwright

    from mlqueue import store
    from mlqueue.servers import RedisServer
    from mlqueue.settings import Settings

    result: dict[str, Any] = {"jobs": args.jobs, "baselineJobs": args.baseline_jobs, "cpus": os.cpu_count(),
                              "network": dict(NETWORK)}
    with tempfile.TemporaryDirectory(prefix="mlqueue-bench-") as tmp_name:
        tmp = Path(tmp_name)
        base = args.store or tmp
        redis_server = RedisServer(base / "redis", base / "redis.log", password=secrets.token_hex(8)).start()
        store_ = Store(base, redis_server)
        try:
            client = pymongo.MongoClient(store_.start().url, tz_aware=True)
            for name, n in (("small", args.baseline_jobs), ("big", args.jobs)):
                database = DATABASES[name]
                settings = Settings(home=tmp / name, broker_url=redis_server.url, mongo_url=store_.server.url,
                                    mongo_db=database)
                if client[database].jobs.estimated_document_count() != n:
                    client.drop_database(database)
                    store.ensure_indexes(settings)
                    result[f"{name}InsertSeconds"] = round(fill(client[database], n), 1)
                store.ensure_indexes(settings)
            client.close()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                for name in ("small", "big"):
                    result["loadAverage1mBefore" + name.title()] = round(os.getloadavg()[0], 2)
                    print(f"measuring the Jobs page on {name} ...", flush=True)
                    result[name] = measure(browser, store_, tmp / name, DATABASES[name], args.reps,
                                           interact=name == "big")
                browser.close()
        finally:
            store_.stop()
            redis_server.stop()
    small, big = result["small"], result["big"]
    for visit in ("afterStart", "warm", "afterRestart"):
        for figure in ("FirstRows", "GridReady"):
            key = f"{visit}{figure}Seconds"
            result[key.replace("Seconds", "RatioToBaseline")] = round(big[key] / max(small[key], 1e-3), 2)
    result["hqRssForBigMinusSmallMb"] = round(big["hqRssMb"] - small["hqRssMb"], 1)
    result["measuredAt"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))
    harness.save(harness.results_path("dashboard_render"), result)


if __name__ == "__main__":
    main()
