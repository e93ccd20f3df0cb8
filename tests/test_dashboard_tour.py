"""A tour of every dashboard page at 1280×800, as a laptop shows it: no page may scroll sideways, and the
README's screenshots are taken on the way (``make screenshots`` writes them to docs/screenshots).

One farm is stocked once with what the pages show (finished and failed Jobs, a trainer Job with
predictions and an artifact, a sweep over long nested parameter names, a Job still running), then each
``Stop`` of ``TOUR`` is visited in order. A new page adds itself with one ``Stop``; the tour fails if a
page of the navigation has none, so no page goes unchecked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import test_dashboard
from conftest import Farm, wait_for
from test_dashboard import HQ, TRAINER

from mlqueue import scripts, sweeps
from mlqueue.dashboard import app as dashboard_app
from mlqueue.sweeps import driver as sweep_driver

browser, hq, page = test_dashboard.browser, test_dashboard.hq, test_dashboard.page  # the same fixtures

SWEEP = """\
name: tour-sweep
base: {scriptName: toy, projectName: tour, epochs: 3, sleepSeconds: 0.05, noise: 0.0,
       hiddenLayers: [{activation: relu, widthModifier: 1.0, dropout: 0.0}]}
space:
  hiddenLayers:
    repeat: {int: [1, 3]}
    each:
      activation: {choice: [relu, elu, tanh]}
      widthModifier: {float: [0.5, 3.0]}
      dropout: {float: [0.0, 0.3]}
  learningRate: {float: [1.0e-4, 1.0e-1], log: true}
  optimizer: {choice: [adam, rmsprop]}
  extraTreesKeepThreshd: {float: [0.0, 0.5]}
objective: loss
method: random
seed: 5
budget: {maxTrials: 10, maxParallel: 2}
"""
LIVE = '''\
"""A training that prints and reports every epoch: what the running-Job and Machines pages show live."""
import time


def run(job, report):
    for epoch in range(1, 61):
        loss, val_loss = 2.0 / epoch + 0.1, 2.4 / epoch + 0.15
        print(f"epoch {epoch}/60  loss {loss:.4f}  val_loss {val_loss:.4f}", flush=True)
        report(epoch=epoch, loss=loss, val_loss=val_loss)
        time.sleep(2)
    return {"status": 200, "loss": val_loss}
'''
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const clipped = e => {  // inside a box that clips or scrolls and itself fits: not past the window's edge
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.overflowX !== 'visible' && a.getBoundingClientRect().right <= width + 1) { return true; }
    }
    return false;
  };
  const wide = Array.from(document.querySelectorAll('body *'))
    .filter(e => e.getBoundingClientRect().right > width + 1 && e.getClientRects().length && !clipped(e))
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + String(e.className).split(' ')[0]);
  return {scroll: document.documentElement.scrollWidth, width: width, wide: wide.slice(0, 8)};
}"""


@dataclass
class Stocked:
    """Ids of what the farm was stocked with, for the stops' paths."""

    trained: str
    failed: str
    running: str
    sweep: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stop:
    """One page of the tour: where it is, what shows it is drawn, and the screenshot it makes (if any)."""

    name: str
    path: Callable[[Stocked], str]
    ready: str
    screenshot: str | None = None
    then: Callable[[Any, Stocked], None] | None = None  # something to do on the page before checking it


def _curve_grew(tab: Any, _: Stocked) -> None:
    wait_for(lambda: (test_dashboard.trace_lengths(tab, "job-curves") or [0])[0] >= 2, what="a live curve")


def _charts_drawn(tab: Any, _: Stocked) -> None:
    wait_for(lambda: test_dashboard.trace_lengths(tab, "sweep-scatter") and
             test_dashboard.trace_lengths(tab, "sweep-parallel"), what="the sweep's charts")
    tab.locator("#sweep-trials").scroll_into_view_if_needed()  # the grid draws its rows once it is seen
    tab.wait_for_selector("#sweep-trials .ag-row .ag-cell:has-text('succeeded')")
    tab.evaluate("() => window.scrollTo(0, 0)")


def _pick_nn(tab: Any, _: Stocked) -> None:
    tab.wait_for_selector("#field-depedentVariable")


TOUR: list[Stop] = [
    Stop("jobs", lambda s: "", "#jobs-grid .ag-row [col-id='outcome.loss']", "jobs"),
    Stop("job", lambda s: f"job/{s.trained}", "#job-outcome-table", "job"),
    Stop("failed job", lambda s: f"job/{s.failed}", "#job-outcome:has-text('RuntimeError')"),
    Stop("running job", lambda s: f"job/{s.running}", "#job-state:has-text('running')", "job_running", _curve_grew),
    Stop("sweeps", lambda s: "sweeps", "#sweeps-grid .ag-row"),
    Stop("sweep", lambda s: f"sweep/{s.sweep}", "#sweep-scatter .js-plotly-plot", "sweep", _charts_drawn),
    Stop("quality", lambda s: "quality", ".js-plotly-plot", "quality"),
    Stop("machines", lambda s: "machines", ".machine", "machines"),
    Stop("workers", lambda s: "workers", "#workers-grid .ag-row, .machine", "workers"),
    Stop("code", lambda s: "code?script=trainer", "#code-diff .add", "code"),
    Stop("new job", lambda s: "new", "#field-epochs"),
    Stop("new nn job", lambda s: "new?script=nn", "#field-hiddenLayers", "new_job", _pick_nn),
]


def stock(farm: Farm, tmp_path: Path) -> Stocked:
    """Everything the pages show, finished (but for one running Job) before the tour starts."""
    farm.start_worker("w1")
    (tmp_path / "trainer.py").write_text(TRAINER)
    scripts.push(tmp_path / "trainer.py", "trainer", farm.settings)
    [trained] = farm.submit({"scriptName": "trainer", "projectName": "wine", "epochs": 6, "seed": 3})
    toys = farm.submit(*[{"scriptName": "toy", "projectName": "tour", "lr": 0.1 * i, "momentum": i % 3,
                          "batchSize": 16 * (1 + i % 2)} for i in range(6)])
    [failed] = farm.submit({"scriptName": "toy", "projectName": "tour", "raiseError": "diverged"})
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    spec, text = sweeps.parse_file(tmp_path / "sweep.yaml", farm.settings)
    sweep_id = sweep_driver.create(spec, text, "sweep.yaml", settings=farm.settings)
    stop = threading.Event()
    driver = sweep_driver.Driver(settings=farm.settings, sweep_ids=[sweep_id], poll=0.2)
    thread = threading.Thread(target=driver.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: sweep_driver.get(sweep_id, farm.settings)["state"] in sweep_driver.FINAL, timeout=180,
                 what="the tour's sweep to end")
    finally:
        stop.set()
        thread.join(10)
    for job_id in [trained, *toys, failed]:
        farm.wait_final(job_id)
    (tmp_path / "live.py").write_text(LIVE)
    scripts.push(tmp_path / "live.py", "live", farm.settings)
    [running] = farm.submit({"scriptName": "live", "projectName": "wine", "learningRate": 0.01})
    wait_for(lambda: (farm.order(running).get("latestMetrics") or {}).get("epoch", 0) >= 4, what="a running Job")
    return Stocked(trained=trained, failed=failed, running=running, sweep=sweep_id)


def shoot(tab: Any, path: Path) -> None:
    """The whole page in one picture: the window made as tall as the page (grids draw only what a window
    shows, so a full-page capture of a 800 px window leaves a grid far down the page blank), then back."""
    height = tab.evaluate("() => document.documentElement.scrollHeight")
    tab.set_viewport_size({"width": 1280, "height": height})
    tab.wait_for_timeout(700)
    tab.screenshot(path=str(path))
    tab.set_viewport_size({"width": 1280, "height": 800})


def test_every_page_is_on_the_tour() -> None:
    toured = {stop.path(Stocked("t", "f", "r", "s")).split("/")[0].split("?")[0] or "jobs" for stop in TOUR}
    assert set(dashboard_app.PAGES) <= toured, f"pages without a Stop in TOUR: {set(dashboard_app.PAGES) - toured}"


def test_every_page_holds_at_1280_by_800_and_the_readme_screenshots_are_taken(
        farm: Farm, hq: HQ, page: Any, tmp_path: Path) -> None:
    stocked = stock(farm, tmp_path)
    assert page.viewport_size == {"width": 1280, "height": 800}
    problems = []
    for stop in TOUR:
        page.goto(hq.ui(stop.path(stocked)))
        page.wait_for_selector(stop.ready)
        if stop.then:
            stop.then(page, stocked)
        page.wait_for_timeout(300)  # charts finish their layout
        found = page.evaluate(OVERFLOW)
        if found["scroll"] > found["width"] or found["wide"]:
            problems.append(f"{stop.name}: {found}")
        if stop.screenshot:
            shoot(page, hq.shots / f"{stop.screenshot}.png")
    assert not problems, "pages wider than 1280 px:\n" + "\n".join(problems)
