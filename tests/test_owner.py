"""Owner-aware workers with real worker processes: the owner's input comes through the file probe."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import LOST_AFTER, Farm, wait_for

from mlqueue import outcomes


@contextmanager
def owner_typing(path: Path) -> Iterator[None]:
    """The owner keeps using the machine (the probe file is touched every 0.2 s) while the block runs."""
    stop = threading.Event()

    def touch() -> None:
        while not stop.is_set():
            path.touch()
            stop.wait(0.2)

    thread = threading.Thread(target=touch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def owner_env(probe: Path, policy: str) -> dict[str, str]:
    return {"MLQUEUE_WHEN_OWNER_ACTIVE": policy, "MLQUEUE_IDLE_PROBE": f"file:{probe}", "MLQUEUE_IDLE_AFTER": "1.5"}


def worker_state(farm: Farm, prefix: str) -> str | None:
    return next((w["state"] for w in outcomes.workers(farm.settings) if w["name"].startswith(prefix)), None)


def epoch(farm: Farm, job_id: str) -> int:
    return (farm.order(job_id).get("latestMetrics") or {}).get("epoch", 0)


def test_owner_input_pauses_the_job_and_takes_no_new_one_until_idle(farm: Farm, tmp_path: Path) -> None:
    probe = tmp_path / "owner-input"
    farm.start_worker("w1", **owner_env(probe, "pause"))
    assert worker_state(farm, "w1@") == "idle"
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 30, "sleepSeconds": 9, "x": 1.0})
    wait_for(lambda: epoch(farm, job_id) >= 3, what="the job to make progress")
    with owner_typing(probe):
        wait_for(lambda: worker_state(farm, "w1@") == "owner active", what="the worker to see its owner")
        assert farm.order(job_id)["pausedBy"].startswith("owner input")
        time.sleep(0.5)
        stopped_at = epoch(farm, job_id)
        [later] = farm.submit({"scriptName": "toy", "x": 2.0})
        time.sleep(LOST_AFTER + 2)            # longer than lost_after: the paused Job must not be reaped
        assert epoch(farm, job_id) == stopped_at            # the script does not advance
        assert farm.order(later)["state"] == "unassigned"   # and no new Job starts
        assert farm.order(job_id)["state"] == "running" and farm.order(job_id)["attempts"] == 1
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded" and order["attempts"] == 1
    assert [m["epoch"] for m in order["metrics"]] == list(range(1, 31))
    whys = [e["why"] for e in order["history"]]
    assert any(w.startswith("attempt 1 paused (owner input") for w in whys)
    assert any(w.startswith("resumed after") for w in whys)
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1
    assert farm.wait_final(later)["state"] == "succeeded"
    assert worker_state(farm, "w1@") in ("idle", "busy")


def test_yield_hands_the_running_job_to_another_worker_which_resumes_it(farm: Farm, tmp_path: Path) -> None:
    probe = tmp_path / "owner-input"
    farm.start_worker("w1", **owner_env(probe, "yield"))
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 20, "sleepSeconds": 8, "checkpointEvery": 2,
                            "maxAttempts": 1, "x": 1.0})
    wait_for(lambda: epoch(farm, job_id) >= 5, what="the job to checkpoint on w1")
    farm.start_worker("w2")
    with owner_typing(probe):
        order = farm.wait_final(job_id)
        assert worker_state(farm, "w1@") == "owner active"
    outcome = farm.db.outcomes.find_one({"jobId": job_id})
    assert order["state"] == "succeeded" and outcome["worker"].startswith("w2@")
    assert order["attempts"] == 2 and 1 in order["exemptAttempts"]      # the yield did not cost an attempt
    assert outcome["startEpoch"] >= 5 and outcome["resumed"].startswith("resumed from epoch")
    assert any("yielded (owner input" in e["why"] for e in order["history"])


def test_drain_from_the_hq_finishes_the_job_then_takes_nothing_until_resumed(farm: Farm) -> None:
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 10, "sleepSeconds": 3, "x": 1.0})
    wait_for(lambda: epoch(farm, job_id) >= 1, what="the job to start")
    done = farm.run_cli("workers", "drain", "w1")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: worker_state(farm, "w1@") == "draining", what="the worker to drain")
    [later] = farm.submit({"scriptName": "toy", "x": 2.0})
    assert farm.wait_final(job_id)["state"] == "succeeded"
    time.sleep(2)
    assert farm.order(later)["state"] == "unassigned" and worker_state(farm, "w1@") == "draining"
    status = farm.run_cli("status", "--format", "json")
    assert '"state": "draining"' in status.stdout
    assert farm.run_cli("workers", "resume", "w1").returncode == 0
    assert farm.wait_final(later)["state"] == "succeeded"


def test_pause_from_the_hq_and_unknown_worker_names(farm: Farm) -> None:
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 20, "sleepSeconds": 6, "x": 1.0})
    wait_for(lambda: epoch(farm, job_id) >= 1, what="the job to start")
    assert farm.run_cli("workers", "pause", "w1").returncode == 0
    wait_for(lambda: worker_state(farm, "w1@") == "paused", what="the worker to pause")
    time.sleep(0.5)
    stopped_at = epoch(farm, job_id)
    time.sleep(2)
    assert epoch(farm, job_id) == stopped_at
    assert farm.run_cli("workers", "resume", "w1").returncode == 0
    assert farm.wait_final(job_id)["state"] == "succeeded"
    bad = farm.run_cli("workers", "pause", "nosuch")
    assert bad.returncode != 0 and "no worker named 'nosuch'" in bad.stderr and "w1@" in bad.stderr


def test_a_job_paused_longer_than_max_pause_is_yielded_to_another_machine(farm: Farm, tmp_path: Path) -> None:
    probe = tmp_path / "owner-input"
    farm.start_worker("w1", **owner_env(probe, "pause"), MLQUEUE_MAX_PAUSE="2")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 20, "sleepSeconds": 6, "checkpointEvery": 1, "x": 1.0})
    wait_for(lambda: epoch(farm, job_id) >= 3, what="the job to checkpoint on w1")
    farm.start_worker("w2")
    with owner_typing(probe):
        order = farm.wait_final(job_id)
    whys = [e["why"] for e in order["history"]]
    paused = next(i for i, w in enumerate(whys) if w.startswith("attempt 1 paused"))
    yielded = next(i for i, w in enumerate(whys) if "yielded (paused longer than max_pause 2s)" in w)
    assert paused < yielded
    assert order["state"] == "succeeded" and order["outcome"]["worker"].startswith("w2@")
    assert order["outcome"]["resumed"].startswith("resumed from epoch")


def test_a_paused_job_can_be_cancelled_and_the_worker_goes_on_once_the_owner_leaves(farm: Farm, tmp_path: Path
                                                                                      ) -> None:
    probe = tmp_path / "owner-input"
    farm.start_worker("w1", **owner_env(probe, "pause"))
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 30, "sleepSeconds": 30, "x": 1.0})
    wait_for(lambda: epoch(farm, job_id) >= 1, what="the job to start")
    with owner_typing(probe):
        wait_for(lambda: farm.order(job_id).get("pausedBy"), what="the job to pause")
        assert farm.run_cli("cancel", job_id).returncode == 0
        [later] = farm.submit({"scriptName": "toy", "x": 2.0})
        wait_for(lambda: any("stopping job" in line or "released" in line
                             for line in (farm.home / "worker-w1.log").read_text().splitlines()),
                 what="the suspended script to be woken and stopped")
        assert farm.order(later)["state"] == "unassigned"
    assert farm.wait_final(job_id)["state"] == "cancelled"
    assert farm.wait_final(later)["state"] == "succeeded"
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1
