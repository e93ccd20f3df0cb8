"""Reports sent in the background: every one stored once, in order, before the Job's final move."""

from __future__ import annotations

from conftest import Farm


def test_a_fast_reporting_job_has_every_report_stored_once_in_order_when_it_ends(farm: Farm) -> None:
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 400, "sleepSeconds": 0, "q": 1.0})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded"
    assert [m["epoch"] for m in order["metrics"]] == list(range(1, 401))
    stamps = [m["at"] for m in order["metrics"]]
    assert stamps == sorted(stamps)                              # stamped when reported, not when written
    assert order["latestMetrics"]["epoch"] == 400
