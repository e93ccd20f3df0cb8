"""ml_scripts/nn.py: each hyperparameter has a visible effect, bad ones are refused before training.

Trainings are tiny (100 rows, 2-6 epochs) so the whole file runs in well under a minute once
TensorFlow is imported.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml_scripts import nn  # noqa: E402
from ml_scripts._common import noop_report  # noqa: E402
from ml_scripts.demo_data import write_demo_data  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FEATURES = 6
# Raised inside Keras' own fit loop under numpy 2; not something these scripts can change.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


class Pruned(Exception):
    """Stands in for the worker's pruning exception."""


def make_regression_csv(path: Path, rows: int = 100, seed: int = 0) -> Path:
    """y depends on f0 and f1 only; f2..f5 are noise (so ExtraTrees has something to drop)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, FEATURES))
    features[:, 3] *= 1000.0  # one wide column, so scalers visibly matter
    target = 50 + 30 * features[:, 0] - 20 * features[:, 1] + rng.normal(scale=2.0, size=rows)
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(FEATURES)]).assign(y=target)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return make_regression_csv(tmp_path / "data.csv")


@pytest.fixture
def job(csv_path: Path, tmp_path: Path) -> dict[str, Any]:
    """A small valid job: 3 epochs, patience larger than the run, one hidden layer."""
    out = tmp_path / "out"
    out.mkdir()
    return {
        "scriptName": "nn.py",
        "projectName": "test",
        "dataPath": str(csv_path),
        "writePath": str(out),
        "depedentVariable": "y",
        "hiddenLayers": [{"activation": "relu", "widthModifier": 2, "dropout": 0.0}],
        "optimizer": "adam",
        "learningRate": 0.01,
        "loss": "mse",
        "batchSize": 32,
        "epochs": 3,
        "patienceRate": 1.0,
        "scalerType": "standard",
    }


class Recorder:
    """A report() that remembers every call and can raise at a chosen epoch."""

    def __init__(self, raise_at: int | None = None, watch: Path | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.raise_at = raise_at
        self.watch = watch
        self.file_seen: list[bool] = []

    def __call__(self, **metrics: Any) -> None:
        self.calls.append(metrics)
        if self.watch is not None:
            self.file_seen.append(self.watch.exists())
        if self.raise_at is not None and metrics.get("epoch") == self.raise_at:
            raise Pruned(f"pruned at epoch {self.raise_at}")


def ok(outcome: dict[str, Any]) -> dict[str, Any]:
    assert outcome["status"] == 200, outcome
    return outcome


# ------------------------------------------------------------------ architecture & features


def test_layer_widths_follow_width_modifier_and_set_parameter_count(job: dict[str, Any]) -> None:
    job["hiddenLayers"] = [{"activation": "relu", "widthModifier": 2, "dropout": 0.1},
                           {"activation": "tanh", "widthModifier": 0.5, "dropout": 0.0},
                           {"activation": "elu", "widthModifier": 0.01, "dropout": 0.0}]
    outcome = ok(nn.run(job, noop_report))
    assert outcome["layerWidths"] == [12, 3, 1]  # 2x6, 0.5x6, and never below one unit
    # Dense(6->12) + Dense(12->3) + Dense(3->1) + output Dense(1->1)
    assert outcome["parameterCount"] == (6 * 12 + 12) + (12 * 3 + 3) + (3 * 1 + 1) + (1 * 1 + 1)


def test_width_rounding_is_half_up(tmp_path: Path) -> None:
    cfg = nn.parse_config({"dataPath": str(make_regression_csv(tmp_path / "d.csv")), "depedentVariable": "y",
                           "crossValidateOnly": True,
                           "hiddenLayers": [{"activation": "relu", "widthModifier": 1.25, "dropout": 0}]})
    assert nn.layer_widths(cfg, 2) == [3]  # 2.5 rounds up, not to even
    assert nn.layer_widths(cfg, 6) == [8]  # 7.5 -> 8


def test_pca_sets_network_input_dimension(job: dict[str, Any]) -> None:
    job["pcaComponents"] = 3
    outcome = ok(nn.run(job, noop_report))
    assert outcome["featureCounts"] == {"input": 6, "afterExtraTrees": 6, "afterPca": 3}
    assert outcome["layerWidths"] == [6]  # widthModifier 2 x 3 components


def test_extra_trees_keeps_only_informative_features(job: dict[str, Any]) -> None:
    job["extraTreesKeepThreshd"] = 0.1
    outcome = ok(nn.run(job, noop_report))
    counts = outcome["featureCounts"]
    assert counts["input"] == 6
    assert 2 <= counts["afterExtraTrees"] < 6
    assert {"f0", "f1"} <= set(outcome["keptFeatures"])
    assert outcome["layerWidths"] == [2 * counts["afterExtraTrees"]]


def test_extra_trees_threshold_too_high_is_refused(job: dict[str, Any]) -> None:
    job["extraTreesKeepThreshd"] = 0.99
    outcome = nn.run(job, noop_report)
    assert outcome["status"] == 400 and outcome["field"] == "extraTreesKeepThreshd"


@pytest.mark.parametrize(
    ("scaler", "check"),
    [
        ("standard", lambda x, raw: np.allclose(x.mean(0), 0, atol=1e-5) and np.allclose(x.std(0), 1, atol=1e-3)),
        ("minmax", lambda x, raw: np.allclose(x.min(0), 0) and np.allclose(x.max(0), 1)),
        ("robust", lambda x, raw: np.allclose(np.median(x, 0), 0, atol=1e-5)),
        ("none", lambda x, raw: np.allclose(x, raw)),
    ],
)
def test_scaler_types_transform_training_features(job: dict[str, Any], scaler: str, check: Any) -> None:
    job["scalerType"] = scaler
    cfg = nn.parse_config(job)
    data = nn.load_dataset(cfg)
    split = nn.holdout_split(cfg, data.target)
    prepared = nn.preprocess(cfg, data, split)
    assert check(prepared.fit_x, data.features[split.fit])


def test_scaler_choice_changes_training_result(job: dict[str, Any]) -> None:
    losses = {}
    for scaler in ("standard", "none"):
        losses[scaler] = ok(nn.run({**job, "scalerType": scaler}, noop_report))["loss"]
    # f3 spans thousands: unscaled it dominates the first updates, so the runs must differ.
    assert not math.isclose(losses["standard"], losses["none"], rel_tol=1e-4)


# ------------------------------------------------------------------------- training control


def test_early_stopping_stops_before_epochs_on_a_plateau(job: dict[str, Any]) -> None:
    # A learning rate this small cannot move float32 weights: val_loss is flat from epoch 1.
    job.update(learningRate=1e-12, epochs=60, patienceRate=0.05)  # patience = 3 epochs
    outcome = ok(nn.run(job, noop_report))
    assert outcome["stoppedEarly"] is True
    assert 4 <= outcome["epochsRun"] < 60
    assert outcome["loss"] == pytest.approx(min(outcome["history"]["val_loss"]), rel=1e-4)


def test_best_weights_are_restored_after_training(job: dict[str, Any]) -> None:
    # A large step size makes val_loss bounce, so the last epoch is not the best one.
    job.update(learningRate=0.3, epochs=15, batchSize=16,
               hiddenLayers=[{"activation": "relu", "widthModifier": 4, "dropout": 0}])
    outcome = ok(nn.run(job, noop_report))
    val_losses = outcome["history"]["val_loss"]
    assert outcome["bestEpoch"] == int(np.argmin(val_losses)) + 1 < outcome["epochsRun"]
    assert outcome["loss"] == pytest.approx(min(val_losses), rel=1e-4) and outcome["loss"] < val_losses[-1]
    assert outcome["valMse"] == pytest.approx(outcome["loss"], rel=1e-4)  # no regularisation in this job


def test_without_plateau_patience_lets_all_epochs_run(job: dict[str, Any]) -> None:
    job.update(learningRate=1e-12, epochs=6, patienceRate=1.0)
    outcome = ok(nn.run(job, noop_report))
    assert outcome["epochsRun"] == 6 and outcome["stoppedEarly"] is False


def test_slow_learning_rate_halves_the_rate_on_a_plateau(job: dict[str, Any]) -> None:
    # Flat val_loss (see above); lr patience = round(0.05 x 40) = 2 epochs, factor 0.5.
    job.update(learningRate=1e-12, epochs=40, patienceRate=0.25, slowLearningRate=0.05)
    outcome = ok(nn.run(job, noop_report))
    rates = outcome["history"]["learning_rate"]
    assert rates[:3] == pytest.approx([1e-12] * 3)
    assert rates[3] == pytest.approx(1e-12 * nn.LR_FACTOR)
    distinct = sorted(set(rates), reverse=True)
    assert len(distinct) >= 3
    assert all(low / high == pytest.approx(nn.LR_FACTOR) for high, low in zip(distinct, distinct[1:], strict=False))


def test_report_called_once_per_epoch(job: dict[str, Any]) -> None:
    job["epochs"] = 4
    recorder = Recorder()
    outcome = ok(nn.run(job, recorder))
    assert [call["epoch"] for call in recorder.calls] == [1, 2, 3, 4]
    assert outcome["epochsRun"] == 4
    for call in recorder.calls:
        assert set(call) == {"epoch", "loss", "val_loss"}
        assert isinstance(call["loss"], float) and isinstance(call["val_loss"], float)


def test_exception_from_report_stops_training(job: dict[str, Any]) -> None:
    job["epochs"] = 50
    recorder = Recorder(raise_at=2)
    with pytest.raises(Pruned):
        nn.run(job, recorder)
    assert len(recorder.calls) == 2


@pytest.mark.parametrize("at_end", [False, True])
def test_weights_artifact_saved(job: dict[str, Any], at_end: bool) -> None:
    import keras

    job["saveWeightsOnlyAtEnd"] = at_end
    weights = Path(job["writePath"]) / nn.WEIGHTS_FILE
    recorder = Recorder(watch=weights)
    outcome = ok(nn.run(job, recorder))
    names = {item["name"]: Path(item["path"]) for item in outcome["artifacts"]}
    assert names[nn.WEIGHTS_FILE] == weights and weights.stat().st_size > 0
    # Checkpointing writes during training (seen from epoch 2 on); at-end writes only after fit.
    assert recorder.file_seen == ([False, True, True] if not at_end else [False, False, False])
    model = keras.models.model_from_json(names[nn.ARCHITECTURE_FILE].read_text())
    model.load_weights(weights)
    assert model.count_params() == outcome["parameterCount"]


# -------------------------------------------------------------------------- cross-validation


def test_cross_validation_returns_per_fold_scores_with_sign(job: dict[str, Any]) -> None:
    job.update(crossValidateOnly=True, cvFolds=3, crossValidationCrossingType="neg_mean_absolute_error")
    recorder = Recorder()
    outcome = ok(nn.run(job, recorder))
    assert outcome["crossValidated"] is True
    assert len(outcome["foldScores"]) == 3 and all(score < 0 for score in outcome["foldScores"])
    assert outcome["metric"] == pytest.approx(np.mean(outcome["foldScores"]))
    assert outcome["metricName"] == "neg_mean_absolute_error"
    assert -outcome["metric"] == pytest.approx(outcome["valMae"], rel=0.05)
    assert "artifacts" not in outcome
    assert [call["fold"] for call in recorder.calls] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [call["epoch"] for call in recorder.calls] == [1, 2, 3] * 3
    assert [call["step"] for call in recorder.calls] == list(range(1, 10))
    assert len(outcome["predictions"]["actual"]) == 100  # out-of-fold: every row once


def test_cross_validation_without_write_path(job: dict[str, Any]) -> None:
    job.update(crossValidateOnly=True, cvFolds=2, crossValidationCrossingType="r2", epochs=2)
    del job["writePath"]
    outcome = ok(nn.run(job, noop_report))
    assert outcome["metricName"] == "r2" and len(outcome["foldScores"]) == 2


def test_binary_classification_with_accuracy_scoring(tmp_path: Path, job: dict[str, Any]) -> None:
    frame = pd.read_csv(job["dataPath"])
    frame["y"] = (frame["y"] > frame["y"].median()).astype(int)
    frame.to_csv(tmp_path / "binary.csv", index=False)
    job.update(dataPath=str(tmp_path / "binary.csv"), loss="binary_crossentropy", lastLayerActivator="sigmoid",
               crossValidationCrossingType="accuracy")
    outcome = ok(nn.run(job, noop_report))
    assert 0.0 <= outcome["metric"] <= 1.0 and outcome["metric"] == pytest.approx(outcome["valAccuracy"])


# ------------------------------------------------------------------------------- validation


BAD_JOBS = [
    ("hiddenLayers[0].activation", {"hiddenLayers": [{"activation": "relux", "widthModifier": 1, "dropout": 0}]}),
    ("hiddenLayers[1].widthModifier", {"hiddenLayers": [{"activation": "relu", "widthModifier": 1, "dropout": 0},
                                                        {"activation": "relu", "widthModifier": 0, "dropout": 0}]}),
    ("hiddenLayers[0].widthModifier", {"hiddenLayers": [{"activation": "relu", "widthModifier": -2, "dropout": 0}]}),
    ("hiddenLayers[0].dropout", {"hiddenLayers": [{"activation": "relu", "widthModifier": 1, "dropout": 1.0}]}),
    ("hiddenLayers[0].dropout", {"hiddenLayers": [{"activation": "relu", "widthModifier": 1, "dropout": -0.1}]}),
    ("optimizer", {"optimizer": "adamm"}),
    ("scalerType", {"scalerType": "zscore"}),
    ("loss", {"loss": "mean_squared_errr"}),
    ("lastLayerActivator", {"lastLayerActivator": "softmaxx"}),
    ("depedentVariable", {"depedentVariable": "not_a_column"}),
    ("dependentVariable", {"dependentVariable": "nope"}),
    ("pcaComponents", {"pcaComponents": 7}),
    ("pcaComponents", {"pcaComponents": 0}),
    ("dataPath", {"dataPath": None}),
    ("dataPath", {"dataPath": "/nonexistent/data.csv"}),
    ("writePath", {"writePath": "/nonexistent/out"}),
    ("learningRate", {"learningRate": 0}),
    ("epochs", {"epochs": 2.5}),
    ("batchSize", {"batchSize": "big"}),
    ("crossValidationCrossingType", {"crossValidationCrossingType": "neg_mean_squared_errorz"}),
    ("crossValidationCrossingType", {"crossValidationCrossingType": "accuracy"}),  # regression target
    ("minDependentVarValue", {"minDependentVarValue": 10, "maxDependentVarValue": 5}),
    ("saveWeightsOnlyAtEnd", {"saveWeightsOnlyAtEnd": "sometimes"}),
]


@pytest.mark.parametrize(("field", "change"), BAD_JOBS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_JOBS)])
def test_bad_hyperparameter_is_refused_before_training(
    job: dict[str, Any], field: str, change: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("training started for a bad job")

    monkeypatch.setattr(nn, "train_split", no_training)
    monkeypatch.setattr(nn, "preprocess", no_training)
    job.update(change)
    outcome = nn.run(job, Recorder(raise_at=1))
    assert outcome["status"] == 400, outcome
    assert outcome["field"] == field
    assert len(outcome["message"]) > 20
    assert nn.validate_job(job) == outcome


def test_hyperparameters_can_be_checked_before_data_exists() -> None:
    job = {"depedentVariable": "y", "optimizer": "adam", "pcaComponents": None}
    assert nn.validate_job(job, check_data=False) is None
    assert nn.validate_job(job)["field"] == "dataPath"
    assert nn.validate_job({**job, "optimizer": "nope"}, check_data=False)["field"] == "optimizer"


def test_text_feature_column_points_to_encode(job: dict[str, Any], tmp_path: Path) -> None:
    frame = pd.read_csv(job["dataPath"]).assign(colour=["red", "blue"] * 50)
    frame.to_csv(tmp_path / "text.csv", index=False)
    job["dataPath"] = str(tmp_path / "text.csv")
    outcome = nn.run(job, noop_report)
    assert outcome["status"] == 400 and outcome["field"] == "dataPath" and "encode.py" in outcome["message"]


def test_target_range_drops_rows(job: dict[str, Any]) -> None:
    target = pd.read_csv(job["dataPath"])["y"]
    low, high = float(target.quantile(0.1)), float(target.quantile(0.9))
    job.update(minDependentVarValue=low, maxDependentVarValue=high, epochs=2)
    outcome = ok(nn.run(job, noop_report))
    expected_out = int(((target < low) | (target > high)).sum())
    assert outcome["rows"]["outOfRange"] == expected_out > 0
    assert outcome["rows"]["used"] == 100 - expected_out
    assert min(outcome["predictions"]["actual"]) >= low - 1e-3


# ---------------------------------------------------------------------- outcome & repeatability


def test_outcome_is_plain_json_with_provenance(job: dict[str, Any]) -> None:
    outcome = ok(nn.run(job, noop_report))
    json.dumps(outcome, allow_nan=False)
    for key in ("loss", "metric", "valMse", "valMae", "valR2", "trainingSeconds"):
        assert type(outcome[key]) is float, key
    for key in ("epochsRun", "parameterCount", "seed", "bestEpoch"):
        assert type(outcome[key]) is int, key
    assert outcome["device"] in ("CPU", "GPU")
    assert set(outcome["versions"]) >= {"python", "tensorflow", "sklearn", "numpy", "pandas"}
    assert len(outcome["predictions"]["actual"]) == len(outcome["predictions"]["predicted"]) == 20
    assert outcome["rows"] == {"loaded": 100, "outOfRange": 0, "incomplete": 0, "used": 100,
                               "train": 80, "validation": 20}
    assert outcome["metric"] == pytest.approx(-outcome["valMse"], rel=1e-4)


def test_predictions_are_capped(tmp_path: Path, job: dict[str, Any]) -> None:
    job.update(dataPath=str(make_regression_csv(tmp_path / "big.csv", rows=2600)), crossValidateOnly=True,
               cvFolds=2, epochs=1, batchSize=4096)
    outcome = ok(nn.run(job, noop_report))
    assert len(outcome["predictions"]["actual"]) == nn.MAX_PREDICTIONS
    assert len(outcome["predictions"]["predicted"]) == nn.MAX_PREDICTIONS


def test_same_seed_same_result_other_seed_differs(job: dict[str, Any]) -> None:
    job["hiddenLayers"][0]["dropout"] = 0.3
    first = ok(nn.run(dict(job), noop_report))
    again = ok(nn.run(dict(job), noop_report))
    other = ok(nn.run({**job, "seed": 7}, noop_report))
    assert first["predictions"] == again["predictions"] and first["loss"] == again["loss"]
    assert other["seed"] == 7 and other["predictions"] != first["predictions"]


def test_seed_sample_job_runs_on_demo_data(tmp_path: Path) -> None:
    write_demo_data(tmp_path)
    job = json.loads((REPO / "tasks" / "nn_job.json").read_text())
    assert job["epochs"] == 3000 and job["crossValidateOnly"] is True
    job.update(dataPath=str(tmp_path / "wine_data.csv"), epochs=20)
    outcome = ok(nn.run(job, noop_report))
    assert len(outcome["foldScores"]) == 5 and outcome["metric"] < 0
    assert outcome["rows"]["outOfRange"] == 4  # four wines have proline > 1500
    assert outcome["featureCounts"]["input"] == 12
    assert outcome["layerWidths"] == [48, 28, 16]


def test_import_does_not_load_tensorflow() -> None:
    code = "import sys, ml_scripts.nn; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------------------- CLI


def run_cli(*args: str, cwd: Path) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "ml_scripts" / "nn.py"), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=240)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    return result.returncode, json.loads(lines[-1])


def test_cli_prints_outcome_json_on_last_line(job: dict[str, Any], tmp_path: Path) -> None:
    cli_job = {key: value for key, value in job.items() if key not in ("dataPath", "writePath")}
    cli_job.update(dataFileName="data.csv", epochs=2)
    code, outcome = run_cli(json.dumps(cli_job), cwd=tmp_path)
    assert code == 0 and outcome["status"] == 200 and outcome["epochsRun"] == 2
    assert Path(outcome["artifacts"][0]["path"]).parent == tmp_path / "nn_output"


def test_cli_bad_job_prints_400_and_exits_zero(tmp_path: Path) -> None:
    code, outcome = run_cli(json.dumps({"dataFileName": "missing.csv", "depedentVariable": "y"}), cwd=tmp_path)
    assert code == 0 and outcome["status"] == 400 and outcome["field"] == "dataPath"


def test_a_bad_nn_job_is_refused_at_submit_naming_each_field_and_the_form_has_every_fields_meaning() -> None:
    from mlqueue import jobs

    bad = {"scriptName": "nn", "depedentVariable": "y", "optimizer": "Adamm", "learningRate": 0,
           "hiddenLayers": [{"activation": "relu", "widthModifier": 2, "dropout": 0.1},
                            {"activation": "relux", "widthModifier": 1, "dropuot": 0.2}],
           "crossValidationCrossingType": "neg_mean_squared_errorz"}
    with pytest.raises(jobs.JobError) as err:
        jobs.validate(bad)
    message = str(err.value)
    for field in ("optimizer", "learningRate", "hiddenLayers.1.activation", "hiddenLayers.1.dropuot",
                  "crossValidationCrossingType"):
        assert f"field '{field}'" in message, message
    assert "'adam'" in message and "greater than 0" in message and "unknown scikit-learn scoring" in message
    assert jobs.validate({"scriptName": "nn", "dependentVariable": "y", "optimizer": "RMSprop"})
    schema = nn.Params.model_json_schema()
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{name} has no description for the form"
    assert "relu" in schema["$defs"]["Layer"]["properties"]["activation"]["enum"]
    assert schema["properties"]["validationSplit"]["exclusiveMaximum"] == 1
