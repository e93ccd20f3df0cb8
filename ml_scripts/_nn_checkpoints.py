"""nn.py's checkpoints: the model's weights, the optimizer's state and the training callbacks' state,
so an interrupted Job continues with ``initial_epoch`` on whichever machine takes it next.

One ``.npz`` file per checkpoint (weights, optimizer variables, and a JSON ``state``: epoch, learning
rate, EarlyStopping and ReduceLROnPlateau counters and best values, EarlyStopping's best weights), given
to mlqueue with ``report(checkpoint=PATH, epoch=N)`` (mlqueue keeps the last one per Job). The next
attempt gets it back as the Job's ``resumeFrom``.

When: ``checkpointEveryEpochs`` N saves every N epochs; unset, a checkpoint follows
``MIN_INTERVAL_SECONDS`` of training, or ``ADAPTIVE_RATIO`` times what saving the previous one took if
that is longer — so checkpoints never cost more than ``1 / ADAPTIVE_RATIO`` of the training time, and
an interruption redoes at most about ``MIN_INTERVAL_SECONDS`` of it (see ``bench/checkpoint_overhead.py``);
0 never saves. Cross-validation runs (``crossValidateOnly``) are short and are not checkpointed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ADAPTIVE_RATIO = 40.0          # training seconds per checkpoint second: overhead ≤ 1/40 = 2.5%
MIN_INTERVAL_SECONDS = 30.0    # of training between two checkpoints (the work an interruption may redo)
FILE_NAME = "nn_checkpoint.npz"


class Plan:
    """Where and how often this Job checkpoints, and what it resumes from."""

    def __init__(self, folder: Path, every: int | None, resume_from: Path | None) -> None:
        self.folder, self.every, self.resume_from = folder, every, resume_from
        self.state: dict[str, Any] = {}
        self.arrays: dict[str, np.ndarray] = {}
        if resume_from is not None:
            with np.load(resume_from, allow_pickle=False) as data:
                self.arrays = {k: data[k] for k in data.files}
            self.state = json.loads(str(self.arrays.pop("state")))

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> Plan | None:
        """None when the Job runs without mlqueue's ``checkpointDir`` (command line) or opted out with 0."""
        every = job.get("checkpointEveryEpochs")
        if not job.get("checkpointDir") or every == 0:
            return None
        resume = Path(job["resumeFrom"]) if job.get("resumeFrom") else None
        return cls(Path(job["checkpointDir"]), int(every) if every else None, resume)

    @property
    def initial_epoch(self) -> int:
        return int(self.state.get("epoch", 0))

    def restore_model(self, model: Any) -> None:
        """Put the saved weights and optimizer state into a freshly built (compiled) model."""
        if not self.state:
            return
        model.set_weights([self.arrays[f"w{i}"] for i in range(self.state["weights"])])
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        for i, variable in enumerate(optimizer.variables[: self.state["optimizer"]]):
            variable.assign(self.arrays[f"o{i}"])
        optimizer.learning_rate = self.state["learningRate"]

    def callback(self, report: Any, controls: list[Any]) -> Any:
        """The Keras callback that saves checkpoints; it goes after ``controls`` (their state is saved)."""
        import keras

        plan = self

        class Checkpointing(keras.callbacks.Callback):
            def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
                plan.restore_controls(controls, self.model)
                self.last_end, self.cost = time.perf_counter(), None

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if not plan.due(epoch + 1, time.perf_counter() - self.last_end, self.cost):
                    return
                started = time.perf_counter()
                path = plan.save(self.model, epoch + 1, controls)
                report(checkpoint=str(path), epoch=epoch + 1)
                self.last_end = time.perf_counter()
                self.cost = self.last_end - started

        return Checkpointing()

    def due(self, epoch: int, trained_seconds: float, cost: float | None) -> bool:
        if self.every:
            return epoch % self.every == 0
        return trained_seconds >= max(MIN_INTERVAL_SECONDS, (cost or 0.0) * ADAPTIVE_RATIO)

    def save(self, model: Any, epoch: int, controls: list[Any]) -> Path:
        weights = model.get_weights()
        optimizer = [np.asarray(v) for v in model.optimizer.variables]
        state = {"epoch": epoch, "weights": len(weights), "optimizer": len(optimizer),
                 "learningRate": float(np.asarray(model.optimizer.learning_rate)),
                 "controls": [_control_state(c) for c in controls]}
        arrays = {f"w{i}": w for i, w in enumerate(weights)} | {f"o{i}": o for i, o in enumerate(optimizer)}
        for i, control in enumerate(controls):
            for j, w in enumerate(getattr(control, "best_weights", None) or []):
                arrays[f"b{i}_{j}"] = w
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / FILE_NAME
        tmp = path.with_suffix(".part.npz")
        np.savez(tmp, state=np.array(json.dumps(state)), **arrays)
        tmp.replace(path)
        return path

    def restore_controls(self, controls: list[Any], model: Any) -> None:
        """EarlyStopping / ReduceLROnPlateau continue counting where they were (after their own reset)."""
        for i, (control, saved) in enumerate(zip(controls, self.state.get("controls", []), strict=False)):
            for key, value in saved.items():
                setattr(control, key, value)
            best = sorted((k for k in self.arrays if k.startswith(f"b{i}_")), key=lambda k: int(k.split("_")[1]))
            if best and hasattr(control, "best_weights"):
                control.best_weights = [self.arrays[k] for k in best]


def _control_state(control: Any) -> dict[str, Any]:
    keys = ("wait", "best", "cooldown_counter", "best_epoch")
    return {k: float(getattr(control, k)) if k == "best" else int(getattr(control, k))
            for k in keys if isinstance(getattr(control, k, None), int | float | np.floating | np.integer)}
