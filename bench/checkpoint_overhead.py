"""What do nn.py's checkpoints cost, and how much work does an interruption still lose?

Trains nn.py Jobs that checkpoint every few epochs, each checkpoint really uploaded to the HQ store (an
embedded MongoDB-protocol server, GridFS, the atomic pointer flip on an Order) as a worker does, and
times, inside the run, each checkpoint (saving the ``.npz`` plus the upload) and the training around
them. Timing inside one run, rather than comparing a run with checkpoints to one without, keeps the
figure meaningful on a machine shared with other work, where two identical runs differ by 20%.

From the measured checkpoint cost ``c`` and epoch time ``e`` it reports, for nn.py's default schedule
(a checkpoint after ``MIN_INTERVAL_SECONDS`` of training, or ``ADAPTIVE_RATIO`` × ``c`` if longer):
the overhead ``c / interval`` and the epochs an interruption at a random moment redoes (half an
interval on average, one at worst); and, for comparison, the overhead of checkpointing every epoch.
Two scenarios: mini-batch training on a 20,000-row table and the seeds' full-batch style on the wine
data (epochs of a few ms). Target: default overhead < 3.5%.

Usage: ``python bench/checkpoint_overhead.py`` -> prints a table, writes
``bench/results/checkpoint_overhead.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nn_throughput import SCENARIOS, Scenario, nn_job, scenario_data  # noqa: E402
from ml_scripts import _nn_checkpoints, nn  # noqa: E402
from mlqueue import checkpoints, orders, store  # noqa: E402
from mlqueue.servers import MongoServer  # noqa: E402
from mlqueue.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "checkpoint_overhead.json"
TARGET = 0.035
RUNS = {"minibatch-20k": (24, 2), "fullbatch-wine": (3000, 100)}   # epochs, checkpoint every N epochs


def running_order(settings: Settings, job_id: str) -> dict[str, Any]:
    """An Order held by attempt 1, as a worker holds it while the Job runs."""
    order = {"jobId": job_id, "delivery": "bench", "attempts": 1, "state": orders.RUNNING, "history": []}
    store.db(settings).orders.insert_one(dict(order))
    return order


def measure(scenario: Scenario, directory: Path, settings: Settings) -> dict[str, Any]:
    """One instrumented run: seconds spent checkpointing, and training seconds per epoch without them."""
    epochs, every = RUNS[scenario.name]
    data, target = scenario_data(scenario, directory)
    order = running_order(settings, scenario.name)
    spent: list[float] = []
    save = _nn_checkpoints.Plan.save

    def timed_save(plan: Any, *args: Any) -> Path:
        started = time.perf_counter()
        path = save(plan, *args)
        spent.append(time.perf_counter() - started)
        return path

    def report(checkpoint: str | None = None, **metrics: Any) -> None:
        if checkpoint is not None:
            started = time.perf_counter()
            checkpoints.save(order, checkpoint, metrics["epoch"], settings)
            spent[-1] += time.perf_counter() - started

    _nn_checkpoints.Plan.save = timed_save  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as out:
            job = nn_job(scenario, data, target, Path(out))
            job.update(epochs=epochs, checkpointDir=str(Path(out) / "ck"), checkpointEveryEpochs=every)
            outcome = nn.run(job, report)
    finally:
        _nn_checkpoints.Plan.save = save  # type: ignore[method-assign]
    assert outcome["status"] == 200 and len(spent) == epochs // every, (outcome, len(spent))
    cost = sum(spent) / len(spent)
    epoch = (outcome["trainingSeconds"] - sum(spent)) / epochs
    interval = max(_nn_checkpoints.MIN_INTERVAL_SECONDS, cost * _nn_checkpoints.ADAPTIVE_RATIO)
    return {
        "epochs": epochs, "checkpoints": len(spent), "checkpointSeconds": round(cost, 4),
        "checkpointBytes": store.db(settings)["checkpoints.files"].find_one(
            {"metadata.jobId": scenario.name})["length"],
        "epochSeconds": round(epoch, 5),
        "measuredOverhead": {f"every {every} epochs": round(sum(spent) / (epochs * epoch), 4)},
        "default": {"intervalSeconds": round(interval, 1), "overhead": round(cost / interval, 4),
                    "epochsRedonePerInterruption": round(interval / epoch / 2, 1),
                    "epochsRedoneWorst": round(interval / epoch)},
        "everyEpoch": {"overhead": round(cost / epoch, 3), "epochsRedonePerInterruption": 0.5},
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        mongo = MongoServer(Path(tmp) / "mongo", Path(tmp) / "mongo.log").start()
        try:
            settings = Settings(broker_url="redis://unused", mongo_url=mongo.url, mongo_db="bench_ckpt")
            report = {"target": TARGET, "scenarios": {s.name: measure(s, Path(tmp), settings) for s in SCENARIOS}}
        finally:
            store.forget_clients()
            mongo.stop()
    print(f"{'scenario':16} {'ckpt s':>7} {'epoch s':>8} {'measured':>9} {'default':>8} {'interval s':>10} "
          f"{'redone avg':>10} {'worst':>6} {'every epoch':>11}")
    ok = True
    for name, r in report["scenarios"].items():
        d = r["default"]
        print(f"{name:16} {r['checkpointSeconds']:7.3f} {r['epochSeconds']:8.4f} "
              f"{next(iter(r['measuredOverhead'].values())):9.2%} {d['overhead']:8.2%} {d['intervalSeconds']:10.1f} "
              f"{d['epochsRedonePerInterruption']:10.1f} {d['epochsRedoneWorst']:6d} "
              f"{r['everyEpoch']['overhead']:11.1%}")
        ok &= d["overhead"] < TARGET
    report["defaultUnderTarget"] = ok
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"default overhead < {TARGET:.1%}: {'yes' if ok else 'NO'}; wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
