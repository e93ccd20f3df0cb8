"""Does nn.py cost training speed compared with writing the Keras model by hand?

Trains the same network twice per scenario, in one process, on the same standardised data:

* through ``ml_scripts.nn.run`` (job-driven: validation, preprocessing, callbacks, reporting), and
* through a plain hand-written script: ``keras.Sequential`` + ``model.fit(x, y,
  validation_data=...)`` -- the way the seeds' scripts train.

Throughput is training samples per second of ``fit`` (rows x epochs / fit seconds); the
end-to-end figure also counts loading, preprocessing and model building.  Early stopping
is kept out of the way (patience = all epochs) so both sides train the same number of
epochs, and weights are saved after the clock stops.  Two scenarios: mini-batch training on
a 20,000-row synthetic table, and the seeds' full-batch style (wine data, batch 100000).
Each side runs ``REPEATS`` times alternately; the best run counts (least disturbed by
other load).  Target: ratio nn/plain >= 0.95.

Usage: ``python bench/nn_throughput.py`` -> prints a table, writes
``bench/results/nn_throughput.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml_scripts import nn  # noqa: E402
from ml_scripts._common import noop_report  # noqa: E402
from ml_scripts.demo_data import wine_data_frame  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "nn_throughput.json"
TARGET_RATIO = 0.95
REPEATS = 3
SEED = 42


@dataclass(frozen=True)
class Scenario:
    """One benchmark setting: data, network and training length."""

    name: str
    rows: int
    epochs: int
    batch_size: int
    width_modifiers: tuple[float, ...]


@dataclass
class Measurement:
    """Best-of-REPEATS throughput figures for one side of a scenario."""

    fit_samples_per_s: float
    end_to_end_samples_per_s: float
    fit_seconds: float


SCENARIOS = (
    Scenario("minibatch-20k", rows=20_000, epochs=8, batch_size=256, width_modifiers=(4.0, 2.0, 1.0)),
    Scenario("fullbatch-wine", rows=178, epochs=150, batch_size=100_000, width_modifiers=(4.0, 2.3, 1.3)),
)


def synthetic_frame(rows: int, features: int = 20) -> pd.DataFrame:
    """A nonlinear regression table, deterministic so runs are comparable."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(rows, features))
    y = 3 * x[:, 0] - 2 * x[:, 1] ** 2 + np.sin(x[:, 2]) + rng.normal(scale=0.5, size=rows)
    return pd.DataFrame(x, columns=[f"con_x{i}" for i in range(features)]).assign(con_y=y)


def scenario_data(scenario: Scenario, directory: Path) -> tuple[Path, str]:
    """Write the scenario's CSV and return it with the target column name."""
    if scenario.name.endswith("wine"):
        frame, target = wine_data_frame(), "con_lot"
    else:
        frame, target = synthetic_frame(scenario.rows), "con_y"
    path = directory / f"{scenario.name}.csv"
    frame.to_csv(path, index=False)
    return path, target


def nn_job(scenario: Scenario, data: Path, target: str, out: Path) -> dict[str, Any]:
    """The job for nn.py: same network as the plain script, nothing that changes epochs."""
    return {
        "dataPath": str(data), "writePath": str(out), "depedentVariable": target,
        "hiddenLayers": [{"activation": "relu", "widthModifier": m, "dropout": 0.2} for m in scenario.width_modifiers],
        "optimizer": "rmsprop", "learningRate": 0.001, "loss": "mse", "batchSize": scenario.batch_size,
        "epochs": scenario.epochs, "patienceRate": 1.0, "slowLearningRate": 0, "scalerType": "standard",
        "scaleTarget": False, "saveWeightsOnlyAtEnd": True, "validationSplit": 0.2, "seed": SEED,
    }


def measure_nn(scenario: Scenario, data: Path, target: str) -> tuple[float, float, int]:
    """(fit seconds, end-to-end seconds, training rows) for one nn.run call."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        outcome = nn.run(nn_job(scenario, data, target, Path(out)), noop_report)
        total = time.perf_counter() - started
    assert outcome["status"] == 200 and outcome["epochsRun"] == scenario.epochs, outcome
    return outcome["trainingSeconds"], total, outcome["rows"]["train"]


def measure_plain(scenario: Scenario, data: Path, target: str) -> tuple[float, float, int]:
    """The hand-written version: what one would type without nn.py."""
    import keras
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    frame = pd.read_csv(data)
    x = frame.drop(columns=[target]).to_numpy("float32")
    y = frame[target].to_numpy("float32")
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=SEED)
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input(shape=(x.shape[1],))])
    for modifier in scenario.width_modifiers:
        model.add(keras.layers.Dense(max(1, round(modifier * x.shape[1])), activation="relu"))
        model.add(keras.layers.Dropout(0.2))
    model.add(keras.layers.Dense(1))
    model.compile(optimizer=keras.optimizers.RMSprop(0.001), loss="mse")
    fit_started = time.perf_counter()
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=scenario.epochs,
              batch_size=scenario.batch_size, verbose=0)
    fit_seconds = time.perf_counter() - fit_started
    return fit_seconds, time.perf_counter() - started, len(x_train)


def best(runs: list[tuple[float, float, int]], epochs: int) -> Measurement:
    """Fastest run's throughput: background load only ever slows a run down."""
    fit, total, rows = min(runs, key=lambda run: run[0])
    fastest_total = min(run[1] for run in runs)
    return Measurement(rows * epochs / fit, rows * epochs / fastest_total, fit)


def warm_up() -> None:
    """Import TensorFlow and trace once so neither side pays the one-off start-up."""
    import keras

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(optimizer="rmsprop", loss="mse")
    model.fit(np.zeros((4, 2), "float32"), np.zeros(4, "float32"), epochs=1, verbose=0)


def run_scenario(scenario: Scenario, directory: Path) -> dict[str, Any]:
    """Alternate nn.py and plain runs, return both measurements and their ratio."""
    data, target = scenario_data(scenario, directory)
    nn_runs, plain_runs = [], []
    for _ in range(REPEATS):
        nn_runs.append(measure_nn(scenario, data, target))
        plain_runs.append(measure_plain(scenario, data, target))
    nn_best, plain_best = best(nn_runs, scenario.epochs), best(plain_runs, scenario.epochs)
    return {
        **asdict(scenario),
        "nn": asdict(nn_best),
        "plain": asdict(plain_best),
        "fitRatio": nn_best.fit_samples_per_s / plain_best.fit_samples_per_s,
        "endToEndRatio": nn_best.end_to_end_samples_per_s / plain_best.end_to_end_samples_per_s,
    }


def environment() -> dict[str, Any]:
    """Where the figures came from."""
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "cpus": os.cpu_count(),
            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU", "machine": platform.machine()}


def print_table(results: list[dict[str, Any]]) -> None:
    """Human-readable summary."""
    print(f"{'scenario':<16} {'nn.py samples/s':>16} {'plain samples/s':>16} {'fit ratio':>10} {'end-to-end':>11}")
    for item in results:
        print(f"{item['name']:<16} {item['nn']['fit_samples_per_s']:>16,.0f} "
              f"{item['plain']['fit_samples_per_s']:>16,.0f} {item['fitRatio']:>10.2f} {item['endToEndRatio']:>11.2f}")
    verdict = all(item["fitRatio"] >= TARGET_RATIO for item in results)
    print(f"target fit ratio >= {TARGET_RATIO}: {'met' if verdict else 'NOT met'}")


def main() -> int:
    """Run every scenario, print the table, save the JSON."""
    warm_up()
    with tempfile.TemporaryDirectory() as directory:
        results = [run_scenario(scenario, Path(directory)) for scenario in SCENARIOS]
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "nn_throughput", "targetRatio": TARGET_RATIO, "repeats": REPEATS,
              "environment": environment(), "scenarios": results,
              "targetMet": all(item["fitRatio"] >= TARGET_RATIO for item in results)}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
