"""The machine's fault is not the Job's: environment failures bounce, uncharged, to a machine that can run it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Farm, wait_for

from mlqueue import environment, orders, scripts

HERE = Path(__file__).resolve().parent / "scripts"
CLAIMS_TF = json.dumps({"packages": {"tensorflow": "2.99.0"}})  # says it has TensorFlow; its Python cannot import it


def test_a_missing_module_bounces_uncharged_and_becomes_a_requirement(farm: Farm) -> None:
    scripts.push(HERE / "needs_tf.py", settings=farm.settings)
    farm.start_worker("plain", MLQUEUE_HIDE_PACKAGES="tensorflow")
    [job_id] = farm.submit({"scriptName": "needs_tf", "maxAttempts": 1})
    order = wait_for(lambda: (o := farm.order(job_id)).get("environmentFailures") and o["state"] == "unassigned" and o,
                     what="the first attempt to bounce")
    assert order["requires"] == {"packages": ["tensorflow"]} and order["exemptAttempts"] == [1]
    assert order["lastEnvironmentFailure"]["kind"] == "missing module"
    assert "No module named 'tensorflow'" in order["lastEnvironmentFailure"]["message"]
    shown = farm.run_cli("show", job_id)
    assert "waiting: needs tensorflow — no online worker has it" in shown.stdout, shown.stdout

    farm.start_worker("tf")
    final = farm.wait_final(job_id, timeout=120)
    assert final["state"] == "succeeded" and final["outcome"]["worker"].startswith("tf@")
    assert final["attempts"] == 2 and orders.counted_attempts(final) == 1  # maxAttempts 1, yet it ran: nothing charged


def test_a_worker_whose_environment_fails_a_class_stops_taking_it(farm: Farm) -> None:
    scripts.push(HERE / "needs_tf.py", settings=farm.settings)
    farm.start_worker("liar", MLQUEUE_HIDE_PACKAGES="tensorflow", MLQUEUE_CAPABILITIES=CLAIMS_TF)
    [job_id] = farm.submit({"scriptName": "needs_tf", "requires": {"packages": ["tensorflow"]}})
    wait_for(lambda: farm.order(job_id).get("environmentFailures") == 1, what="the attempt to bounce")
    liar = wait_for(lambda: farm.db.workers.find_one({"name": {"$regex": "^liar@"}, "refused": {"$exists": True}}),
                    what="the liar to refuse the class")
    requirement_class = farm.order(job_id)["requirementClass"]
    assert requirement_class in liar["refused"]
    status = json.loads(farm.run_cli("status", "--format", "json").stdout)
    [group] = status["waiting"]
    assert "stopped taking it after an environment failure" in group["reason"]
    assert farm.order(job_id)["environmentFailures"] == 1  # it was not taken (and failed) again

    farm.start_worker("tf")
    final = farm.wait_final(job_id, timeout=120)
    assert final["state"] == "succeeded" and final["outcome"]["worker"].startswith("tf@")


def test_a_job_failing_on_every_machine_still_stops_with_a_clear_message(farm: Farm) -> None:
    scripts.push(HERE / "needs_tf.py", settings=farm.settings)
    farm.start_worker("plain", MLQUEUE_HIDE_PACKAGES="tensorflow", MLQUEUE_MAX_ENVIRONMENT_FAILURES="1")
    [job_id] = farm.submit({"scriptName": "needs_tf"})
    final = farm.wait_final(job_id, timeout=60)
    assert final["state"] == "failed" and final["outcome"]["reason"] == "environment"
    assert "failed for environment reasons on 1 attempts" in final["outcome"]["message"]
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1


def test_environment_failures_are_told_from_the_jobs_own() -> None:
    def failed(kind: str, message: str) -> dict:
        return {"reason": "error", "message": f"{kind}: {message}", "error": {"type": kind, "message": message}}

    assert environment.judge(failed("ModuleNotFoundError", "No module named 'sklearn'"))["package"] == "scikit-learn"
    assert environment.judge(failed("RuntimeError", "CUDA out of memory. Tried to allocate"))["kind"] == "gpu memory"
    assert environment.judge(failed("OSError", "[Errno 28] No space left on device"))["kind"] == "disk full"
    assert environment.judge(failed("RuntimeError", "no CUDA-capable device is detected"))["kind"] == "gpu gone"
    assert environment.judge(failed("ScriptOutputError", "x exited with code 1: ModuleNotFoundError: No module "
                                                         "named 'xgboost'"))["module"] == "xgboost"
    assert environment.judge(failed("RuntimeError", "diverged at epoch 7")) is None
    assert environment.judge({"reason": "timeout", "message": "No space left on device"}) is None
