"""Job validation at the edge: good Jobs pass unchanged, bad ones get errors that name field and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlqueue import jobs

SEEDS_SAMPLE = {
    "hiddenLayers": [{"activation": "relu", "widthModifier": 4, "dropout": 0.2},
                     {"activation": "relu", "widthModifier": 2.3, "dropout": 0.2},
                     {"activation": "relu", "widthModifier": 1.3, "dropout": 0.2}],
    "dataFileName": "wine_data.csv", "scriptName": "nn.py", "projectName": "wine_data",
    "depedentVariable": "con_lot", "crossValidateOnly": True, "crossValidationCrossingType": "neg_mean_squared_error",
    "batchSize": 100000, "epochs": 3000, "patienceRate": 0.05, "slowLearningRate": 0.01, "loss": "mse",
    "pcaComponents": -1, "extraTreesKeepThreshd": 0, "saveWeightsOnlyAtEnd": False, "optimizer": "rmsprop",
    "lastLayerActivator": "", "learningRate": 0.05, "l1": 0.1, "l2": 0.1, "minDependentVarValue": 0,
    "maxDependentVarValue": 1500, "scalerType": "standard",
}


def test_seeds_sample_job_is_accepted_unchanged() -> None:
    assert jobs.validate(SEEDS_SAMPLE) == SEEDS_SAMPLE


def test_unknown_script_names_the_field_and_lists_the_scripts() -> None:
    with pytest.raises(jobs.JobError) as err:
        jobs.validate({"scriptName": "nope.py"}, "a.json")
    message = str(err.value)
    assert "a.json" in message and "scriptName" in message and "toy" in message


@pytest.mark.parametrize("doc, field", [
    ({}, "scriptName"),
    ({"scriptName": "toy", "timeLimit": "soon"}, "timeLimit"),
    ({"scriptName": "toy", "maxAttempts": 0}, "maxAttempts"),
    ({"scriptName": "toy", "sleepSeconds": "abc"}, "sleepSeconds"),
    ({"scriptName": "toy", "crashWorker": "perhaps"}, "crashWorker"),
    ({"scriptName": "../etc/passwd"}, "scriptName"),
    ({"scriptName": "toy", "scriptMode": "thread"}, "scriptMode"),
])
def test_wrong_fields_are_refused_naming_the_field(doc: dict, field: str) -> None:
    with pytest.raises(jobs.JobError) as err:
        jobs.validate(doc, "job.json")
    assert f"'{field}'" in str(err.value)


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "scriptName": "toy",\n  "x": 1,,\n}')
    with pytest.raises(jobs.JobError) as err:
        jobs.collect([str(bad)])
    assert "bad.json" in str(err.value) and "line 3" in str(err.value)


def test_collect_reads_files_lists_directories_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"scriptName": "toy", "x": 1}))
    (tmp_path / "b.json").write_text(json.dumps([{"scriptName": "toy", "x": 2}, {"scriptName": "toy", "x": 3}]))
    found = jobs.collect([str(tmp_path), "-"], stdin_text='{"scriptName": "toy", "x": 4}')
    assert [doc["x"] for _, doc in found] == [1, 2, 3, 4]
    assert found[1][0].endswith("b.json[0]")


def test_one_bad_job_refuses_the_whole_batch_listing_every_problem() -> None:
    items = [("a", {"scriptName": "toy"}), ("b", {"scriptName": "toy", "timeLimit": -1}), ("c", [])]
    with pytest.raises(jobs.JobError) as err:
        jobs.validate_all(items)
    assert "b:" in str(err.value) and "c:" in str(err.value) and "a:" not in str(err.value)
