"""Speed figures, ETAs and placement by measured speed, with real workers of unequal speed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from conftest import Farm, wait_for

from mlqueue import speed


def warm_up(farm: Farm, *workers: str) -> None:
    ids = farm.submit(*[{"scriptName": "toy", "worker": w, "epochs": 2, "sleepSeconds": 0.4, "x": float(i)}
                        for w in workers for i in range(2)])
    for job_id in ids:
        assert farm.wait_final(job_id)["state"] == "succeeded"


def test_a_slow_worker_passes_a_job_to_a_faster_one_that_would_finish_it_sooner(farm: Farm) -> None:
    farm.start_worker("fast")
    farm.start_worker("slow", TOY_SLOWDOWN="10")
    warm_up(farm, "fast", "slow")
    figures = speed.figures(farm.settings, fresh=True)
    fast = next(f for name, f in figures.items() if name.startswith("fast@"))["toy"]
    slow = next(f for name, f in figures.items() if name.startswith("slow@"))["toy"]
    assert slow["secondsPerEpoch"] > 3 * fast["secondsPerEpoch"] and fast["jobs"] == 2
    time.sleep(speed.CACHE_SECONDS + 0.5)  # the workers' cached figures now include the warm-up
    [busy] = farm.submit({"scriptName": "toy", "worker": "fast", "epochs": 4, "sleepSeconds": 1.0, "y": 1.0})
    wait_for(lambda: farm.order(busy)["state"] == "running", what="the fast worker to be busy")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 4, "sleepSeconds": 0.8, "z": 1.0})
    order = farm.wait_final(job_id, timeout=60)
    assert order["outcome"]["worker"].startswith("fast@"), order["history"]
    assert any(e["why"].startswith("placed on fast@") and e["by"].startswith("slow@") for e in order["history"])
    assert order["attempts"] == 1

    status = json.loads(farm.run_cli("status", "--format", "json").stdout)
    speeds = {w["name"].split("@")[0]: w["speed"]["toy"]["secondsPerEpoch"] for w in status["workers"]}
    assert speeds["slow"] > speeds["fast"]
    assert all("etaSeconds" in w for w in status["workers"])


def test_worker_options_name_memory_and_gpus(farm: Farm) -> None:
    farm.start_worker("ignored", wait=False, args=("--name", "lap", "--max-memory", "3", "--gpus", "0"),
                      MLQUEUE_CAPABILITIES=json.dumps({"gpus": ["GPU A", "GPU B"]}))
    worker = wait_for(lambda: farm.db.workers.find_one({"name": {"$regex": "^lap@"}, "online": True}),
                      what="the worker named lap to register")
    assert worker["capabilities"]["memoryGB"] == 3.0
    assert [g["model"] for g in worker["capabilities"]["gpus"]] == ["GPU A"]  # --gpus 0: only the first is ours
    [job_id] = farm.submit({"scriptName": "toy", "worker": "lap", "requires": {"memoryGB": 2}})
    assert farm.wait_final(job_id)["outcome"]["worker"] == worker["name"]
    [too_big] = farm.submit({"scriptName": "toy", "requires": {"memoryGB": 8}})
    assert "needs 8 GB memory — no online worker has it" in farm.run_cli("show", too_big).stdout


def test_a_job_placed_on_a_worker_that_vanished_goes_back_to_its_queue(farm: Farm) -> None:
    from mlqueue import orders

    [job_id] = farm.submit({"scriptName": "toy", "x": 1.0})
    placed = orders.reroute(farm.order(job_id), {"placedOn": "ghost@nowhere"}, "placed on ghost@nowhere (test)",
                            "test", farm.settings)
    assert placed and placed["placedOn"] == "ghost@nowhere"
    farm.start_worker("w1")
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded" and order["outcome"]["worker"].startswith("w1@")
    assert any("ghost@nowhere went offline; back to its queue" in e["why"] for e in order["history"])


def _outcomes(farm: Farm, worker: str, seconds_per_epoch: list[float]) -> None:
    now = datetime.now(UTC)
    farm.db.outcomes.insert_many([
        {"jobId": f"{worker}-{i}", "state": "succeeded", "worker": worker, "script": {"name": "sweepy"},
         "epochsRun": 10, "durationSeconds": 10 * s, "finishedDate": now - timedelta(seconds=i)}
        for i, s in enumerate(seconds_per_epoch)])


def test_only_a_clearly_faster_machine_counts_as_faster_not_one_that_drew_smaller_trials(farm: Farm) -> None:
    # Two identical machines ran a sweep's trials (1 to 4 s an epoch, by hyperparameters): their medians differ
    # by 1.5x because one drew more of the wide ones. A third machine is 10x faster on the same trials.
    _outcomes(farm, "a@house", [1.0, 2.0, 3.0, 3.0, 4.0, 4.0])
    _outcomes(farm, "b@house", [1.0, 1.0, 2.0, 2.0, 3.0, 4.0])
    _outcomes(farm, "c@house", [0.1, 0.1, 0.2, 0.3, 0.3, 0.4])
    figures = speed.figures(farm.settings, fresh=True)
    a, b, c = (figures[f"{w}@house"]["sweepy"] for w in "abc")
    assert b["secondsPerEpoch"] < 0.9 * a["secondsPerEpoch"]   # by medians b would take a's Jobs...
    assert not speed.clearly_faster(b, a) and not speed.clearly_faster(a, b)   # ...but the spreads overlap
    assert speed.clearly_faster(c, a) and speed.clearly_faster(c, b)
    assert not speed.clearly_faster(a, c)


def test_figures_learn_from_the_newest_successes_and_then_from_each_new_one(farm: Farm, monkeypatch) -> None:
    from mlqueue.store import outcomes as outcome_store

    monkeypatch.setattr(speed, "RECENT", 4)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def outcome(i: int, seconds: float, state: str = "succeeded", minutes: int | None = None) -> None:
        outcome_store.insert_once(f"job{i}", {
            "jobId": f"job{i}", "state": state, "worker": "w1@h", "script": {"name": "toy"},
            "durationSeconds": seconds, "finishedDate": start + timedelta(minutes=i if minutes is None else minutes)},
            farm.settings)

    for i in range(6):
        outcome(i, 10.0 if i < 2 else 2.0)   # the two oldest are slow: not among the newest 4
    outcome(6, 50.0, state="failed")          # failures teach nothing
    toy = speed.figures(farm.settings, fresh=True)["w1@h"]["toy"]
    assert toy["jobs"] == 4 and toy["secondsPerJob"] == 2.0
    for i in range(7, 10):
        outcome(i, 8.0)                       # three new ones, newest of all
    outcome(10, 99.0, minutes=-5)             # written now, but finished before all others: too old to count
    toy = speed.figures(farm.settings, fresh=True)["w1@h"]["toy"]
    assert toy["jobs"] == 4 and toy["secondsPerJob"] == 8.0
