"""The New job form for nn.py in a real browser: hidden layers as rows, the Job previewed as it is edited,
fields ticked "sweep" turned into a sweep that starts; plus the form's helpers on their own."""

from __future__ import annotations

import json
from typing import Any

import test_dashboard
import yaml
from conftest import Farm, wait_for
from test_dashboard import HQ

from mlqueue.dashboard import job_form
from mlqueue.sweeps import driver as sweep_driver

browser, hq, page = test_dashboard.browser, test_dashboard.hq, test_dashboard.page  # the same fixtures


def test_ranges_read_as_written_and_sweep_ranges_stay_inside_them() -> None:
    assert job_form.range_text({"exclusiveMinimum": 0, "maximum": 10}) == "0 < x ≤ 10"
    assert job_form.range_text({"minimum": 1}) == "≥ 1" and job_form.range_text({}) == ""
    assert job_form.space_for("number", {"exclusiveMinimum": 0, "maximum": 10}, 0.001) == \
        {"float": [0.00025, 0.004], "log": True}
    assert job_form.space_for("number", {"minimum": 0, "exclusiveMaximum": 1}, 0.5) == {"float": [0.125, 0.99]}
    assert job_form.space_for("integer", {"minimum": 1}, 32) == {"int": [16, 64]}
    assert job_form.space_for("enum", {"enum": ["adam", "sgd"]}, "adam") == {"choice": ["adam", "sgd"]}
    rows = [{"a": 1}, {"a": 2}, {"a": 3}]
    assert job_form.apply_op(rows, "up", 2, []) == [{"a": 1}, {"a": 3}, {"a": 2}]
    assert job_form.apply_op(rows, "remove", 0, []) == [{"a": 2}, {"a": 3}]
    assert job_form.apply_op(rows, "add", -1, []) == [*rows, {"a": 3}]


def _preview(tab: Any) -> dict[str, Any]:
    try:
        return json.loads(tab.inner_text("#new-preview"))
    except json.JSONDecodeError:
        return {}


def _layers(tab: Any) -> list[dict[str, Any]]:
    return _preview(tab).get("hiddenLayers") or []


def test_nn_form_edits_layers_as_rows_previews_the_job_and_starts_a_sweep(farm: Farm, hq: HQ, page: Any) -> None:
    page.goto(hq.ui("new?script=nn"))
    page.wait_for_selector("#field-hiddenLayers .rows-row")
    page.fill("#field-depedentVariable input", "con_lot")
    wait_for(lambda: _preview(page).get("depedentVariable") == "con_lot", what="the preview to follow the form")
    assert _layers(page) == [{"activation": "relu", "widthModifier": 1.0, "dropout": 0.0}]

    page.click("#field-hiddenLayers button:has-text('+ add a row')")
    wait_for(lambda: len(_layers(page)) == 2, what="a second layer")
    second = page.locator("#field-hiddenLayers .rows-row").nth(1)
    second.locator("input[type=number]").first.fill("2.5")
    wait_for(lambda: _layers(page)[1]["widthModifier"] == 2.5, what="the second layer's width")
    second.locator("td").nth(1).locator("div").first.click()
    page.locator("[role=option]", has_text="tanh").first.click()
    page.keyboard.press("Escape")
    wait_for(lambda: _layers(page)[1]["activation"] == "tanh", what="the second layer's activation")
    second.locator("button[title='move up']").click()
    wait_for(lambda: _layers(page)[0]["widthModifier"] == 2.5, what="the layer moved up")
    page.locator("#field-hiddenLayers .rows-row").nth(1).locator("button[title='remove this row']").click()
    wait_for(lambda: len(_layers(page)) == 1, what="a layer removed")

    for field in ("learningRate", "optimizer", "hiddenLayers"):
        page.check(f"#field-{field} input[type=checkbox] >> nth=0")
    wait_for(lambda: "learningRate" in page.input_value("#new-sweep-text"), what="the sweep draft")
    wait_for(lambda: "hiddenLayers" in (yaml.safe_load(page.input_value("#new-sweep-text")) or {}).get("space", {}),
             what="the layers in the sweep draft")
    draft = yaml.safe_load(page.input_value("#new-sweep-text"))
    assert draft["space"]["learningRate"] == {"float": [0.00025, 0.004], "log": True}
    assert draft["space"]["optimizer"]["choice"][:3] == ["sgd", "rmsprop", "adam"]
    assert draft["space"]["hiddenLayers"]["repeat"] == {"int": [1, 3]}
    assert draft["base"]["depedentVariable"] == "con_lot"

    page.click("#new-submit")
    page.wait_for_selector("#new-job-link")
    job = farm.db.jobs.find_one({})
    assert job["hiddenLayers"] == [{"activation": "tanh", "widthModifier": 2.5, "dropout": 0.0}]
    assert job["scriptName"] == "nn" and job["depedentVariable"] == "con_lot"

    page.click("#new-sweep-start")
    link = page.wait_for_selector("#new-sweep-link")
    doc = sweep_driver.get(link.inner_text(), farm.settings)
    assert doc["state"] == "running" and doc["name"] == "nn-sweep"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
