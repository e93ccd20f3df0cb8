"""What do nn.py's checkpoints cost, and how much work does an interruption still lose?

Trains the same nn.py Job with checkpoints off (``checkpointEveryEpochs: 0``) and on — the default
adaptive schedule, and every epoch for comparison — with every checkpoint really uploaded to the HQ
store (an embedded MongoDB-protocol server, GridFS, the atomic pointer flip on an Order), as a worker
does. Overhead = extra training time / training time without checkpoints (best of ``REPEATS``,
alternating, to dodge other load). Work lost per interruption: the epochs an interruption at a uniformly
random moment of the training redoes, on average (sum of squared checkpoint intervals / twice the
epochs; the last stretch, from the last checkpoint to the end, counts too) and at worst.

Two scenarios: mini-batch training on a 20,000-row table (epochs of ~0.3 s) and the seeds' full-batch
style on the wine data (thousands of epochs of a few ms), each long enough for the default schedule to
checkpoint. Target: default overhead < 3.5%.

Usage: ``python bench/checkpoint_overhead.py`` -> prints a table, writes
``bench/results/checkpoint_overhead.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nn_throughput import SCENARIOS, Scenario, nn_job, scenario_data  # noqa: E402
from ml_scripts import nn  # noqa: E402
from mlqueue import checkpoints, orders, store  # noqa: E402
from mlqueue.servers import MongoServer  # noqa: E402
from mlqueue.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "checkpoint_overhead.json"
TARGET = 0.035
REPEATS = 2
EPOCHS = {"minibatch-20k": 100, "fullbatch-wine": 8000}
MODES = {"minibatch-20k": {"off": 0, "default": None, "every epoch": 1},
         "fullbatch-wine": {"off": 0, "default": None, "every 100 epochs": 100}}


def running_order(settings: Settings, job_id: str) -> dict[str, Any]:
    """An Order held by attempt 1, as a worker holds it while the Job runs."""
    order = {"jobId": job_id, "delivery": "bench", "attempts": 1, "state": orders.RUNNING, "history": []}
    store.db(settings).orders.insert_one(dict(order))
    return order


def train(scenario: Scenario, data: Path, target: str, every: int | None, settings: Settings, run: int
          ) -> dict[str, Any]:
    """One nn.run; checkpoints go to the store through ``checkpoints.save``."""
    order = running_order(settings, f"{scenario.name}-{every}-{run}")
    saved: list[int] = []

    def report(checkpoint: str | None = None, **metrics: Any) -> None:
        if checkpoint is not None:
            checkpoints.save(order, checkpoint, metrics["epoch"], settings)
            saved.append(metrics["epoch"])

    with tempfile.TemporaryDirectory() as out:
        job = nn_job(scenario, data, target, Path(out))
        job.update(epochs=EPOCHS[scenario.name], checkpointDir=str(Path(out) / "ck"), checkpointEveryEpochs=every)
        outcome = nn.run(job, report)
    assert outcome["status"] == 200, outcome
    epochs = EPOCHS[scenario.name]
    stretches = [b - a for a, b in zip([0, *saved], [*saved, epochs], strict=True)]
    return {"seconds": outcome["trainingSeconds"], "checkpoints": len(saved),
            "epochsRedonePerInterruption": round(sum(s * s for s in stretches) / (2 * epochs), 1),
            "epochsRedoneWorst": max(stretches)}


def measure(scenario: Scenario, directory: Path, settings: Settings) -> dict[str, Any]:
    data, target = scenario_data(scenario, directory)
    best: dict[str, dict[str, Any]] = {}
    for run in range(REPEATS):
        for mode, every in MODES[scenario.name].items():
            result = train(scenario, data, target, every, settings, run)
            if mode not in best or result["seconds"] < best[mode]["seconds"]:
                best[mode] = result
    base = best["off"]["seconds"]
    for result in best.values():
        result["overhead"] = round((result["seconds"] - base) / base, 4)
        result["seconds"] = round(result["seconds"], 3)
    return {"epochs": EPOCHS[scenario.name], "modes": best}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        mongo = MongoServer(Path(tmp) / "mongo", Path(tmp) / "mongo.log").start()
        try:
            settings = Settings(broker_url="redis://unused", mongo_url=mongo.url, mongo_db="bench_ckpt")
            report = {"target": TARGET, "scenarios": {s.name: measure(s, Path(tmp), settings) for s in SCENARIOS}}
        finally:
            store.forget_clients()
            mongo.stop()
    print(f"{'scenario':16} {'mode':18} {'train s':>8} {'overhead':>9} {'ckpts':>6} {'redone avg':>10} {'worst':>6}")
    ok = True
    for name, scenario in report["scenarios"].items():
        for mode, r in scenario["modes"].items():
            print(f"{name:16} {mode:18} {r['seconds']:8.2f} {r['overhead']:9.2%} {r['checkpoints']:6d} "
                  f"{r['epochsRedonePerInterruption']:10.1f} {r['epochsRedoneWorst']:6d}")
        ok &= scenario["modes"]["default"]["overhead"] < TARGET
    report["defaultUnderTarget"] = ok
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"default overhead < {TARGET:.1%}: {'yes' if ok else 'NO'}; wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
