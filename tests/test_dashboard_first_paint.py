"""The Jobs page's first rows in the HTML index (``mlqueue.dashboard.first_paint``): in the page as
fetched plainly, escaped, on the Jobs page only, and replaced in the browser by the grid, which still
sorts and filters. Same HQ, browser and helpers as ``test_dashboard``."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import test_dashboard
from conftest import Farm, wait_for
from test_dashboard import HQ, cell, choose, number_at, toy_jobs, wait_rows

browser, hq, page = test_dashboard.browser, test_dashboard.hq, test_dashboard.page  # the same fixtures

PREVIEW = 'id="jobs-preview"'
# A Job's fields are whatever its submitter wrote: markup in them must reach the page as text.
HOSTILE = ["<script>window.mlqueueXss = 1</script>", '<img src=x onerror="window.mlqueueXss = 2">']


def index_html(hq: HQ, path: str) -> str:
    """The HTML the HQ serves for a dashboard URL, fetched as a plain client (no script runs)."""
    request = urllib.request.Request(hq.ui(path), headers={"Authorization": f"Bearer {hq.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def preview_of(hq: HQ, path: str) -> str:
    """The index of ``path`` once the HQ has its first rows at hand (the first request may come too early)."""
    found: list[str] = []

    def served() -> bool:
        found[:] = [index_html(hq, path)]
        return PREVIEW in found[0]

    wait_for(served, timeout=30, what=f"the index of /ui/{path} to carry the first rows")
    return found[0]


def test_the_jobs_page_html_carries_its_newest_rows_escaped_and_only_there(farm: Farm, hq: HQ) -> None:
    ids = farm.submit(*toy_jobs(3), *({"scriptName": "toy", "projectName": "beta", "note": text} for text in HOSTILE))
    html = preview_of(hq, "")
    assert ids[-1] in html and ids[0] in html  # the newest Job's row, and the others (fewer than a page)
    assert html.index(ids[-1]) < html.index(ids[0])  # newest first, as the grid's default order
    assert "&lt;script&gt;window.mlqueueXss = 1&lt;/script&gt;" in html  # the Job's field, as text
    assert "<script>window.mlqueueXss" not in html and "<img src=x" not in html
    assert html.index(PREVIEW) < html.index('id="react-entry-point"')  # drawn before any script runs

    assert ids[-1] in preview_of(hq, "jobs?projectName=beta")  # the page's quick filters, from its URL
    assert ids[1] not in preview_of(hq, "jobs?projectName=beta")  # toy_jobs: odd ones are alpha
    assert PREVIEW not in index_html(hq, "jobs?projectName=nothing")  # no rows: nothing to draw early
    for other in ("workers", "code", f"job/{ids[0]}", "sweeps"):
        assert PREVIEW not in index_html(hq, other), other


def test_the_grid_replaces_the_first_rows_and_still_sorts_and_filters(farm: Farm, hq: HQ, page: Any) -> None:
    farm.start_worker("w1")
    ids = farm.submit(*toy_jobs(6), {"scriptName": "toy", "raiseError": "diverged", "note": HOSTILE[0]},
                      {"scriptName": "toy", "note": HOSTILE[1]})
    for job_id in ids:
        farm.wait_final(job_id)
    preview_of(hq, "")  # the HQ has the rows at hand: the browser gets them in its first HTML
    page.add_init_script("document.addEventListener('DOMContentLoaded', () => {"
                         " window.mlqueuePreviewSeen = !!document.getElementById('jobs-preview'); });")
    page.goto(hq.ui())
    wait_rows(page, 8)
    assert page.evaluate("window.mlqueuePreviewSeen") is True
    page.wait_for_selector("#jobs-preview", state="detached")
    assert page.evaluate("window.mlqueueXss") is None  # no Job's field ran as a script

    losses = sorted(o["loss"] for o in farm.db.outcomes.find({"loss": {"$ne": None}}))
    page.click("#jobs-grid .ag-header-cell[col-id='outcome.loss'] .ag-header-cell-label")
    wait_for(lambda: number_at(page, 0, "outcome.loss") == pytest.approx(losses[0], rel=1e-3), what="sorted by loss")
    choose(page, "jobs-f-state", "failed")
    wait_rows(page, 1)
    assert cell(page, 0, "state") == "failed"


def test_right_after_a_restart_the_first_rows_come_from_the_hqs_home_marked_with_their_time(farm: Farm) -> None:
    """A restarted HQ has not read its table yet: the default view's rows kept by the previous run are
    served at once (the grid's first rows come from the table's saved copy, no newer)."""
    import dash

    from mlqueue.dashboard.common import Ctx
    from mlqueue.dashboard.first_paint import FirstPaint, saved_path
    from mlqueue.dashboard.table import JobTable, snapshot_path

    def dashboard(table: JobTable) -> FirstPaint:
        app = dash.Dash(__name__, requests_pathname_prefix="/ui/", routes_pathname_prefix="/")
        return FirstPaint(Ctx(app=app, settings=farm.settings, table=table), nav=[], wait=30)

    ids = farm.submit(*toy_jobs(3))
    running = JobTable(farm.settings)
    running.start_loading()
    wait_for(lambda: running.ready and snapshot_path(farm.settings).is_file(), what="the table to be read and saved")
    html = dashboard(running).html("/ui/", {})
    assert ids[-1] in html and "as of" not in html  # from the table itself
    wait_for(saved_path(farm.settings).is_file, what="the first rows to be kept in the HQ's home")

    restarted = dashboard(JobTable(farm.settings))  # its table not read yet
    html = restarted.html("/ui/jobs", {})
    assert ids[-1] in html and ids[0] in html and "as of" in html
    assert restarted.html("/ui/workers", {}) == ""
