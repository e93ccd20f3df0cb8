"""A toy training script: fast, deterministic where it matters, and able to fail on demand.

Its ``loss`` is a noisy bowl over the Job's numeric hyperparameters: each numeric field ``k`` adds
``(value - optimum(k))**2`` where ``optimum(k)`` is a fixed number between -5 and 5 derived from the
field's name (so sweeps have a real minimum to find), plus Gaussian noise of size ``noise``.
``metric`` is ``1 / (1 + loss)`` (higher is better).

Control fields (not hyperparameters) reproduce every failure path by hand:
  ``epochs``        report ``epoch``/``loss`` that many times (for live curves and pruning)
  ``sleepSeconds``  total time to spend (spread over the epochs), times ``TOY_SLOWDOWN`` (an environment
                    variable of the worker, default 1: a benchmark's way to make one machine 2x or 4x slower)
  ``raiseError``    raise RuntimeError with this message
  ``crashWorker``   kill the worker process abruptly (SIGKILL, as a segfault would)
  ``printLines``    print that many lines (to see a Job's log)
  ``writeArtifact`` save the "model" (its hyperparameters) as an artifact file
  ``checkpointEvery`` save a checkpoint every that many epochs; a resumed attempt (``resumeFrom``)
                    continues after the checkpoint's epoch (``startEpoch`` in the Outcome says where)
With a ``dataFileName`` it counts the dataset's lines (``dataRows``), proving the data arrived.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SLOWDOWN = float(os.environ.get("TOY_SLOWDOWN") or 1.0)
CONTROL = {"epochs", "sleepSeconds", "raiseError", "crashWorker", "noise", "seed", "timeLimit", "maxAttempts",
           "printLines", "writeArtifact", "trialNumber", "checkpointEvery", "resumeEpoch"}


class Params(BaseModel):
    """Checked at submit time: wrong types here are refused before anything is queued."""

    model_config = ConfigDict(extra="allow")

    epochs: int = Field(default=0, ge=0, le=100000)
    sleepSeconds: float = Field(default=0.0, ge=0)
    raiseError: str | None = None
    crashWorker: bool = False
    noise: float = Field(default=0.01, ge=0)
    seed: int | None = None
    printLines: int = Field(default=0, ge=0)
    writeArtifact: bool = False
    checkpointEvery: int = Field(default=0, ge=0)


def optimum(name: str) -> float:
    """Where the bowl bottoms out for one hyperparameter: a stable number in [-5, 5]."""
    digest = hashlib.sha256(name.encode()).digest()
    return round(int.from_bytes(digest[:4], "big") / 2**32 * 10 - 5, 3)


def true_loss(job: dict[str, Any]) -> float:
    """The noise-free loss of a Job (what a perfect search would minimise)."""
    numeric = {k: v for k, v in job.items()
               if k not in CONTROL and isinstance(v, int | float) and not isinstance(v, bool)}
    return float(sum((v - optimum(k)) ** 2 for k, v in numeric.items()))


def run(job: dict[str, Any], report: Any) -> dict[str, Any]:
    params = Params.model_validate(job)
    rng = random.Random(params.seed if params.seed is not None else job.get("jobId"))
    if params.crashWorker:
        os.kill(os.getpid(), signal.SIGKILL)
    final = true_loss(job) + abs(rng.gauss(0, params.noise))
    steps = max(params.epochs, 1)
    start = _resume_epoch(job) + 1
    for epoch in range(start, params.epochs + 1):
        time.sleep(params.sleepSeconds * SLOWDOWN / steps)
        if params.checkpointEvery and epoch % params.checkpointEvery == 0 and job.get("checkpointDir"):
            report(epoch=epoch, loss=final + 10.0 / epoch, checkpoint=_save(job["checkpointDir"], epoch))
        else:
            report(epoch=epoch, loss=final + 10.0 / epoch)
    if not params.epochs and params.sleepSeconds:
        time.sleep(params.sleepSeconds * SLOWDOWN)
    for line in range(params.printLines):
        print(f"toy line {line + 1} of {params.printLines}", flush=True)
    if params.raiseError:
        raise RuntimeError(params.raiseError)
    outcome = {"status": 200, "loss": final, "metric": 1.0 / (1.0 + final), "epochsRun": params.epochs,
               "startEpoch": start}
    if job.get("dataPath"):
        with open(job["dataPath"], "rb") as fh:
            outcome["dataRows"] = sum(1 for _ in fh)
    if params.writeArtifact and job.get("writePath"):
        path = os.path.join(job["writePath"], "toy_model.json")
        with open(path, "w") as fh:
            json.dump({k: v for k, v in job.items() if k not in ("dataPath", "writePath")}, fh)
        outcome["artifacts"] = [{"name": "toy_model.json", "path": path}]
    return outcome


def _save(folder: str, epoch: int) -> str:
    """The toy's whole training state is its epoch."""
    path = os.path.join(folder, "toy_state.json")
    with open(path, "w") as fh:
        json.dump({"epoch": epoch}, fh)
    return path


def _resume_epoch(job: dict[str, Any]) -> int:
    if not job.get("resumeFrom"):
        return 0
    with open(job["resumeFrom"]) as fh:
        return int(json.load(fh)["epoch"])


if __name__ == "__main__":
    import sys

    print(json.dumps(run(json.loads(sys.argv[1]), lambda **_: None)))
