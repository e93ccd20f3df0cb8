"""The dashboard in a real headless Chromium, served by the real API (token and all), against real
servers and real worker processes: load every page, sort and filter the Jobs table, watch a running
Job's curve grow, submit a Job from the form and see it finish, see the token required.

Chromium is Debian's ``/usr/bin/chromium`` (``make chromium`` installs it); without it these tests fail
rather than skip, so a machine that cannot run them is noticed. Screenshots of every page go to the
test's temporary directory, or to ``$MLQUEUE_SCREENSHOTS`` (``docs/screenshots`` to refresh the README's).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import ROOT, Farm, wait_for

from mlqueue import api, scripts, sweeps
from mlqueue.servers import free_port
from mlqueue.settings import Settings
from mlqueue.sweeps import driver as sweep_driver

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
UI_TIMEOUT_MS = 30_000

TRAINER = '''\
"""A trainer-like script for the dashboard tests: curves, output, predictions and an artifact."""
import random
from pathlib import Path


def run(job, report):
    rng = random.Random(job.get("seed", 1))
    for epoch in range(1, int(job.get("epochs", 3)) + 1):
        report(epoch=epoch, loss=1.0 / epoch, val_loss=1.3 / epoch)
    actual = [rng.uniform(0, 10) for _ in range(300)]
    predicted = [a + rng.gauss(0, 0.4 + a / 20) for a in actual]
    weights = Path(job["writePath"]) / "weights.txt"
    weights.write_text("w = 0.5\\n")
    return {"status": 200, "loss": 0.3, "metric": 0.9, "predictions": {"actual": actual, "predicted": predicted},
            "artifacts": [{"name": "weights.txt", "path": str(weights)}]}
'''

SWEEP = """\
name: dashboard-sweep
base: {scriptName: toy, projectName: sweeps, epochs: 2, sleepSeconds: 0.05, noise: 0.0}
space:
  x: {float: [-5, 5]}
  y: {float: [-5, 5]}
  shape: {choice: [flat, steep]}
objective: loss
method: random
seed: 3
budget: {maxTrials: 8, maxParallel: 2}
earlyStopping: none
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (never Playwright's own browser download)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard tests need Debian's chromium "
                    "(`make chromium`, or `apt-get install -y chromium`)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class HQ:
    """The HQ's HTTP side for one test: ``mlqueue.api`` (dashboard mounted at /ui) on a free port."""

    url: str
    token: str
    settings: Settings
    shots: Path

    def ui(self, path: str = "") -> str:
        return f"{self.url}/ui/{path.lstrip('/')}"

    def screenshot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture
def hq(farm: Farm, tmp_path: Path) -> Iterator[HQ]:
    token = secrets.token_urlsafe(16)
    settings = farm.settings.model_copy(update={"token": token})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="the API server to start")
    shots = Path(os.environ.get("MLQUEUE_SCREENSHOTS") or tmp_path / "screenshots")
    shots = shots if shots.is_absolute() else ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    yield HQ(url=f"http://127.0.0.1:{port}", token=token, settings=settings, shots=shots)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser: Any, hq: HQ) -> Iterator[Any]:
    """A browser tab that carries the HQ token (as the cookie /login would set)."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.add_cookies([{"name": "mlqueue_token", "value": hq.token, "url": hq.url}])
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


# --------------------------------------------------------------------------- helpers


def row_count(page: Any) -> int:
    """How many rows match, as the grid's pager says ("1 to 50 of 1,234")."""
    text = page.locator("#jobs-grid .ag-paging-row-summary-panel").inner_text()
    found = re.search(r"of\s+([\d,]+)", text)
    return int(found.group(1).replace(",", "")) if found else -1


def wait_rows(page: Any, expected: int) -> None:
    wait_for(lambda: row_count(page) == expected, timeout=30, what=f"the jobs table to show {expected} rows")


def cell(page: Any, row: int, column: str) -> str:
    return page.locator(f"#jobs-grid .ag-center-cols-container [row-index='{row}'] [col-id='{column}']").inner_text()


def number_at(page: Any, row: int, column: str) -> float | None:
    """A numeric cell, or None while its block is still loading."""
    try:
        return float(cell(page, row, column))
    except ValueError:
        return None


def choose(page: Any, dropdown: str, option: str) -> None:
    """Pick an option of a Dash dropdown (open it, click the option, close it)."""
    page.click(f"#{dropdown}")
    page.locator("[role=option]", has_text=option).first.click()
    page.keyboard.press("Escape")


def trace_lengths(page: Any, graph: str) -> list[int]:
    """Number of points in each trace of a plotly graph, read from the chart as plotly drew it."""
    return page.evaluate(
        "id => { const p = document.querySelector('#' + id + ' .js-plotly-plot');"
        " return p && p._fullData ? p._fullData.map(t => (t.x || t.dimensions || []).length) : []; }",
        graph)


def toy_jobs(n: int) -> list[dict[str, Any]]:
    return [{"scriptName": "toy", "projectName": "alpha" if i % 2 else "beta", "lr": 0.5 * i, "momentum": i % 3}
            for i in range(n)]


def run_sweep(farm: Farm, path: Path) -> str:
    """Create a sweep from a file and drive it to its end in this process, as the HQ would."""
    spec, text = sweeps.parse_file(path, farm.settings)
    sweep_id = sweep_driver.create(spec, text, str(path), settings=farm.settings)
    stop = threading.Event()
    driver = sweep_driver.Driver(settings=farm.settings, sweep_ids=[sweep_id], poll=0.2)
    thread = threading.Thread(target=driver.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: farm.db.sweeps.find_one({"name": "dashboard-sweep",
                                                  "state": {"$in": list(sweep_driver.FINAL)}}),
                 timeout=120, what="the sweep to end")
    finally:
        stop.set()
        thread.join(10)
    return sweep_id


# --------------------------------------------------------------------------- tests


def test_jobs_table_sorts_filters_chooses_columns_and_exports_what_it_shows(farm: Farm, hq: HQ, page: Any) -> None:
    farm.start_worker("w1")
    ids = farm.submit(*toy_jobs(10), {"scriptName": "toy", "projectName": "alpha", "raiseError": "diverged"})
    for job_id in ids:
        farm.wait_final(job_id)
    losses = sorted(o["loss"] for o in farm.db.outcomes.find({"loss": {"$ne": None}}))

    page.goto(hq.ui())
    wait_rows(page, 11)
    page.wait_for_selector("#jobs-summary:has-text('10 succeeded, 1 failed')")
    hq.screenshot(page, "jobs")

    header = "#jobs-grid .ag-header-cell[col-id='outcome.loss'] .ag-header-cell-label"
    page.click(header)
    wait_for(lambda: number_at(page, 0, "outcome.loss") == pytest.approx(losses[0], rel=1e-3),  # 4 digits shown
             what="ascending loss")
    page.click(header)
    wait_for(lambda: number_at(page, 0, "outcome.loss") == pytest.approx(losses[-1], rel=1e-3),
             what="descending loss")

    choose(page, "jobs-f-state", "failed")
    wait_rows(page, 1)
    assert cell(page, 0, "state") == "failed"
    page.click("#jobs-f-state .dash-dropdown-clear")
    wait_rows(page, 11)
    choose(page, "jobs-f-projectName", "beta")
    wait_rows(page, 5)
    page.fill("#jobs-grid .ag-floating-filter[col-id='job.lr'] input", "3")  # any hyperparameter: lr == 3
    wait_rows(page, 1)
    assert cell(page, 0, "job.lr") == "3"
    page.fill("#jobs-grid .ag-floating-filter[col-id='job.lr'] input", "")
    wait_rows(page, 5)

    choose(page, "jobs-columns", "projectName")  # a hidden column: picking it shows it
    page.wait_for_selector("#jobs-grid .ag-header-cell[col-id='projectName']")
    choose(page, "jobs-columns", "createdDate")  # a shown column: picking it hides it
    page.wait_for_selector("#jobs-grid .ag-header-cell[col-id='createdDate']", state="detached")
    shown = page.locator("#jobs-grid .ag-header-row-column .ag-header-cell").evaluate_all(
        "cells => cells.map(c => c.getAttribute('col-id'))")
    assert "createdDate" not in shown and "job.lr" in shown
    assert shown[:4] == ["jobId", "state", "outcome.loss", "outcome.metric"]  # what a user compares, first

    with page.expect_download() as download:
        page.click("#jobs-export")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 5 and {r["projectName"] for r in rows} == {"beta"}
    assert list(rows[0]) == shown  # the columns shown, in the grid's order
    exported = [float(r["outcome.loss"]) for r in rows]
    assert exported == sorted(exported, reverse=True)  # in the grid's order too (loss, descending)


def test_a_running_jobs_curve_grows_live_then_its_log_outcome_and_artifact_show(
        farm: Farm, hq: HQ, page: Any) -> None:
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "projectName": "live", "lr": 0.3, "epochs": 12,
                            "sleepSeconds": 9, "printLines": 3, "writeArtifact": True})
    wait_for(lambda: (farm.order(job_id).get("latestMetrics") or {}).get("epoch", 0) >= 1, what="a first epoch")
    page.goto(hq.ui(f"job/{job_id}"))
    page.wait_for_selector("#job-state:has-text('running')")
    page.evaluate("() => { window.stillTheSamePage = true; }")
    first = wait_for(lambda: (trace_lengths(page, "job-curves") or [0])[0], what="the curve's first points")
    assert first < 12
    wait_for(lambda: (trace_lengths(page, "job-curves") or [0])[0] > first, what="the curve to grow")
    hq.screenshot(page, "job_running")
    page.wait_for_selector("#job-state:has-text('succeeded')", timeout=60_000)
    wait_for(lambda: trace_lengths(page, "job-curves") == [12], what="all 12 epochs on the curve")
    assert page.evaluate("() => window.stillTheSamePage === true"), "the page reloaded instead of updating"

    page.wait_for_selector("#job-log:has-text('toy line 3 of 3')")
    page.wait_for_selector("#job-outcome-table:has-text('loss')")
    history = page.locator("#job-history").inner_text()
    assert all(state in history for state in ("unassigned", "assigned", "running", "succeeded"))
    link = page.locator("#job-artifacts a.artifact").first
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).stat().st_size > 0 and download.value.suggested_filename
    hq.screenshot(page, "job")

    (hq.settings.home / "config.json").write_text(json.dumps({"flower_port": 5599}))  # as `mlqueue hq` writes it
    page.goto(hq.ui("workers"))
    assert page.get_attribute("#nav-flower", "href") == "http://127.0.0.1:5599/"
    page.wait_for_selector("#workers-grid .ag-row [col-id='name']:has-text('w1@')")
    assert int(page.locator("#workers-grid .ag-row [col-id='jobsDone']").first.inner_text()) >= 1
    wait_for(lambda: trace_lengths(page, "workers-share") == [1, 1], what="the busy/idle chart")
    hq.screenshot(page, "workers")


def test_a_job_submitted_from_the_form_runs_and_refused_fields_are_marked(farm: Farm, hq: HQ, page: Any,
                                                                          tmp_path: Path) -> None:
    farm.start_worker("w1")
    page.goto(hq.ui("new"))
    epochs = page.locator("#field-epochs input[type=number]")
    epochs.fill("-1")
    page.fill("#new-extra", json.dumps({"lr": 0.25}))
    page.click("#new-submit")
    page.wait_for_selector("#field-epochs .field-error:has-text('greater than or equal to 0')")
    page.wait_for_selector("#new-result:has-text('nothing was submitted')")
    assert farm.db.jobs.count_documents({}) == 0
    hq.screenshot(page, "new_job")

    epochs.fill("2")
    page.click("#new-submit")
    link = page.wait_for_selector("#new-job-link")
    job_id = link.inner_text()
    job = farm.db.jobs.find_one({})
    assert str(job["_id"]) == job_id and job["epochs"] == 2 and job["lr"] == 0.25 and job["scriptName"] == "toy"
    link.click()
    page.wait_for_selector("#job-state:has-text('succeeded')", timeout=60_000)

    page.click("#job-clone")
    page.wait_for_selector(f"#new-prefill-msg:has-text('{job_id}')")
    wait_for(lambda: page.locator("#field-epochs input[type=number]").input_value() == "2", what="epochs pre-filled")
    assert json.loads(page.locator("#new-extra").input_value()) == {"lr": 0.25}

    upload = tmp_path / "job.json"
    upload.write_text(json.dumps({"scriptName": "toy", "projectName": "uploaded", "lr": 0.75}))
    page.set_input_files("#new-upload input[type=file]", str(upload))
    wait_for(lambda: page.locator("#field-projectName input").input_value() == "uploaded", what="upload pre-fill")
    assert json.loads(page.locator("#new-extra").input_value()) == {"lr": 0.75}


def test_sweep_and_model_quality_pages_chart_real_results(farm: Farm, hq: HQ, page: Any, tmp_path: Path) -> None:
    farm.start_worker("w1")
    (tmp_path / "trainer.py").write_text(TRAINER)
    scripts.push(tmp_path / "trainer.py", "trainer", farm.settings)
    [trained] = farm.submit({"scriptName": "trainer", "projectName": "wine", "epochs": 4, "seed": 3})
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    sweep_id = run_sweep(farm, tmp_path / "sweep.yaml")
    assert farm.wait_final(trained)["state"] == "succeeded"

    page.goto(hq.ui(f"sweep/{sweep_id}"))
    page.wait_for_selector("#sweep-importance-method:has-text('Optuna')", timeout=60_000)
    for graph in ("sweep-best", "sweep-states", "sweep-scatter", "sweep-parallel", "sweep-importance"):
        wait_for(lambda graph=graph: trace_lengths(page, graph), what=f"{graph} to be drawn")
    assert trace_lengths(page, "sweep-scatter") == [8, 8, 8]  # objective vs x, y, shape
    assert page.locator("#sweep-trials .ag-center-cols-container .ag-row").count() == 8
    hq.screenshot(page, "sweep")

    page.goto(hq.ui("sweeps"))
    page.wait_for_selector(f"#sweeps-grid a:has-text('{sweep_id}')")

    page.goto(hq.ui("quality"))
    page.wait_for_selector("#quality-numbers:has-text('RMSE')")
    assert "300" in page.locator("#quality-numbers").inner_text()
    wait_for(lambda: trace_lengths(page, "quality-linearity") == [300, 2], what="predicted vs actual, and y = x")
    wait_for(lambda: trace_lengths(page, "quality-residuals") == [300], what="the residuals")
    hq.screenshot(page, "quality")


def test_the_dashboard_needs_the_token(farm: Farm, hq: HQ, browser: Any) -> None:
    request = urllib.request.Request(hq.ui("_dash-layout"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401

    context = browser.new_context(viewport=VIEWPORT)
    try:
        tab = context.new_page()
        tab.goto(hq.ui("workers"))
        assert "/login" in tab.url
        tab.fill("input[type=password], input[name=token]", "not-the-token")
        tab.keyboard.press("Enter")
        tab.wait_for_selector("text=not this HQ's token")
        tab.fill("input[type=password], input[name=token]", hq.token)
        tab.keyboard.press("Enter")
        tab.wait_for_selector("h2:has-text('Machines')")
        assert tab.url.endswith("/ui/workers")
    finally:
        context.close()


def test_only_the_code_page_loads_the_editor_and_from_the_hq_itself(farm: Farm, hq: HQ, page: Any) -> None:
    """The Jobs page does not download Ace (0.5 MB) and fetches its grid's module with its own scripts; the
    Code page loads Ace from the HQ (no CDN), once."""
    farm.submit(*toy_jobs(2))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(hq.ui("jobs"))
    wait_rows(page, 2)
    assert not [url for url in requested if "/ace/" in url], requested
    grid_module = [url for url in requested if url.endswith("/dash_ag_grid/async-community.js")]
    assert len(grid_module) == 1, requested  # preloaded by the index, and that copy used by the grid
    assert page.locator("link[rel=preload][href$='async-community.js']").count() == 1

    page.click("#nav-code")  # a link inside the app: the page does not reload
    page.wait_for_selector("#code-editor .ace_content")
    ace = [url for url in requested if "/ace/" in url]
    assert any(url.split("?")[0].endswith("/ace/ace.js") for url in ace), requested
    assert all(url.startswith(hq.url) for url in requested), requested  # works offline
    page.click("#nav-jobs")
    page.click("#nav-code")  # back again: the editor is made anew, Ace is not fetched again
    page.wait_for_selector("#code-editor .ace_content")
    assert [url for url in requested if "/ace/" in url] == ace


def test_the_jobs_table_answers_from_memory_and_sees_new_jobs(farm: Farm, hq: HQ, page: Any) -> None:
    """Without a worker: Jobs appear unassigned, then the table picks up state changes made meanwhile."""
    ids = farm.submit(*toy_jobs(3))
    page.goto(hq.ui("jobs?state=unassigned"))
    wait_rows(page, 3)
    started = time.monotonic()
    page.click("#jobs-refresh")
    wait_rows(page, 3)
    assert time.monotonic() - started < 5
    farm.start_worker("w1")
    for job_id in ids:
        farm.wait_final(job_id)

    def refreshed_empty() -> bool:
        page.click("#jobs-refresh")
        return row_count(page) == 0

    wait_for(refreshed_empty, timeout=60, what="the refreshed jobs table to show no unassigned Job")


def test_the_table_reads_only_what_changed_and_filters_like_the_grid_asks(farm: Farm) -> None:
    """No browser: the in-memory table keeps up with submits, cancels and finished Jobs without a full re-read."""
    from mlqueue import orders
    from mlqueue.dashboard.table import REFRESH_AFTER, JobTable

    first = farm.submit(*toy_jobs(4))
    table = JobTable(farm.settings)
    rows, count = table.page(0, 50)
    assert count == 4 and {r["state"] for r in rows} == {"unassigned"}

    orders.cancel(first[0], by="test", settings=farm.settings)
    [late] = farm.submit({"scriptName": "toy", "projectName": "gamma", "lr": 9.0, "tag": "new"})
    farm.start_worker("w1")
    for job_id in first[1:] + [late]:
        farm.wait_final(job_id)
    time.sleep(REFRESH_AFTER)
    rows, count = table.page(0, 50)
    states = {r["jobId"]: r["state"] for r in rows}
    assert count == 5 and states[first[0]] == "cancelled" and states[late] == "succeeded"
    assert {states[j] for j in first[1:]} == {"succeeded"}
    assert table.full_reads == 1, "changes were read by re-reading everything"
    [(worker, stats)] = table.worker_stats().items()
    assert worker.startswith("w1@") and stats["jobsDone"] == 4 and stats["currentJob"] is None

    def ids(sort: list[dict[str, Any]] | None = None, **filters: dict[str, Any]) -> list[str]:
        return [r["jobId"] for r in table.page(0, 50, sort, filters)[0]]

    by_lr = ids([{"colId": "job.lr", "sort": "asc"}])
    assert by_lr[:4] == first and by_lr[-1] == late  # lr 0, 0.5, 1, 1.5 then 9
    assert ids(**{"job.lr": {"filterType": "number", "type": "inRange", "filter": 0.5, "filterTo": 1.0}}) \
        == [first[2], first[1]]  # newest first
    assert ids(**{"job.tag": {"filterType": "text", "type": "blank"}}) == first[::-1]
    assert ids(**{"projectName": {"filterType": "text", "operator": "OR", "conditions": [
        {"filterType": "text", "type": "equals", "filter": "GAMMA"},
        {"filterType": "text", "type": "startsWith", "filter": "bet"}]}}) == [late, first[2], first[0]]
    assert ids([{"colId": "outcome.loss", "sort": "desc"}])[-1] == first[0]  # no loss (cancelled): last either way
    assert ids([{"colId": "outcome.loss", "sort": "asc"}])[-1] == first[0]
    csv_text = table.to_csv(["jobId", "state"], [{"colId": "job.lr", "sort": "desc"}])
    assert csv_text.splitlines()[:2] == ["jobId,state", f"{late},succeeded"]


def test_what_a_request_computed_from_an_old_table_is_never_served_for_the_new_one(farm: Farm) -> None:
    """Page requests run in threads: one still computing for the table as it was when a refresh installs a
    newer one must not leave its result (row positions) to the newer table's requests."""
    from mlqueue import orders
    from mlqueue.dashboard.table import REFRESH_AFTER, JobTable

    ids = farm.submit(*toy_jobs(3))
    table = JobTable(farm.settings)
    unassigned = {"state": {"filterType": "text", "type": "equals", "filter": "unassigned"}}
    old = table.frame()

    def slow_request_for_the_old_table() -> str:
        orders.cancel(ids[0], by="test", settings=farm.settings)
        time.sleep(REFRESH_AFTER)
        rows, count = table.page(0, 50, None, unassigned)  # meanwhile: a refresh, and a request on the new table
        assert count == 2 and table.frame() is not old
        return "positions in the old table"

    assert table._memo(old, "default", slow_request_for_the_old_table) == "positions in the old table"
    rows, count = table.page(0, 50, None, unassigned)
    assert count == 2 and {r["jobId"] for r in rows} == set(ids[1:])
    assert not isinstance(table._memo(table.frame(), "default", lambda: "recomputed"), str)  # the new table's own


def test_a_restarted_dashboard_starts_from_its_saved_table_then_rereads_the_store(farm: Farm) -> None:
    """The saved copy answers at once (with what changed since); a background full read then makes it exact."""
    from bson import ObjectId

    from mlqueue.dashboard.table import JobTable, snapshot_path

    kept, gone = farm.submit(*toy_jobs(2))
    first = JobTable(farm.settings)
    first.start_loading()
    wait_for(lambda: first.ready and snapshot_path(farm.settings).is_file(), what="the table to be read and saved")

    farm.db.orders.delete_one({"jobId": gone})  # a change no incremental read can see
    farm.db.jobs.delete_one({"_id": ObjectId(gone)})
    [new] = farm.submit({"scriptName": "toy", "lr": 7.0})
    restarted = JobTable(farm.settings)
    assert set(restarted.frame()["jobId"]) == {kept, gone, new}  # the saved copy, plus what changed since
    wait_for(lambda: restarted.full_reads == 1 and restarted.page(0, 50)[1] == 2,
             what="the background full read to drop the deleted Job")
    assert {r["jobId"] for r in restarted.page(0, 50)[0]} == {kept, new}


def test_a_quick_filter_keeps_its_choice_when_no_job_has_that_value(farm: Farm) -> None:
    """A dropdown clears a value missing from its choices, which dropped the grid's filter (state=unassigned
    showed every Job once the queue ran empty, or while the table was still being read)."""
    from types import SimpleNamespace

    from mlqueue import orders
    from mlqueue.dashboard.jobs_page import filter_choices
    from mlqueue.dashboard.table import JobTable

    ctx = SimpleNamespace(table=JobTable(farm.settings))
    assert set(orders.STATES) <= set(filter_choices(ctx, "state"))  # before the table is read, too
    assert "alpha" in filter_choices(ctx, "projectName", "alpha")
    assert filter_choices(ctx, "projectName") == []
