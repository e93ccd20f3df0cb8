"""The seeds' scripts and clients work unchanged: their Job nesting, their runner's arguments, their routes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import Served, serve
from conftest import Farm

from mlqueue import datasets, jobs, scripts, seeds

HERE = Path(__file__).parent / "scripts"
SEEDS_JOB = {"scriptName": "seeds_style.py", "projectName": "wine_data",
             "jobParameters": {"dataFileName": "wine_raw.csv", "dataPath": "/seeds/data/", "writePath": "/seeds/out/",
                               "execution": {"columnsToRemove": ["cat_colour"], "outputFileName": "wine_clean.csv"}}}


@pytest.fixture
def api(farm: Farm) -> Iterator[Served]:
    served = serve(farm.settings)
    yield served
    served.stop()


def test_the_seeds_nesting_is_flattened_and_machine_paths_dropped() -> None:
    flat = seeds.normalised({**SEEDS_JOB, "callbackAddress": "http://boss", "scriptArgs": "positional"})
    assert flat["dataFileName"] == "wine_raw.csv" and flat["outputFileName"] == "wine_clean.csv"
    assert flat["execution"] == SEEDS_JOB["jobParameters"]["execution"]
    assert not {"jobParameters", "dataPath", "writePath", "callbackAddress"} & set(flat)
    top_wins = seeds.normalised({"scriptName": "x", "outputFileName": "mine.csv", "execution": {"outputFileName": "e"}})
    assert top_wins["outputFileName"] == "mine.csv"
    assert seeds.normalised({"scriptName": "toy", "lr": 1}) == {"scriptName": "toy", "lr": 1}
    with pytest.raises(jobs.JobError, match="field 'jobParameters': must be an object"):
        jobs.validate({"scriptName": "toy", "jobParameters": [1]})


def test_positional_arguments_are_the_seeds_runners() -> None:
    args = seeds.positional_args({"dataPath": "/cache/ab/wine.csv", "writePath": "/work/j/out",
                                  "execution": {"k": 1}, "other": 2})
    assert args == ["wine.csv", f"/cache/ab{os.sep}", f"/work/j/out{os.sep}", '{"k": 1}']
    assert seeds.positional_args({"dataFileName": "a.csv", "writePath": "/o/"})[1:] == ["", "/o/", "{}"]


def _wine(tmp_path: Path, farm: Farm) -> None:
    raw = tmp_path / "wine_raw.csv"
    raw.write_text("con_alcohol,cat_colour,con_lot\n12.1,red,10\n13.4,white,20\n11.9,red,30\n")
    datasets.push(raw, "wine_data", settings=farm.settings)


def test_a_seeds_style_script_runs_as_a_job_and_through_scripts_run(farm: Farm, api: Served, tmp_path: Path) -> None:
    _wine(tmp_path, farm)
    scripts.push(HERE / "seeds_style.py", settings=farm.settings)
    farm.start_worker("w1")

    [job_id] = farm.submit({**SEEDS_JOB, "scriptArgs": "positional"})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded", order.get("outcome")
    assert order["outcome"]["columns"] == ["con_alcohol", "con_lot"] and order["outcome"]["rows"] == 3
    assert order["outcome"]["datasets"][0]["fileName"] == "wine_clean.csv"
    pulled = datasets.pull("wine_data", "wine_clean.csv", tmp_path / "pulled.csv", farm.settings)
    assert pulled.read_text().splitlines()[0] == "con_alcohol,con_lot"

    http = api.http()
    body = {**SEEDS_JOB, "jobParameters": {**SEEDS_JOB["jobParameters"],
                                           "execution": {"columnsToRemove": [], "outputFileName": "wine_all.csv"}}}
    answered = http.post("/scripts/run", json=body)
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == 200 and answered.json()["columns"] == ["con_alcohol", "cat_colour", "con_lot"]
    assert answered.json()["datasets"][0]["fileName"] == "wine_all.csv"
    assert datasets.latest("wine_data", "wine_all.csv", farm.settings) is not None
    stored = http.get(f"/retrieve/job/{answered.headers['x-mlqueue-job']}").json()
    assert stored["scriptArgs"] == "positional" and stored["execution"]["outputFileName"] == "wine_all.csv"

    failing = http.post("/scripts/run", json={**SEEDS_JOB, "jobParameters": {"dataFileName": "wine_raw.csv",
                                                                             "execution": {"columnsToRemove": ["x"]}}})
    assert failing.status_code == 200 and failing.json()["status"] == 500
    assert "Could not encode" in failing.json()["message"]

    # the seeds' union.py request: two encoded files stacked into one, the data from the HQ's datasets
    union = http.post("/scripts/run", json={
        "scriptName": "union.py", "projectName": "wine_data",
        "jobParameters": {"dataFileNames": ["wine_clean.csv", "wine_clean.csv"], "dataPath": "/seeds/data/",
                          "writePath": "/seeds/out/", "execution": {"outputFileName": "wine_union.csv"}}})
    assert union.status_code == 200, union.text
    assert union.json()["rows"]["total"] == 6 and union.json()["datasets"][0]["fileName"] == "wine_union.csv"

    slow = http.post("/scripts/run", params={"wait": 0}, json={"scriptName": "toy", "sleepSeconds": 2})
    assert slow.status_code == 202 and slow.json()["retrieve"].startswith("/retrieve/job/")
    assert http.get(slow.headers["location"]).status_code == 200


def test_job_create_and_retrieve_answer_the_seeds_shapes(farm: Farm, api: Served, tmp_path: Path) -> None:
    _wine(tmp_path, farm)
    http = api.http()
    created = http.post("/job/create", json={"scriptName": "encode.py", "projectName": "wine_data",
                                              "jobParameters": {"dataFileName": "wine_raw.csv",
                                                                "execution": {"columnsToRemove": []}}})
    assert created.status_code == 200, created.text
    job, order = created.json()["job"], created.json()["order"]
    assert len(job["_id"]) == 24 and job["dataFileName"] == "wine_raw.csv" and job["columnsToRemove"] == []
    assert order["jobId"] == job["_id"] and order["status"] == "unassigned" and "createdDate" in order

    listed = http.get("/retrieve/order").json()
    assert [o["jobId"] for o in listed] == [job["_id"]] and listed[0]["status"] == "unassigned"
    assert http.get(f"/retrieve/job/{job['_id']}").json() == job

    refused = http.post("/job/create", json={"scriptName": "no_such_script"})
    assert refused.status_code == 422 and "unknown script" in refused.json()["error"]
    missing_data = http.post("/job/create", json={"scriptName": "encode.py", "dataFileName": "nope.csv"})
    assert missing_data.status_code == 422 and "mlqueue data push" in missing_data.json()["error"]
    assert http.get("/retrieve/job/ffffffffffffffffffffffff").status_code == 404
    assert http.get("/retrieve/job/123").status_code == 422
    assert "missing Job id" in http.get("/retrieve/job").json()["error"]
    assert http.get("/retrieve/worker").status_code == 404
    assert api.http(token=None).get("/retrieve/order").status_code == 401
    assert farm.db.jobs.count_documents({}) == 1
    schema = http.get("/openapi.json").json()
    assert schema["paths"]["/scripts/run"]["post"]["tags"] == ["seeds"]
    assert {"/job/create", "/retrieve/order", "/retrieve/job/{job_id}"} <= set(schema["paths"])
