"""Datasets reach every worker: stored in GridFS, cached by content hash, refused at submit if missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Farm

from mlqueue import datasets, jobs


def _csv(path: Path, rows: int) -> Path:
    path.write_text("con_x,con_y\n" + "".join(f"{i},{i * 2}\n" for i in range(rows)))
    return path


def test_push_versions_listing_and_pull(farm: Farm, tmp_path: Path) -> None:
    first = datasets.push(_csv(tmp_path / "d.csv", 3), "proj", settings=farm.settings)
    assert datasets.push(tmp_path / "d.csv", "proj", settings=farm.settings)["sha256"] == first["sha256"]
    assert datasets.latest("proj", "d.csv", farm.settings)["version"] == 1
    datasets.push(_csv(tmp_path / "d.csv", 5), "proj", settings=farm.settings)
    assert datasets.latest("proj", "d.csv", farm.settings)["version"] == 2
    assert [(d["project"], d["name"]) for d in datasets.listing(settings=farm.settings)] == [("proj", "d.csv")]
    out = datasets.pull("proj", "d.csv", tmp_path / "back.csv", farm.settings)
    assert out.read_text().count("\n") == 6


def test_submit_refuses_a_job_whose_dataset_is_missing_and_stores_nothing(farm: Farm) -> None:
    with pytest.raises(jobs.JobError) as err:
        farm.submit({"scriptName": "toy", "projectName": "p", "dataFileName": "nope.csv"})
    assert "p/nope.csv" in str(err.value) and "mlqueue data push" in str(err.value)
    assert farm.db.jobs.count_documents({}) == 0


def test_cache_downloads_once_and_refetches_a_corrupted_or_partial_copy(farm: Farm, tmp_path: Path) -> None:
    datasets.push(_csv(tmp_path / "d.csv", 50), "p", settings=farm.settings)
    cache = datasets.Cache(farm.settings)
    path = cache.path_for("p", "d.csv")
    assert cache.path_for("p", "d.csv") == path and (cache.misses, cache.hits) == (1, 1)
    path.write_text("con_x,con_y\n1,999\n")
    assert datasets.sha256_of(cache.path_for("p", "d.csv")) == datasets.latest("p", "d.csv", farm.settings)["sha256"]
    assert cache.misses == 2
    with open(path, "r+b") as fh:
        fh.truncate(10)
    cache.path_for("p", "d.csv")
    assert cache.misses == 3 and path.read_text().count("\n") == 51


def test_a_dataset_pushed_again_under_its_name_reaches_the_worker_at_once(farm: Farm, tmp_path: Path) -> None:
    datasets.push(_csv(tmp_path / "d.csv", 10), "p", settings=farm.settings)
    farm.start_worker("w1")
    job = {"scriptName": "toy", "projectName": "p", "dataFileName": "d.csv"}
    [first] = farm.submit(job)
    assert farm.wait_final(first)["outcome"]["dataRows"] == 11
    datasets.push(_csv(tmp_path / "d.csv", 20), "p", settings=farm.settings)  # same name, new content
    [second] = farm.submit(job)
    assert farm.wait_final(second)["outcome"]["dataRows"] == 21


def test_worker_gets_the_data_and_keeps_the_jobs_artifact(farm: Farm, tmp_path: Path) -> None:
    datasets.push(_csv(tmp_path / "d.csv", 10), "p", settings=farm.settings)
    farm.start_worker("w1")
    first, second = farm.submit(
        {"scriptName": "toy", "projectName": "p", "dataFileName": "d.csv", "writeArtifact": True, "printLines": 3},
        {"scriptName": "toy", "projectName": "p", "dataFileName": "d.csv"})
    order = farm.wait_final(first)
    assert order["state"] == "succeeded" and order["outcome"]["dataRows"] == 11
    [artifact] = order["outcome"]["artifacts"]
    assert artifact["name"] == "toy_model.json" and artifact["size"] > 0 and "path" not in artifact
    assert [line["line"] for line in order["log"]] == [f"toy line {i} of 3" for i in (1, 2, 3)]
    assert farm.wait_final(second)["outcome"]["dataRows"] == 11
    fetched = farm.run_cli("artifacts", first, "--get", "toy_model.json", "-o", str(tmp_path / "dl"))
    assert fetched.returncode == 0, fetched.stderr
    assert '"dataFileName": "d.csv"' in (tmp_path / "dl" / "toy_model.json").read_text()


def test_the_seeds_sample_job_runs_as_given_on_a_worker(farm: Farm, tmp_path: Path) -> None:
    import json

    from conftest import ROOT

    from ml_scripts.demo_data import write_demo_data

    for path in write_demo_data(tmp_path / "demo"):
        datasets.push(path, "wine_data", settings=farm.settings)
    sample = json.loads((ROOT / "tasks" / "nn_job.json").read_text())
    assert sample["depedentVariable"] == "con_lot" and sample["epochs"] == 3000
    farm.start_worker("w1")
    [job_id] = farm.submit(sample)
    order = farm.wait_final(job_id, timeout=240)
    assert order["state"] == "succeeded", order["outcome"].get("message")
    outcome = order["outcome"]
    assert outcome["status"] == 200 and outcome["metric"] < 0  # neg_mean_squared_error, cross-validated
    assert len(order["metrics"]) > 10 and "val_loss" in order["metrics"][-1]
