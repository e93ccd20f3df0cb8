"""A small real training task for sweeps and their benchmark: scikit-learn's MLP on bundled data.

It trains ``MLPClassifier`` on scikit-learn's bundled handwritten digits (1,797 8x8 images, no
download) one epoch at a time and reports ``report(epoch=, loss=, val_loss=)`` after every epoch, so a
sweep's pruner (median, ASHA, Hyperband) can stop a hopeless trial after a few epochs. A trial takes
about a second, which makes grid vs random vs TPE vs TPE+ASHA comparable in minutes on two machines.

Outcome: ``loss`` is the best validation log-loss over the epochs (as early stopping would keep),
``metric`` the validation accuracy at that epoch, ``cpuSeconds`` the processor time training took (also in
every report, so a pruned trial's Outcome has it too: benchmarks on a busy machine compare work done).

Job fields (defaults in brackets): ``hiddenLayers`` [[{units: 64}]], ``activation`` [relu]
(relu | tanh | logistic), ``learningRate`` [0.001], ``l2`` [1e-4], ``batchSize`` [64], ``epochs`` [30],
``validationShare`` [0.25], ``seed`` [0]. Unknown fields are refused at submit time (its ``Params``
model forbids them), so a misspelt hyperparameter in a sweep file is caught before anything runs.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BOOKKEEPING = {"jobId", "trialNumber", "requeuedFrom", "createdDate", "dataPath", "writePath",
               "checkpointDir", "resumeFrom", "resumeEpoch"}  # given by the worker (checkpoints.prepare)


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    units: int = Field(ge=1, le=4096)


class Params(BaseModel):
    """The hyperparameters this script takes; anything else in a Job is refused."""

    model_config = ConfigDict(extra="forbid")

    hiddenLayers: list[Layer] = Field(default_factory=lambda: [Layer(units=64)], min_length=1, max_length=8)
    activation: Literal["relu", "tanh", "logistic"] = "relu"
    learningRate: float = Field(default=1e-3, gt=0, le=1)
    l2: float = Field(default=1e-4, ge=0, le=10)
    batchSize: int = Field(default=64, ge=1, le=4096)
    epochs: int = Field(default=30, ge=1, le=1000)
    validationShare: float = Field(default=0.25, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _drop_mlqueue_fields(cls, data: Any) -> Any:
        """mlqueue's own Job fields (scriptName, sweepId, ...) are not hyperparameters: let them through."""
        if not isinstance(data, dict):
            return data
        from mlqueue.jobs import JobSpec

        ours = set(JobSpec.model_fields) | BOOKKEEPING
        return {k: v for k, v in data.items() if k not in ours}


def run(job: dict[str, Any], report: Any) -> dict[str, Any]:
    import warnings

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    params = Params.model_validate(job)
    cpu_start = time.process_time()
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=params.validationShare,
                                                      random_state=params.seed, stratify=y)
    model = MLPClassifier(hidden_layer_sizes=tuple(layer.units for layer in params.hiddenLayers),
                          activation=params.activation, learning_rate_init=params.learningRate, alpha=params.l2,
                          batch_size=min(params.batchSize, len(x_train)), random_state=params.seed)
    classes = np.unique(y)
    best = (float("inf"), 0.0, 0)
    for epoch in range(1, params.epochs + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.partial_fit(x_train, y_train, classes=classes)
        probabilities = model.predict_proba(x_val)
        val_loss = float(log_loss(y_val, probabilities, labels=classes))
        if val_loss < best[0]:
            best = (val_loss, float(accuracy_score(y_val, classes[probabilities.argmax(axis=1)])), epoch)
        report(epoch=epoch, loss=float(model.loss_), val_loss=val_loss,
               cpuSeconds=round(time.process_time() - cpu_start, 4))
    return {"status": 200, "loss": best[0], "metric": best[1], "bestEpoch": best[2], "epochsRun": params.epochs,
            "cpuSeconds": round(time.process_time() - cpu_start, 4)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}, lambda **_: None)))
