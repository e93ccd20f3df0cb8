"""Sweeps: files checked with positions, trials as real Jobs on real workers, pruning, loss and restarts."""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna
import pytest
import redis
from bson import ObjectId
from conftest import Farm, wait_for
from optuna.trial import TrialState

from ml_scripts import toy
from mlqueue import orders, store, sweeps
from mlqueue.settings import reload_settings
from mlqueue.sweeps import driver as sweep_driver

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def no_hq_unless_a_farm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Parsing needs no HQ: start every test from clean settings, whatever an earlier test cached.

    (Tests that use ``farm`` get their own HQ settings from it, after this.)
    """
    for key in ("MLQUEUE_BROKER_URL", "MLQUEUE_MONGO_URL", "MLQUEUE_MONGO_DB", "MLQUEUE_QUEUE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLQUEUE_HOME", str(tmp_path / "no-hq"))
    reload_settings()
    store.forget_clients()

EVERY_KIND = """\
name: every-kind
base:
  scriptName: toy
  layers:
    - {activation: relu, width: 1.0, dropout: 0.1}
  optimizer: {name: adam}
space:
  optimizer.name: {choice: [adam, sgd]}
  momentum: {float: [0.5, 0.99], when: {optimizer.name: sgd}}
  learningRate: {float: [1.0e-5, 0.1], log: true}
  batchSize: {int: [16, 512], log: true}
  epochs: {int: [10, 50], step: 10}
  dropoutStep: {float: [0.0, 0.5], step: 0.25}
  l2: {float: [-1, 1]}
  scaler: {choice: [standard, minmax]}
  fixed: {value: [1, 2, 3]}
  shape: {choice: [[8, 8], [4, 16]]}
  layers:
    repeat: {int: [1, 3]}
    each:
      activation: {choice: [relu, tanh]}
      width: {float: [0.5, 4.0]}
      gain: {float: [0.1, 1.0], when: {activation: tanh}}
      clip: {float: [1.0, 2.0], when: {scaler: minmax}}
  layers[0].dropout: {float: [0.0, 0.3]}
objective: {field: metric, direction: maximize}
method: random
seed: 3
budget: {maxTrials: 5, maxParallel: 2}
earlyStopping: asha
"""


def sample_jobs(sweep: sweeps.Sweep, n: int) -> list[tuple[dict[str, Any], dict[str, Any], Any]]:
    study = optuna.create_study(sampler=sweep.sampler(1), pruner=sweep.pruner(), direction=sweep.direction)
    out = []
    for _ in range(n):
        trial = study.ask()
        job, chosen = sweep.trial_job(trial, "s" * 24, trial.number)
        out.append((job, chosen, trial))
        study.tell(trial, 1.0)
    return out


def test_every_kind_of_parameter_lands_in_the_job_where_its_path_says() -> None:
    sweep = sweeps.parse_text(EVERY_KIND, "every.yaml")
    assert sweep.direction == "maximize" and sweep.max_trials == 5
    assert isinstance(sweep.pruner(), optuna.pruners.SuccessiveHalvingPruner)
    seen_layers, seen_momentum, seen_gain = set(), set(), 0
    for job, chosen, trial in sample_jobs(sweep, 150):
        assert job["scriptName"] == "toy" and job["sweepId"] == "s" * 24 and job["trialNumber"] == trial.number
        assert job["optimizer"]["name"] in ("adam", "sgd")
        assert ("momentum" in job) == (job["optimizer"]["name"] == "sgd")
        if "momentum" in job:
            assert 0.5 <= job["momentum"] <= 0.99
            seen_momentum.add(True)
        assert 1e-5 <= job["learningRate"] <= 0.1 and trial.distributions["learningRate"].log
        assert 16 <= job["batchSize"] <= 512 and isinstance(job["batchSize"], int)
        assert trial.distributions["batchSize"].log
        assert job["epochs"] in (10, 20, 30, 40, 50)
        assert job["dropoutStep"] in (0.0, 0.25, 0.5)
        assert -1 <= job["l2"] <= 1
        assert job["fixed"] == [1, 2, 3]
        assert job["shape"] in ([8, 8], [4, 16])
        layers = job["layers"]
        assert 1 <= len(layers) <= 3 and chosen["len(layers)"] == len(layers)
        seen_layers.add(len(layers))
        for i, layer in enumerate(layers):
            assert layer["activation"] in ("relu", "tanh") and 0.5 <= layer["width"] <= 4.0
            assert ("gain" in layer) == (layer["activation"] == "tanh")
            assert ("clip" in layer) == (job["scaler"] == "minmax")
            assert chosen[f"layers[{i}].activation"] == layer["activation"]
            seen_gain += "gain" in layer
        assert 0.0 <= layers[0]["dropout"] <= 0.3 and chosen["layers[0].dropout"] == layers[0]["dropout"]
        assert all(layer["dropout"] == 0.1 for layer in layers[1:])   # from the base list's element
        assert sweep.job_for(chosen, "s" * 24, trial.number) == job   # values alone rebuild the Job
    assert seen_layers == {1, 2, 3} and seen_momentum and seen_gain


GRID = """\
base: {scriptName: toy, layers: [{units: 1}]}
space:
  optimizer: {choice: [adam, sgd, rmsprop]}
  epochs: {int: [1, 5], step: 2}
  rate: {float: [0.1, 0.2], step: 0.1}
  layers:
    repeat: 2
    each:
      units: {choice: [8, 16]}
method: grid
"""


def test_grid_enumerates_the_whole_product_once() -> None:
    sweep = sweeps.parse_text(GRID, "grid.yaml")
    assert sweep.max_trials == 3 * 3 * 2 * 2 * 2
    drawn = {tuple(sorted(chosen.items())) for _, chosen, _ in sample_jobs(sweep, sweep.max_trials)}
    expected = {tuple(sorted(zip(["optimizer", "epochs", "rate", "layers[0].units", "layers[1].units"], combo,
                                 strict=True)))
                for combo in itertools.product(["adam", "sgd", "rmsprop"], [1, 3, 5], [0.1, 0.2], [8, 16], [8, 16])}
    assert drawn == expected
    assert len(sweeps.grid_points(sweep)) == len(expected)


@pytest.mark.parametrize("method, sampler", [("random", "RandomSampler"), ("tpe", "TPESampler"),
                                             ("qmc", "QMCSampler"), ("nsgaii", "NSGAIISampler"),
                                             ("cmaes", "CmaEsSampler"), ("gp", "GPSampler")])
def test_each_method_is_an_optuna_sampler_or_a_clear_missing_package(method: str, sampler: str) -> None:
    text = f"base: {{scriptName: toy}}\nspace:\n  x: {{float: [0, 1]}}\nmethod: {method}\nbudget: {{maxTrials: 3}}\n"
    package = sweeps.METHODS[method][1]
    if package and find_spec(package) is None:
        with pytest.raises(sweeps.SweepError, match=f"f.yaml:4:1: method: method {method} needs the `{package}`"):
            sweeps.parse_text(text, "f.yaml")
        return
    sweep = sweeps.parse_text(text, "f.yaml")
    assert type(sweep.sampler(seed=1)).__name__ == sampler
    assert len({job["x"] for job, _, _ in sample_jobs(sweep, 4)}) == 4


BASE = "base: {scriptName: toy}\n"
BUDGET = "budget: {maxTrials: 3}\n"
BAD_FILES = [
    ("unknown method", BASE + "space:\n  x: {float: [0, 1]}\nmethod: tpee\n" + BUDGET, "4:1", "unknown method 'tpee'"),
    ("empty space", BASE + "space: {}\n" + BUDGET, "2:1", "space is empty"),
    ("reversed float range", BASE + "space:\n  x:\n    float: [5, 1]\n" + BUDGET, "4:5", "range is reversed"),
    ("reversed int range", BASE + "space:\n  n: {int: [9, 2]}\n" + BUDGET, "3:7", "range is reversed"),
    ("malformed YAML", BASE + "space:\n  x: {float: [0, 1]\n" + BUDGET, "4:1", "not valid YAML"),
    ("field the script does not take", "base: {scriptName: sklearn_mlp}\nspace:\n  learningRate: {float: [0.001, 0.1]}"
     "\n  learningRat: {float: [0.001, 0.1]}\n" + BUDGET, "4:3", "does not take a field 'learningRat'"),
    ("nested field the script does not take", "base: {scriptName: sklearn_mlp, hiddenLayers: [{units: 8}]}\nspace:\n"
     "  hiddenLayers:\n    repeat: {int: [1, 2]}\n    each:\n      unitz: {int: [8, 64]}\n" + BUDGET, "6:7",
     "does not take a field 'hiddenLayers[0].unitz'"),
    ("value the script refuses", BASE + "space:\n  epochs: {int: [-3, 2]}\n" + BUDGET, "3:3", "refuses epochs = -3"),
    ("log scale from zero", BASE + "space:\n  lr: {float: [0, 1], log: true}\n" + BUDGET, "3:23", "log scale"),
    ("condition on a missing parameter", BASE + "space:\n  x: {float: [0, 1], when: {opt: sgd}}\n" + BUDGET,
     "3:29", "names no parameter"),
    ("condition on an impossible value", BASE + "space:\n  opt: {choice: [adam, sgd]}\n  x: {float: [0, 1], "
     "when: {opt: sgdd}}\n" + BUDGET, "4:29", "not a value opt can take"),
    ("grid over a continuous range", BASE + "space:\n  x: {float: [0, 1]}\nmethod: grid\n", "3:7", "finite set"),
    ("unknown top-level key", BASE + "space:\n  x: {float: [0, 1]}\nmetod: tpe\n" + BUDGET, "4:1", "unknown key"),
    ("spec of no kind", BASE + "space:\n  x: {floot: [0, 1]}\n" + BUDGET, "3:3", "exactly one of"),
    ("key given twice", BASE + "space:\n  x: {float: [0, 1]}\n  x: {float: [0, 2]}\n" + BUDGET, "4:3", "twice"),
    ("list element the base lacks", "base: {scriptName: toy, layers: [{a: 1}]}\nspace:\n"
     "  layers[3].a: {float: [0, 1]}\n" + BUDGET, "3:3", "layers[3] is not in the Job"),
    ("unknown early stopping", BASE + "space:\n  x: {float: [0, 1]}\nearlyStopping: sha\n" + BUDGET, "4:1",
     "unknown early stopping 'sha'"),
    ("no budget", BASE + "space:\n  x: {float: [0, 1]}\nmethod: random\n", "1:1", "maxTrials"),
    ("typo under budget", BASE + "space:\n  x: {float: [0, 1]}\nbudget: {maxTrails: 3}\n", "4:10",
     "unknown key; did you mean 'maxTrials'? (budget takes maxTrials, maxParallel, maxWallSeconds)"),
]


@pytest.mark.parametrize("text, position, phrase", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_sweep_files_are_refused_with_their_position(text: str, position: str, phrase: str) -> None:
    with pytest.raises(sweeps.SweepError) as err:
        sweeps.parse_text(text, "bad.yaml")
    message = str(err.value)
    assert f"bad.yaml:{position}:" in message and phrase in message, message
    assert "nothing was queued" in message


def test_malformed_json_sweep_names_line_and_column() -> None:
    text = '{"base": {"scriptName": "toy"},\n "space": {"x": {"float": [0, 1]},}}'
    with pytest.raises(sweeps.SweepError) as err:
        sweeps.parse_text(text, "bad.json")
    assert "bad.json:2:35: not valid JSON" in str(err.value)


def test_a_refused_file_stores_nothing_and_queues_nothing(farm: Farm, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "space:\n  x: {float: [5, 1]}\n" + BUDGET)
    result = farm.run_cli("sweep", str(bad))
    assert result.returncode == 2
    assert re.search(r"bad\.yaml:3:7: space\.x\.float: range is reversed", result.stderr), result.stderr
    assert farm.db.sweeps.count_documents({}) == 0
    assert farm.db.jobs.count_documents({}) == 0 and farm.db.orders.count_documents({}) == 0
    keys = redis.Redis.from_url(farm.settings.broker_url).keys(f"mlqueue:optuna:{farm.settings.mongo_db}*")
    assert keys == []


# --------------------------------------------------------------------------- with real workers


def write_sweep(path: Path, *, method: str = "random", trials: int = 8, parallel: int = 2, epochs: int = 0,
                sleep: float = 0.3, early: str = "none", seed: int = 5, extra_base: str = "") -> Path:
    path.write_text(f"""\
name: toy-{method}
base: {{scriptName: toy, projectName: sweeps, epochs: {epochs}, sleepSeconds: {sleep}, noise: 0.0{extra_base}}}
space:
  x: {{float: [-5, 5]}}
  y: {{float: [-5, 5]}}
  shape: {{choice: [flat, steep]}}
  z: {{int: [-5, 5], when: {{shape: steep}}}}
objective: loss
method: {method}
seed: {seed}
budget: {{maxTrials: {trials}, maxParallel: {parallel}}}
earlyStopping: {early}
""")
    return path


def sweep_orders(farm: Farm, sweep_id: str) -> list[dict[str, Any]]:
    return list(farm.db.orders.find({"sweepId": sweep_id}, {"log": 0}))


def max_unfinished(order_docs: list[dict[str, Any]]) -> int:
    """Most Orders unfinished at once, from their created/finished timestamps."""
    events = sorted([(o["createdDate"], 1) for o in order_docs] + [(o["finishedDate"], -1) for o in order_docs],
                    key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def load_study(farm: Farm, sweep_id: str) -> optuna.Study:
    doc = sweep_driver.get(sweep_id, farm.settings)
    return optuna.load_study(study_name=doc["studyName"], storage=sweep_driver.study_storage(farm.settings))


def drive(farm: Farm, sweep_id: str, timeout: float = 90, drivers: int = 1, **kwargs: Any) -> dict[str, Any]:
    """Run Drivers (each in its own thread) until the sweep ends; return the final sweep document."""
    stop = threading.Event()
    threads = [threading.Thread(target=sweep_driver.Driver(settings=farm.settings, sweep_ids=[sweep_id], poll=0.2,
                                                           **kwargs).run_forever, args=(stop,), daemon=True)
               for _ in range(drivers)]
    for thread in threads:
        thread.start()
    try:
        return wait_for(lambda: farm.db.sweeps.find_one({"_id": sweep_driver.get(sweep_id, farm.settings)["_id"],
                                                         "state": {"$in": list(sweep_driver.FINAL)}}),
                        timeout=timeout, what=f"sweep {sweep_id} to end")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)


def create(farm: Farm, path: Path) -> str:
    spec, text = sweeps.parse_file(path, farm.settings)
    return sweep_driver.create(spec, text, str(path), settings=farm.settings)


def test_random_sweep_from_the_cli_reaches_its_budget_with_the_best_and_never_too_many_at_once(
        farm: Farm, tmp_path: Path) -> None:
    farm.start_worker("w1")
    farm.start_worker("w2")
    file = write_sweep(tmp_path / "toy.yaml", method="random", trials=8, parallel=2, sleep=0.6)
    result = farm.run_cli("sweep", str(file), "--wait")
    assert result.returncode == 0, result.stderr + result.stdout
    sweep_id = result.stdout.splitlines()[0].strip()
    assert "best:" in result.stdout and "state done" in result.stdout
    doc = sweep_driver.get(sweep_id, farm.settings)
    assert doc["state"] == "done" and doc["toldCount"] == 8 and doc["counters"]["succeeded"] == 8
    order_docs = sweep_orders(farm, sweep_id)
    assert len(order_docs) == 8 and {o["state"] for o in order_docs} == {"succeeded"}
    assert max_unfinished(order_docs) == 2   # never more than maxParallel, and both machines were kept busy
    losses = {o["jobId"]: o["outcome"]["loss"] for o in order_docs}
    assert doc["best"]["value"] == pytest.approx(min(losses.values()))
    assert doc["best"]["jobId"] == min(losses, key=losses.get)
    study = load_study(farm, sweep_id)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8
    assert study.best_value == pytest.approx(doc["best"]["value"])
    status = farm.run_cli("sweep", "status", sweep_id[:10])
    assert "succeeded 8" in status.stdout and "2 machine(s)" in status.stdout, status.stdout
    best_file = tmp_path / "best.json"
    assert farm.run_cli("sweep", "best", sweep_id, "-o", str(best_file)).returncode == 0
    best_job = json.loads(best_file.read_text())
    assert "sweepId" not in best_job and "trialNumber" not in best_job and best_job["scriptName"] == "toy"
    resubmitted = farm.run_cli("submit", str(best_file), "--wait")
    assert resubmitted.returncode == 0, resubmitted.stderr


def test_tpe_sweep_with_two_drivers_at_once_keeps_max_parallel_unfinished_counting_queued_ones(
        farm: Farm, tmp_path: Path) -> None:
    farm.start_worker("w1")
    farm.start_worker("w2")
    sweep_id = create(farm, write_sweep(tmp_path / "tpe.yaml", method="tpe", trials=12, parallel=3, sleep=0.2))
    doc = drive(farm, sweep_id, drivers=2)   # e.g. the HQ's and a `sweep --wait`: the lease keeps them apart
    assert doc["state"] == "done" and doc["toldCount"] == 12
    study = load_study(farm, sweep_id)
    assert len(study.trials) == 12 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert doc["best"]["value"] == pytest.approx(study.best_value)
    records = {r["trialNumber"]: r for r in sweep_driver.trials(sweep_id, farm.settings)}
    for trial in study.trials:   # the study saw exactly the values each trial's Job ran with
        job = farm.db.jobs.find_one({"sweepId": sweep_id, "trialNumber": trial.number})
        assert {k: job[k] for k in trial.params} == trial.params
        assert records[trial.number]["value"] == pytest.approx(trial.value)
    # 3 unfinished at a time on 2 machines: one trial always waits in the queue, never a fourth
    assert max_unfinished(sweep_orders(farm, sweep_id)) == 3


def test_pruning_stops_bad_trials_early_on_their_workers_keeping_their_metrics(farm: Farm, tmp_path: Path) -> None:
    farm.start_worker("w1")
    farm.start_worker("w2")
    file = write_sweep(tmp_path / "prune.yaml", method="random", trials=10, parallel=2, epochs=8, sleep=2.4,
                       early="{method: median, startupTrials: 2, warmupSteps: 1}", seed=11)
    sweep_id = create(farm, file)
    doc = drive(farm, sweep_id, timeout=120)
    assert doc["state"] == "done" and doc["toldCount"] == 10
    order_docs = sweep_orders(farm, sweep_id)
    pruned = [o for o in order_docs if o["state"] == "pruned"]
    assert pruned, [o["state"] for o in order_docs]
    for order in pruned:
        assert order["outcome"]["pruned"] is True and order["outcome"]["reason"] == "pruned"
        assert 1 <= len(order["metrics"]) < 8                     # stopped before its last epoch
        assert order["outcome"]["loss"] == order["metrics"][-1]["loss"]   # partial metrics kept
        assert any("pruner" in (e.get("why") or "") for e in order["history"])
    study = load_study(farm, sweep_id)
    states = {t.number: t.state for t in study.trials}
    records = {r["trialNumber"]: r for r in sweep_driver.trials(sweep_id, farm.settings)}
    for number, record in records.items():
        expected = {"pruned": TrialState.PRUNED, "succeeded": TrialState.COMPLETE}[record["state"]]
        assert states[number] == expected
    assert doc["counters"]["pruned"] == len(pruned)
    assert all(t.intermediate_values for t in study.trials)


def run_rung_sweep(farm: Farm, tmp_path: Path, trials: int) -> tuple[str, dict]:
    """A sweep of short trials (4 epochs in 0.04 s) under ASHA with reduction factor 100, so only the best
    trial at rung 1 goes on, and the study given that best one first; driven to its end: (id, its doc)."""
    file = write_sweep(tmp_path / "rungs.yaml", method="random", trials=trials, parallel=1, epochs=4, sleep=0.04,
                       early="{method: asha, minResource: 1, reductionFactor: 100}", seed=3)
    sweep_id = create(farm, file)
    load_study(farm, sweep_id).enqueue_trial({"x": toy.optimum("x"), "y": toy.optimum("y"), "shape": "flat"})
    return sweep_id, drive(farm, sweep_id)


def test_short_trials_wait_for_the_verdict_at_the_pruners_rungs_only_and_are_pruned_there_every_time(
        farm: Farm, tmp_path: Path) -> None:
    """4 epochs in 0.04 s, far shorter than the driver's poll: without waiting at the rung they escaped."""
    farm.start_worker("w1")
    sweep_id, doc = run_rung_sweep(farm, tmp_path, trials=6)
    assert doc["state"] == "done" and doc["toldCount"] == 6
    by_trial = {farm.db.jobs.find_one({"_id": ObjectId(o["jobId"])})["trialNumber"]: o
                for o in sweep_orders(farm, sweep_id)}
    job = farm.db.jobs.find_one({"sweepId": sweep_id, "trialNumber": 0})
    assert job["pruneSteps"] == {"field": "epoch", "steps": [1]}   # rungs 100, 10000... lie past its 4 epochs
    first = by_trial.pop(0)
    assert first["state"] == "succeeded" and [m["epoch"] for m in first["metrics"]] == [1, 2, 3, 4]
    assert first["outcome"]["rungWaits"]["steps"] == [1]          # epochs 2-4 are no rungs: never waited
    assert first["outcome"]["rungWaits"]["timedOut"] == 0
    for number, order in by_trial.items():                           # every other trial stopped at rung 1
        assert order["state"] == "pruned", (number, order["state"], order.get("metrics"))
        assert [m["epoch"] for m in order["metrics"]] == [1]
        assert order["outcome"]["rungWaits"] == {**order["outcome"]["rungWaits"], "steps": [1], "timedOut": 0}
    best_job = sweep_driver.best_job(sweep_id, farm.settings)
    assert best_job is not None and "pruneSteps" not in best_job[0]


def test_a_trial_whose_driver_is_gone_waits_a_bounded_time_at_its_first_rung_then_no_more(farm: Farm) -> None:
    farm.start_worker("w1", MLQUEUE_VERDICT_TIMEOUT="0.5")
    [job_id] = farm.submit({"scriptName": "toy", "epochs": 3, "sleepSeconds": 0, "sweepId": "gone",
                            "pruneSteps": {"field": "epoch", "steps": [1, 2, 3]}})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded" and len(order["metrics"]) == 3
    assert order["outcome"]["rungWaits"]["steps"] == [1] and order["outcome"]["rungWaits"]["timedOut"] == 1


def test_a_trial_lost_with_its_worker_is_rerun_and_counted_once(farm: Farm, tmp_path: Path) -> None:
    w1 = farm.start_worker("w1")
    farm.start_worker("w2")
    sweep_id = create(farm, write_sweep(tmp_path / "lost.yaml", trials=5, parallel=2, epochs=4, sleep=2.0))
    stop = threading.Event()
    driver = sweep_driver.Driver(settings=farm.settings, sweep_ids=[sweep_id], poll=0.2)
    thread = threading.Thread(target=driver.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        victim = wait_for(lambda: farm.db.orders.find_one({"sweepId": sweep_id, "state": "running",
                                                           "worker": {"$regex": "^w1@"}}),
                          timeout=60, what="a trial running on w1")
        farm.kill_worker(w1)
        doc = wait_for(lambda: farm.db.sweeps.find_one({"state": "done"}), timeout=120, what="the sweep to end")
    finally:
        stop.set()
        thread.join(10)
    lost = farm.order(victim["jobId"])
    assert lost["state"] == "succeeded" and lost["attempts"] == 2
    assert any("lost" in (e.get("why") or "") for e in lost["history"])
    assert doc["toldCount"] == 5 and doc["counters"]["succeeded"] == 5
    assert farm.db.jobs.count_documents({"sweepId": sweep_id}) == 5
    assert farm.db.outcomes.count_documents({"jobId": victim["jobId"]}) == 1
    study = load_study(farm, sweep_id)
    assert len(study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_new_driver_takes_over_a_dead_ones_lease_and_continues_the_same_study(farm: Farm, tmp_path: Path) -> None:
    farm.start_worker("w1")
    farm.start_worker("w2")
    sweep_id = create(farm, write_sweep(tmp_path / "restart.yaml", method="tpe", trials=8, parallel=2, sleep=0.3))
    first = sweep_driver.Driver(owner="first", settings=farm.settings, sweep_ids=[sweep_id], lease_seconds=2)
    wait_for(lambda: first.step() and farm.db.sweeps.find_one({"toldCount": {"$gte": 3}}), timeout=60,
             what="the first driver to finish 3 trials")
    # the first driver dies here, holding its lease; a second one must wait for the lease to expire
    second = sweep_driver.Driver(owner="second", settings=farm.settings, sweep_ids=[sweep_id], lease_seconds=2)
    assert second.step()["sweeps"] == 0
    doc = drive(farm, sweep_id, owner="second")
    assert doc["state"] == "done" and doc["toldCount"] == 8
    records = sweep_driver.trials(sweep_id, farm.settings)
    assert [r["trialNumber"] for r in records] == list(range(8))
    assert {r["toldBy"] for r in records} == {"first", "second"}
    params = [tuple(sorted((p["name"], json.dumps(p["value"])) for p in r["params"])) for r in records]
    assert len(set(params)) == 8   # the restarted sampler did not replay the first driver's draws
    study = load_study(farm, sweep_id)
    assert len(study.trials) == 8 and all(t.state == TrialState.COMPLETE for t in study.trials)


def test_stop_cancels_unfinished_trials_and_keeps_finished_ones(farm: Farm, tmp_path: Path) -> None:
    farm.start_worker("w1")
    file = write_sweep(tmp_path / "stop.yaml", trials=6, parallel=2, epochs=30, sleep=30)
    sweep_id = create(farm, file)
    driver = sweep_driver.Driver(settings=farm.settings, sweep_ids=[sweep_id])
    wait_for(lambda: driver.step() is not None and farm.db.orders.find_one({"sweepId": sweep_id, "state": "running"}),
             timeout=60, what="a running trial")
    driver.release()
    result = farm.run_cli("sweep", "stop", sweep_id)
    assert result.returncode == 0 and "stopped" in result.stdout, result.stdout + result.stderr
    doc = sweep_driver.get(sweep_id, farm.settings)
    assert doc["state"] == "stopped" and doc["toldCount"] == 2
    assert {o["state"] for o in sweep_orders(farm, sweep_id)} == {"cancelled"}
    assert all(t.state == TrialState.FAIL for t in load_study(farm, sweep_id).trials)
    assert math.isclose(len(load_study(farm, sweep_id).trials), 2)
    time.sleep(0.5)
    assert farm.db.orders.count_documents({"sweepId": sweep_id}) == 2   # nothing asked after the stop


def test_a_driver_repairs_what_a_crashed_one_left_half_done(farm: Farm, tmp_path: Path) -> None:
    """No workers: the Orders stay queued, so each half-done state can be set up exactly."""
    sweep_id = create(farm, write_sweep(tmp_path / "crash.yaml", trials=6, parallel=4))
    crashed = sweep_driver.Driver(owner="crashed", settings=farm.settings, sweep_ids=[sweep_id], lease_seconds=0.5)
    assert crashed.step()["asked"] == 4
    records = sweep_driver.trials(sweep_id, farm.settings)
    # 1. it cancelled trial 0, claimed its telling on the record, and died before telling the study
    orders.cancel(records[0]["jobId"], settings=farm.settings)
    farm.db.sweep_trials.update_one({"sweepId": sweep_id, "trialNumber": 0},
                                    {"$set": {"told": True, "state": "cancelled"}})
    # 2. it recorded trial 1 but died before submitting its Job
    farm.db.sweep_trials.update_one({"sweepId": sweep_id, "trialNumber": 1}, {"$set": {"jobId": None}})
    farm.db.orders.delete_one({"jobId": records[1]["jobId"]})
    farm.db.jobs.delete_one({"sweepId": sweep_id, "trialNumber": 1})
    # 3. it asked the study for a trial and died before recording it
    orphan = load_study(farm, sweep_id).ask()
    time.sleep(0.6)   # the dead driver's lease (and the orphan's grace) expire
    heir = sweep_driver.Driver(owner="heir", settings=farm.settings, sweep_ids=[sweep_id], lease_seconds=0.5)
    assert heir.step()["sweeps"] == 1
    study = load_study(farm, sweep_id)
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[orphan.number].state == TrialState.FAIL
    resubmitted = list(farm.db.jobs.find({"sweepId": sweep_id, "trialNumber": 1}))
    assert len(resubmitted) == 1 and resubmitted[0]["x"] == next(p["value"] for p in records[1]["params"]
                                                                  if p["name"] == "x")
    assert sweep_driver.trials(sweep_id, farm.settings)[1]["jobId"] == str(resubmitted[0]["_id"])
    heir.step()
    assert farm.db.jobs.count_documents({"sweepId": sweep_id, "trialNumber": 1}) == 1   # submitted once


def test_max_wall_time_ends_the_sweep_cancelling_what_is_unfinished(farm: Farm, tmp_path: Path) -> None:
    file = write_sweep(tmp_path / "wall.yaml", trials=6, parallel=2)
    file.write_text(file.read_text().replace("maxParallel: 2}", "maxParallel: 2, maxWallSeconds: 1.5}"))
    sweep_id = create(farm, file)
    started = time.monotonic()
    doc = drive(farm, sweep_id, timeout=30)
    assert time.monotonic() - started >= 1.4
    assert doc["state"] == "done" and "maxWallSeconds" in doc["stopReason"]
    assert doc["toldCount"] == 2 and {o["state"] for o in sweep_orders(farm, sweep_id)} == {"cancelled"}


def test_an_objective_typo_stops_the_sweep_at_its_first_trial_naming_the_outcomes_fields(
        farm: Farm, tmp_path: Path) -> None:
    farm.start_worker("w1")
    file = write_sweep(tmp_path / "typo.yaml", method="random", trials=6, parallel=1, sleep=0.1)
    file.write_text(file.read_text().replace("objective: loss", "objective: los"))
    sweep_id = create(farm, file)
    doc = drive(farm, sweep_id)
    assert doc["state"] == "stopped" and doc["toldCount"] == 1 and len(sweep_orders(farm, sweep_id)) == 1
    assert "the objective 'los' is not in the Outcome of trial 0" in doc["stopReason"]
    assert "did you mean 'loss'?" in doc["stopReason"] and "loss" in doc["stopReason"].split("numeric fields: ")[1]

    status = farm.run_cli("sweep", "status")   # no id: the latest sweep, said on stderr
    assert status.returncode == 0 and "latest sweep" in status.stderr and "`mlqueue sweep list`" in status.stderr
    assert f"sweep {sweep_id}" in status.stdout and "did you mean 'loss'?" in status.stdout
    best = farm.run_cli("sweep", "best")
    assert best.returncode == 1 and "no successful trial" in best.stderr
