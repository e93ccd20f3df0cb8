"""The job lifecycle end to end with real worker processes: nothing is lost, nothing runs twice."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

from bson import ObjectId
from conftest import LOST_AFTER, Farm, wait_for


def test_job_runs_to_one_outcome_with_live_metrics_and_a_registered_worker(farm: Farm) -> None:
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "projectName": "p", "lr": 0.1, "epochs": 3, "sleepSeconds": 0.6})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded"
    assert [m["epoch"] for m in order["metrics"]] == [1, 2, 3]
    assert [e["to"] for e in order["history"]] == ["unassigned", "assigned", "running", "succeeded"]
    outcome = farm.db.outcomes.find_one({"jobId": job_id})
    assert outcome["status"] == 200 and outcome["loss"] > 0 and 0 < outcome["metric"] < 1
    assert outcome["worker"].startswith("w1@") and outcome["attempt"] == 1
    assert outcome["script"]["name"] == "toy" and len(outcome["script"]["sha256"]) == 64
    assert outcome["durationSeconds"] >= 0
    from mlqueue import outcomes

    [worker] = outcomes.workers(farm.settings)
    assert worker["name"] == outcome["worker"]
    assert worker["capabilities"]["cpus"] >= 1 and worker["capabilities"]["python"]
    assert worker["jobsDone"] == 1 and worker["currentJob"] is None and 0 < worker["busyShare"] <= 1


def test_script_error_fails_the_job_with_traceback_and_worker_goes_on(farm: Farm) -> None:
    farm.start_worker("w1")
    bad, good = farm.submit({"scriptName": "toy", "raiseError": "diverged at epoch 7"},
                            {"scriptName": "toy", "x": 1.0})
    failed = farm.wait_final(bad)
    assert failed["state"] == "failed"
    outcome = farm.db.outcomes.find_one({"jobId": bad})
    assert outcome["reason"] == "error"
    assert outcome["error"]["type"] == "RuntimeError"
    assert outcome["error"]["message"] == "diverged at epoch 7"
    assert "toy.py" in outcome["error"]["traceback"]
    assert farm.wait_final(good)["state"] == "succeeded"


def test_job_past_its_time_limit_is_killed_and_fails_with_timeout(farm: Farm) -> None:
    farm.start_worker("w1")
    slow, after = farm.submit({"scriptName": "toy", "epochs": 100, "sleepSeconds": 100, "timeLimit": 1.5},
                              {"scriptName": "toy", "x": 2.0})
    order = farm.wait_final(slow, timeout=60)
    assert order["state"] == "failed"
    outcome = farm.db.outcomes.find_one({"jobId": slow})
    assert outcome["reason"] == "timeout" and outcome["status"] == 504
    assert len(order["metrics"]) < 100
    assert farm.wait_final(after)["state"] == "succeeded"


def test_script_that_blocks_in_one_call_is_killed_at_its_time_limit(farm: Farm) -> None:
    farm.start_worker("w1")
    stuck, after = farm.submit({"scriptName": "toy", "sleepSeconds": 300, "timeLimit": 1},
                               {"scriptName": "toy", "x": 3.0})
    assert farm.wait_final(stuck, timeout=60)["outcome"]["reason"] == "timeout"
    assert farm.wait_final(after, timeout=60)["state"] == "succeeded"
    assert farm.db.outcomes.count_documents({"jobId": stuck}) == 1


def test_poison_pill_stops_after_max_attempts_with_reason_lost(farm: Farm) -> None:
    farm.start_worker("w1")
    pill, after = farm.submit({"scriptName": "toy", "crashWorker": True, "maxAttempts": 2},
                              {"scriptName": "toy", "x": 4.0})
    order = farm.wait_final(pill, timeout=120)
    assert order["state"] == "failed"
    assert order["outcome"]["reason"] == "lost"
    assert order["attempts"] == 2
    assert farm.db.outcomes.count_documents({"jobId": pill}) == 1
    assert farm.wait_final(after, timeout=60)["state"] == "succeeded"


def test_worker_killed_mid_job_is_rerun_elsewhere_with_exactly_one_outcome(farm: Farm) -> None:
    first = farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 20, "sleepSeconds": 6, "y": 1.5})
    wait_for(lambda: len(farm.order(job_id).get("metrics", [])) >= 2, what="job to make progress on w1")
    farm.kill_worker(first)
    farm.start_worker("w2")
    order = farm.wait_final(job_id, timeout=120)
    assert order["state"] == "succeeded"
    assert order["attempts"] == 2
    assert order["outcome"]["worker"].startswith("w2@")
    assert any("lost" in e["why"] and "w1@" in e["why"] for e in order["history"])
    assert any(e["by"].startswith("reaper@w2@") for e in order["history"])  # no HQ process: w2's reaper healed it
    from mlqueue import outcomes

    online = {w["name"].split("@")[0]: w["online"] for w in outcomes.workers(farm.settings)}
    assert online == {"w1": False, "w2": True}  # the killed worker said no goodbye; its silence shows
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1


def test_long_job_with_a_live_worker_is_never_delivered_twice(farm: Farm) -> None:
    farm.start_worker("w1")
    farm.start_worker("w2")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 10, "sleepSeconds": LOST_AFTER * 3, "z": 0.0})
    order = farm.wait_final(job_id, timeout=90)
    assert order["state"] == "succeeded" and order["attempts"] == 1
    assert [e["to"] for e in order["history"] if e["to"]] == ["unassigned", "assigned", "running", "succeeded"]


def test_cancelling_a_running_job_stops_it_and_frees_the_worker(farm: Farm) -> None:
    from mlqueue import orders

    farm.start_worker("w1")
    running, after = farm.submit({"scriptName": "toy", "epochs": 600, "sleepSeconds": 600},
                                 {"scriptName": "toy", "x": 5.0})
    wait_for(lambda: farm.order(running)["state"] == "running", what="job to start")
    orders.cancel(running, by="test", settings=farm.settings)
    assert farm.wait_final(after, timeout=60)["state"] == "succeeded"
    order = farm.order(running)
    assert order["state"] == "cancelled" and order["outcome"]["reason"] == "cancelled"
    time.sleep(LOST_AFTER)
    assert farm.order(running)["state"] == "cancelled"
    assert farm.db.outcomes.count_documents({"jobId": running}) == 1


def test_stop_request_prunes_a_reporting_job_keeping_partial_metrics(farm: Farm) -> None:
    from mlqueue import orders

    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 200, "sleepSeconds": 40, "q": 1.0})
    wait_for(lambda: len(farm.order(job_id).get("metrics", [])) >= 3, what="job to report")
    assert orders.request_stop(job_id, "worse than the median", "test", farm.settings)
    order = farm.wait_final(job_id, timeout=30)
    assert order["state"] == "pruned"
    outcome = farm.db.outcomes.find_one({"jobId": job_id})
    assert outcome["pruned"] is True and outcome["epoch"] >= 3 and outcome["loss"] is not None
    assert len(order["metrics"]) < 200


def _seen_by_script(farm: Farm, job_id: str, into: Path) -> dict:
    """The Job's fields as its script saw them (toy's ``writeArtifact`` saves them), without the paths."""
    from mlqueue import artifacts

    [artifact] = farm.wait_final(job_id)["outcome"]["artifacts"]
    seen = json.loads(artifacts.download(artifact["fileId"], into, farm.settings).read_text())
    return {k: v for k, v in seen.items() if k not in ("jobId", "checkpointDir")}


def test_a_job_rides_in_its_message_and_a_resent_message_reads_it_the_script_sees_the_same(
        farm: Farm, tmp_path: Path) -> None:
    import redis

    from mlqueue import orders

    job = {"scriptName": "toy", "projectName": "p", "lr": 0.25, "seed": 3, "writeArtifact": True,
           "notes": {"tags": ["a", "b"], "depth": 2}}
    carried, resent = farm.submit(dict(job), dict(job))
    broker = redis.Redis.from_url(farm.settings.broker_url)
    raw = {json.loads(m)["headers"]["id"]: m for m in broker.lrange(farm.settings.queue, 0, -1)}
    stored = {k: v for k, v in farm.db.jobs.find_one({"_id": ObjectId(carried)}).items()
              if k not in ("_id", "createdDate")}
    headers = json.loads(raw[farm.order(carried)["delivery"]])["headers"]
    assert headers[orders.CARRIED_JOB] == stored
    as_sent = orders.carried_order(headers[orders.CARRIED_ORDER], carried, farm.order(carried)["delivery"])
    assert as_sent == {k: v for k, v in farm.order(carried).items() if k not in ("history", "metrics", "log",
                                                                                  "enqueuedAt")} | {"enqueuedAt": None}
    # the second message is lost before any worker takes it: the reaper sends it again, without the Job
    assert broker.lrem(farm.settings.queue, 1, raw[farm.order(resent)["delivery"]]) == 1
    farm.db.orders.update_one({"jobId": resent}, {"$set": {"enqueuedAt": None,
                                                         "updatedDate": orders.now() - timedelta(minutes=5)}})
    assert orders.Reaper("r", farm.settings).sweep()["resent"] == 1
    [again] = [json.loads(m) for m in broker.lrange(farm.settings.queue, 0, -1)
               if json.loads(m)["headers"]["id"] == farm.order(resent)["delivery"]]
    assert orders.CARRIED_JOB not in again["headers"] and orders.CARRIED_ORDER not in again["headers"]
    farm.start_worker("w1")
    seen = _seen_by_script(farm, carried, tmp_path / "a.json")
    assert seen == _seen_by_script(farm, resent, tmp_path / "b.json") and seen["notes"] == job["notes"]
    for job_id in (carried, resent):   # claimed blind or after a read, the history is the same
        assert [e["to"] for e in farm.order(job_id)["history"]] == ["unassigned", "assigned", "running", "succeeded"]


def test_a_worker_starts_without_importing_pandas_or_numpy() -> None:
    """The worker's own modules (``json_safe`` included) import no data library: a script that needs one
    imports it when it runs, so a worker's start-up does not pay for it."""
    import subprocess
    import sys

    from conftest import ROOT

    probe = "import sys, mlqueue.worker; print(sorted({'pandas', 'numpy'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"
