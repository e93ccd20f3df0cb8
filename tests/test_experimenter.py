"""The Experimenter loop in a real browser: write a script in the Code page's editor, save it (a new
hash-addressed version), run it on a named machine, watch its printed lines stream on the Machines page
before the Job ends; edit and save again without touching the version the first Job ran. Plus the
script-version routes of the API on their own.

Fixtures (Debian chromium, the API on a free port with the dashboard) come from ``test_dashboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import test_dashboard
from bson import ObjectId
from conftest import Farm, wait_for
from test_dashboard import HQ, choose

from mlqueue import script_versions, scripts

browser, hq, page = test_dashboard.browser, test_dashboard.hq, test_dashboard.page  # the same fixtures

SCRIPT = '''import os
import time


def run(job, report):
    for i in range(1, 4):
        print(f"hello {i} from the editor", flush=True)
    print("metric: loss=0.5 epoch=1", flush=True)
    while not os.path.exists(job["gate"]):
        time.sleep(0.05)
    return {"status": 200, "loss": 0.5}
'''


def editor_text(tab: Any) -> str:
    return tab.evaluate("() => window.mlqueueEditor.editor && window.mlqueueEditor.editor.getValue()")


def type_into_editor(tab: Any, text: str) -> None:
    """Replace the editor's text as a person would: select all, then type (paste-like) the new text."""
    tab.click("#code-editor .ace_content")
    tab.keyboard.press("Control+A")
    tab.keyboard.insert_text(text)
    wait_for(lambda: editor_text(tab) == text, timeout=10, what="the editor to hold the typed text")


def assert_no_sideways_scroll(tab: Any) -> None:
    """The page fits the 1280-pixel window: nothing sticks out to the right (names what does)."""
    wide = tab.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth, Array.from("
                        "document.querySelectorAll('*')).filter(e => e.getBoundingClientRect().right > "
                        "window.innerWidth).map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 12)]")
    assert wide[0] <= wide[1], wide


def test_write_save_run_on_a_machine_watch_it_live_then_edit_keeps_the_first_version(
        farm: Farm, hq: HQ, page: Any, tmp_path: Path) -> None:
    farm.start_worker("w1")
    farm.start_worker("w2")
    w1, w2 = (farm.db.workers.find_one({"name": {"$regex": f"^{n}@"}})["name"] for n in ("w1", "w2"))
    gate = tmp_path / "gate"

    page.goto(hq.ui("code"))
    page.fill("#code-new-name", "live_demo")
    page.click("#code-new")
    page.wait_for_selector("#code-editor .ace_content:has-text('def run')")  # the new-file template
    type_into_editor(page, SCRIPT)
    page.click("#code-save")
    page.wait_for_selector("#code-saved:has-text('Saved live_demo version')")
    first = page.get_attribute("#code-saved", "data-sha")
    page.wait_for_selector("#code-diff .add:has-text('hello {i} from the editor')")  # the saved version shown
    assert script_versions.source("live_demo", settings=farm.settings)["text"] == SCRIPT

    job_ids = []
    for worker in (w2, w1):  # one Job pinned to each machine, w2 first
        page.fill("#code-job", f'{{"gate": "{gate}"}}')
        choose(page, "code-worker", worker)
        page.click("#code-run")
        page.wait_for_selector(f"#code-run-queued:has-text('queued for {worker}')")
        job_ids.append(page.get_attribute("#code-run-queued", "data-job"))
    for job_id, worker in zip(job_ids, (w2, w1), strict=True):
        job = farm.db.jobs.find_one({"_id": ObjectId(job_id)})
        assert job["worker"] == worker and job["scriptHash"] == first and job["scriptName"] == "live_demo"
    job_id = job_ids[0]

    page.click("#code-run-machines")
    for running, worker in zip(job_ids, (w2, w1), strict=True):  # both machines' output, side by side
        page.wait_for_selector(f".live-log[data-job='{running}'] .log-line:has-text('hello 3 from the editor')")
        order = farm.order(running)
        assert order["state"] == "running" and order["worker"] == worker, order.get("outcome")  # not ended yet
    pane = f".live-log[data-job='{job_id}']"
    assert_no_sideways_scroll(page)
    wait_for(lambda: page.evaluate("() => Array.from(document.querySelectorAll('.machine .js-plotly-plot'))"
                                   ".map(p => p._fullData ? p._fullData.map(t => (t.x || []).length) : [])")
             == [[1], [1]], what="the printed metric line on each machine's live chart")
    hq.screenshot(page, "experimenter_machines")
    page.click("#machines-invite")
    assert "mlqueue join 127.0.0.1:" in page.inner_text("#machines-invite-command")
    gate.touch()
    page.wait_for_selector(f"{pane} .log-line.end:has-text('ended: succeeded')")
    done = farm.wait_final(job_id)
    assert [m["loss"] for m in done["metrics"]] == [0.5]  # the printed metric line became a point
    farm.wait_final(job_ids[1])

    card = page.locator(".machine", has_text=w1)
    card.locator("button", has_text="Pause").click()
    wait_for(lambda: (farm.db.workers.find_one({"name": w1}).get("control") or {}).get("action") == "pause",
             what="w1 asked to pause")
    card.locator(".machine-state:has-text('paused')").wait_for()
    card.locator("button", has_text="Resume").click()
    wait_for(lambda: not farm.db.workers.find_one({"name": w1}).get("control"), what="w1 resumed")

    page.goto(hq.ui("code?script=live_demo"))
    wait_for(lambda: editor_text(page) == SCRIPT, timeout=30, what="the saved version in the editor")
    type_into_editor(page, SCRIPT.replace("hello {i}", "hi {i}"))
    page.keyboard.press("Control+S")  # saves, as in any editor
    page.wait_for_selector("#code-saved:has-text('Saved live_demo version')")
    second = page.get_attribute("#code-saved", "data-sha")
    assert second != first
    page.wait_for_selector("#code-diff .add:has-text('hi {i}')")
    page.wait_for_selector("#code-diff .del:has-text('hello {i}')")
    assert len(script_versions.versions("live_demo", farm.settings)) == 2
    assert_no_sideways_scroll(page)
    hq.screenshot(page, "experimenter_code")
    assert farm.order(job_id)["script"]["sha256"] == first  # the first Job still records the first version
    assert farm.db.outcomes.find_one({"jobId": job_id})["script"]["sha256"] == first

    wait_for(lambda: f"scriptHash: {second}" in page.input_value("#code-sweep"), what="the sweep template")
    page.click("#code-sweep-run")
    page.wait_for_selector("#code-sweep-link")
    sweep = farm.db.sweeps.find_one({"name": "live_demo-sweep"})
    assert sweep is not None and f"scriptHash: {second}" in str(sweep)

    page.goto(hq.ui("code?script=toy"))  # a built-in script runs as it is, with no bundle to pin
    page.wait_for_selector("#code-save-message:has-text('toy is built in')")
    wait_for(lambda: '"sleepSeconds"' in page.input_value("#code-job"), what="toy's Job from its Params")
    page.click("#code-run")
    page.wait_for_selector("#code-run-queued")
    toy = farm.db.jobs.find_one({"_id": ObjectId(page.get_attribute("#code-run-queued", "data-job"))})
    assert toy["scriptName"] == "toy" and "scriptHash" not in toy and "worker" not in toy


def test_script_versions_over_the_api_save_never_overwrite_and_diff(farm: Farm, hq: HQ, tmp_path: Path) -> None:
    http = httpx.Client(base_url=hq.url, headers={"Authorization": f"Bearer {hq.token}"}, timeout=30)
    one = http.post("/scripts/api_demo/versions", json={"text": "def run(job, report):\n    return {}\n"})
    assert one.status_code == 201 and one.json()["created"] and one.json()["previous"] is None
    again = http.post("/scripts/api_demo/versions", json={"text": "def run(job, report):\n    return {}\n"})
    assert again.status_code == 200 and not again.json()["created"]
    two = http.post("/scripts/api_demo/versions", json={"text": "def run(job, report):\n    return {'a': 1}\n"})
    assert two.status_code == 201 and two.json()["previous"] == one.json()["sha256"]
    listed = http.get("/scripts/api_demo/versions").json()
    assert [v["sha256"] for v in listed] == [two.json()["sha256"], one.json()["sha256"]]
    old = http.get("/scripts/api_demo/source", params={"version": one.json()["sha256"][:10]}).json()
    assert old["text"].endswith("return {}\n") and not old["current"]
    diff = http.get("/scripts/api_demo/diff").json()["diff"]
    assert "-    return {}" in diff and "+    return {'a': 1}" in diff

    bad = http.post("/scripts/api_demo/versions", json={"text": "def run(:\n"})
    assert bad.status_code == 422 and "line 1" in bad.json()["error"]
    assert http.post("/scripts/api_demo/versions", json={"text": "x = 1\x00"}).status_code == 422
    assert len(http.get("/scripts/api_demo/versions").json()) == 2  # nothing stored
    assert http.get("/scripts/nope/versions").status_code == 404
    folder = tmp_path / "folder_demo"  # a folder bundle: the editor edits its entry, the rest is carried over
    folder.mkdir()
    (folder / "main.py").write_text("from util import K\n\n\ndef run(job, report):\n    return {'k': K}\n")
    (folder / "util.py").write_text("K = 1\n")
    scripts.push(folder, "folder_demo", farm.settings)
    edited = http.post("/scripts/folder_demo/versions", json={"text": "from util import K\n\n\ndef run(job, report):"
                                                                       "\n    return {'k': K + 1}\n"}).json()
    shown = http.get("/scripts/folder_demo/source", params={"version": edited["sha256"]}).json()
    assert shown["files"] == ["main.py", "util.py"] and "K + 1" in shown["text"] and shown["current"]
    template = http.get("/scripts/toy/template").json()
    assert template["scriptName"] == "toy" and template["epochs"] == 0 and "sleepSeconds" in template
    assert httpx.get(f"{hq.url}/scripts/toy/versions").status_code == 401
