"""Checkpoints: kept in the store atomically, one per Job, and resumed by the next attempt on any machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Farm, wait_for

from mlqueue import checkpoints, orders


def _files(farm: Farm, job_id: str) -> list[dict]:
    return list(farm.db["checkpoints.files"].find({"metadata.jobId": job_id}))


def _running_order(farm: Farm, job_id: str) -> dict:
    """Hold the Order as a worker would (claim + start), without a worker process."""
    delivery = farm.order(job_id)["delivery"]
    claimed = orders.claim(job_id, delivery, "tester@here", farm.settings)
    return orders.start(claimed, {"name": "toy"}, farm.settings)


def test_killed_worker_resumes_from_last_checkpoint_and_the_loss_does_not_count(farm: Farm) -> None:
    first = farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 12, "sleepSeconds": 12, "checkpointEvery": 2,
                            "maxAttempts": 1, "x": 0.5})
    wait_for(lambda: (farm.order(job_id).get("latestMetrics") or {}).get("epoch", 0) >= 8,
             what="the job to reach epoch 8 on w1")
    farm.kill_worker(first)
    saved = farm.order(job_id)["checkpoint"]
    assert saved["step"] >= 6 and saved["attempt"] == 1
    others = [f["metadata"]["step"] for f in _files(farm, job_id) if f["_id"] != saved["fileId"]]
    assert all(step > saved["step"] for step in others)   # older ones removed; at most an upload the kill cut

    farm.start_worker("w2")
    order = farm.wait_final(job_id, timeout=120)
    outcome = farm.db.outcomes.find_one({"jobId": job_id})
    assert order["state"] == "succeeded" and order["attempts"] == 2     # maxAttempts 1: the loss was forgiven
    assert outcome["startEpoch"] >= saved["step"] + 1
    assert outcome["resumed"] == f"resumed from epoch {outcome['startEpoch'] - 1} (attempt 2)"
    assert any("resumed from epoch" in (e.get("why") or "") for e in order["history"])
    second = [m["epoch"] for m in order["metrics"] if m["at"] > saved["at"]]
    assert second and second[-1] == 12 and min(second) >= saved["step"]
    # a finished Job keeps no checkpoint (removed by the worker just after the final move)
    wait_for(lambda: _files(farm, job_id) == [], what="the finished Job's checkpoints to be removed")
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1


def test_a_late_checkpoint_from_an_attempt_that_lost_the_order_is_refused(farm: Farm, tmp_path: Path) -> None:
    [job_id] = farm.submit({"scriptName": "toy", "x": 1.0})
    order = _running_order(farm, job_id)
    state = tmp_path / "state.bin"
    state.write_bytes(b"epoch 3")
    kept = checkpoints.save(order, state, 3, farm.settings)
    assert kept and farm.order(job_id)["checkpoint"]["fileId"] == kept["fileId"]
    assert farm.order(job_id)["exemptAttempts"] == [1]

    orders.cancel(job_id, settings=farm.settings)                        # the attempt no longer holds it
    state.write_bytes(b"epoch 4")
    assert checkpoints.save(order, state, 4, farm.settings) is None
    assert [f["_id"] for f in _files(farm, job_id)] == [kept["fileId"]]  # the refused upload is removed
    restored = checkpoints.restore(job_id, tmp_path / "restore", farm.settings)
    assert Path(restored["path"]).read_bytes() == b"epoch 3" and restored["step"] == 3
    assert orders.Reaper("test", farm.settings).sweep()["checkpoints"] == 1   # the Job ended: nothing resumes
    assert _files(farm, job_id) == []


def test_folders_round_trip_and_a_corrupt_checkpoint_is_never_used(farm: Farm, tmp_path: Path) -> None:
    [job_id] = farm.submit({"scriptName": "toy", "x": 1.0})
    order = _running_order(farm, job_id)
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (folder / "sub" / "optimizer.json").write_text('{"lr": 0.1}')
    checkpoints.save(order, folder, 5, farm.settings)
    restored = Path(checkpoints.restore(job_id, tmp_path / "r1", farm.settings)["path"])
    assert (restored / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert (restored / "sub" / "optimizer.json").read_text() == '{"lr": 0.1}'

    farm.db.orders.update_one({"jobId": job_id}, {"$set": {"checkpoint.sha256": "0" * 64}})
    assert checkpoints.restore(job_id, tmp_path / "r2", farm.settings) is None


def test_a_resumed_sweep_trial_keeps_its_number_and_reports_each_epoch_to_the_study_once(
        farm: Farm, tmp_path: Path) -> None:
    import threading

    from optuna.trial import TrialState
    from test_sweeps import create, load_study, write_sweep

    from mlqueue.sweeps import driver as sweep_driver

    first = farm.start_worker("w1")
    sweep_id = create(farm, write_sweep(
        tmp_path / "resume.yaml", trials=1, parallel=1, epochs=12, sleep=12,
        early="{method: median, startupTrials: 5, warmupSteps: 1}", extra_base=", checkpointEvery: 2"))
    stop = threading.Event()
    driver = sweep_driver.Driver(settings=farm.settings, sweep_ids=[sweep_id], poll=0.2)
    thread = threading.Thread(target=driver.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        order = wait_for(lambda: farm.db.orders.find_one({"sweepId": sweep_id, "latestMetrics.epoch": {"$gte": 8}}),
                         timeout=60, what="the trial to reach epoch 8")
        farm.kill_worker(first)
        before = {m["epoch"]: m["loss"] for m in farm.order(order["jobId"])["metrics"]}
        farm.start_worker("w2")
        wait_for(lambda: farm.db.sweeps.find_one({"state": "done"}), timeout=120, what="the sweep to end")
    finally:
        stop.set()
        thread.join(10)
    done = farm.order(order["jobId"])
    assert done["state"] == "succeeded" and done["attempts"] == 2 and done["outcome"]["resumed"]
    [trial] = load_study(farm, sweep_id).trials
    job = farm.db.jobs.find_one({"sweepId": sweep_id})
    assert trial.number == job["trialNumber"] and trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == list(range(1, 13))       # every epoch, once
    for step, loss in before.items():                                  # the first attempt's values stand
        assert trial.intermediate_values[step] == pytest.approx(loss)


def test_a_command_line_script_checkpoints_by_printing_and_resumes_after_a_kill(farm: Farm) -> None:
    from mlqueue import scripts

    scripts.push(Path(__file__).parent / "scripts" / "checkpointing_cli.py", "ckcli", settings=farm.settings)
    first = farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "ckcli", "epochs": 12, "sleepSeconds": 12, "maxAttempts": 1})
    wait_for(lambda: (farm.order(job_id).get("checkpoint") or {}).get("step", 0) >= 5,
             what="a printed checkpoint to be stored")
    farm.kill_worker(first)
    saved = farm.order(job_id)["checkpoint"]
    farm.start_worker("w2")
    order = farm.wait_final(job_id, timeout=120)
    assert order["state"] == "succeeded" and order["attempts"] == 2, order["outcome"]
    assert order["outcome"]["startEpoch"] >= saved["step"] + 1
    assert order["outcome"]["resumed"].startswith("resumed from epoch")
    assert all("checkpoint" not in m for m in order["metrics"])
