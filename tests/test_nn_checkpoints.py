"""nn.py checkpoints: an interrupted training resumes with its weights, optimizer and callbacks' state."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from test_nn import Recorder, make_regression_csv, ok

from ml_scripts import nn

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


class KeepCheckpoints(Recorder):
    """A report() that keeps a copy of every checkpoint, as mlqueue's store would keep the last one."""

    def __init__(self, folder: Path, raise_at: int | None = None) -> None:
        super().__init__(raise_at=raise_at)
        self.folder = folder
        self.saved: dict[int, Path] = {}

    def __call__(self, checkpoint: str | None = None, **metrics: Any) -> None:
        if checkpoint is not None:
            copy = self.folder / f"epoch{metrics['epoch']}.npz"
            shutil.copy(checkpoint, copy)
            self.saved[metrics["epoch"]] = copy
            return
        super().__call__(**metrics)


def _job(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    (tmp_path / name).mkdir()
    return {"scriptName": "nn", "projectName": "t", "dataPath": str(make_regression_csv(tmp_path / "data.csv")),
            "writePath": str(tmp_path / name), "checkpointDir": str(tmp_path / name / "ck"),
            "depedentVariable": "y", "hiddenLayers": [{"activation": "relu", "widthModifier": 2}],
            "optimizer": "adam", "learningRate": 0.01, "batchSize": 100, "epochs": 8, "patienceRate": 1.0,
            "slowLearningRate": 0.5, "scalerType": "standard", "checkpointEveryEpochs": 2, **extra}


def test_interrupted_training_resumes_where_its_checkpoint_left_off(tmp_path: Path) -> None:
    whole = KeepCheckpoints(tmp_path)
    ok(nn.run(_job(tmp_path, "whole"), whole))
    assert sorted(whole.saved) == [2, 4, 6, 8]

    first = KeepCheckpoints(tmp_path / "whole", raise_at=5)        # killed during epoch 5
    with pytest.raises(Exception, match="pruned at epoch 5"):
        nn.run(_job(tmp_path, "first"), first)
    resumed = KeepCheckpoints(tmp_path / "first")
    outcome = ok(nn.run(_job(tmp_path, "second", resumeFrom=str(first.saved[4])), resumed))
    assert [c["epoch"] for c in resumed.calls] == [5, 6, 7, 8]
    # full-batch training is deterministic: resumed epochs match the uninterrupted run's
    for got, want in zip(resumed.calls, whole.calls[4:], strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
    assert outcome["epochsRun"] == 4


def test_checkpoint_every_zero_never_saves_and_command_line_runs_have_none(tmp_path: Path) -> None:
    never = KeepCheckpoints(tmp_path)
    ok(nn.run(_job(tmp_path, "never", checkpointEveryEpochs=0), never))
    assert never.saved == {} and len(never.calls) == 8
