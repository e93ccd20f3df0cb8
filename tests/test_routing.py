"""Machines that differ, with real workers: Jobs go only where they can run, and say why they wait."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import Farm

from mlqueue import datasets, orders

FAKE_GPU = json.dumps({"gpus": [{"model": "Fake RTX", "memoryGB": 12}]})


def small_csv(path: Path, rows: int = 60) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 3))
    pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=3 * x[:, 0] - x[:, 1]).to_csv(path, index=False)
    return path


def nn_job(**extra: object) -> dict:
    return {"scriptName": "nn.py", "projectName": "house", "dataFileName": "small.csv", "depedentVariable": "y",
            "hiddenLayers": [{"activation": "relu", "widthModifier": 1, "dropout": 0.0}], "epochs": 2,
            "batchSize": 32, "patienceRate": 1.0, **extra}


def test_nn_jobs_run_only_on_the_worker_that_can_import_tensorflow(farm: Farm, tmp_path: Path) -> None:
    datasets.push(small_csv(tmp_path / "small.csv"), "house", settings=farm.settings)
    farm.start_worker("plain", MLQUEUE_HIDE_PACKAGES="tensorflow")
    farm.start_worker("tf")
    ids = farm.submit(nn_job(seed=1), {"scriptName": "toy", "x": 1.0, "sleepSeconds": 0.5}, nn_job(seed=2),
                      {"scriptName": "toy", "x": 2.0, "sleepSeconds": 0.5}, {"scriptName": "toy", "x": 3.0})
    finals = [farm.wait_final(i, timeout=240) for i in ids]
    assert [o["state"] for o in finals] == ["succeeded"] * 5, [o["outcome"].get("message") for o in finals]
    for order in (finals[0], finals[2]):
        assert order["outcome"]["worker"].startswith("tf@")
        assert order["attempts"] == 1 and order["requires"] == {"packages": ["tensorflow"]}
    plain = farm.db.workers.find_one({"name": {"$regex": "^plain@"}})
    assert "tensorflow" not in plain["capabilities"]["packages"]
    assert not any(q.endswith(finals[0]["requirementClass"]) for q in plain["queues"])


def test_a_gpu_job_waits_with_a_reason_then_runs_when_a_gpu_worker_joins(farm: Farm) -> None:
    farm.start_worker("cpu")
    [job_id] = farm.submit({"scriptName": "toy", "x": 1.0, "requires": {"gpu": True}})
    [toy] = farm.submit({"scriptName": "toy", "x": 2.0})
    assert farm.wait_final(toy)["state"] == "succeeded"
    assert farm.order(job_id)["state"] == orders.UNASSIGNED
    shown = farm.run_cli("show", job_id)
    assert "waiting: needs gpu — no online worker has it" in shown.stdout, shown.stdout + shown.stderr
    status = json.loads(farm.run_cli("status", "--format", "json").stdout)
    [group] = status["waiting"]
    assert group["requires"] == {"gpu": True} and group["jobs"] == 1 and "needs gpu" in group["reason"]
    assert status["workers"][0]["capabilities"]["gpus"] == []
    from mlqueue import outcomes
    from mlqueue.dashboard.job_page import order_summary

    detail = outcomes.job_detail(job_id, farm.settings)  # what the dashboard's Job page shows
    assert "needs gpu" in order_summary(detail["order"], None)["waiting"]
    table = farm.run_cli("status")
    assert table.returncode == 0 and "Machines:" in table.stdout, table.stderr
    assert "1 job(s), requires gpu: waiting: needs gpu" in table.stdout, table.stdout
    warned = farm.run_cli("submit", "-", input='{"scriptName": "toy", "requires": {"gpu": true}}')
    assert warned.returncode == 0 and "warning: 2 queued job(s) cannot run now" in warned.stderr

    farm.start_worker("gpu", MLQUEUE_CAPABILITIES=FAKE_GPU)
    order = farm.wait_final(job_id, timeout=60)
    assert order["state"] == "succeeded" and order["outcome"]["worker"].startswith("gpu@")
    gpu = farm.db.workers.find_one({"name": {"$regex": "^gpu@"}})
    assert gpu["capabilities"]["gpus"][0]["model"] == "Fake RTX"


def test_a_class_announced_while_workers_run_reaches_the_one_that_satisfies_it(farm: Farm) -> None:
    farm.start_worker("small", MLQUEUE_CAPABILITIES='{"memoryGB": 2}')
    farm.start_worker("big", MLQUEUE_CAPABILITIES='{"memoryGB": 64}')
    ids = farm.submit(*[{"scriptName": "toy", "x": float(i), "requires": {"memoryGB": 16}} for i in range(4)])
    for job_id in ids:
        assert farm.wait_final(job_id, timeout=60)["outcome"]["worker"].startswith("big@")


def test_a_pinned_job_runs_on_that_worker_only(farm: Farm) -> None:
    farm.start_worker("a")
    farm.start_worker("b")
    ids = farm.submit(*[{"scriptName": "toy", "x": float(i), "worker": "b", "sleepSeconds": 0.2} for i in range(4)])
    assert {farm.wait_final(i)["outcome"]["worker"].split("@")[0] for i in ids} == {"b"}
    [lost] = farm.submit({"scriptName": "toy", "worker": "nobody"})
    shown = farm.run_cli("show", lost)
    assert "pinned to worker 'nobody', which has never registered" in shown.stdout


def test_requires_is_checked_at_submit_with_a_clear_message(farm: Farm) -> None:
    bad = farm.run_cli("submit", "-", input='{"scriptName": "toy", "requires": {"gpu": true, "ram": 8}}')
    assert bad.returncode != 0 and "requires.ram" in bad.stderr and "nothing was stored" in bad.stderr
    bad = farm.run_cli("submit", "-", input='{"scriptName": "toy", "requires": {"packages": ["tensor flow!"]}}')
    assert bad.returncode != 0 and "is not a package requirement" in bad.stderr
    assert farm.db.orders.count_documents({}) == 0
