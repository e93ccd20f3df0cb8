"""The Job every chaos scenario runs: sleeps in steps, and records each execution in ``chaos_runs``.

The tally needs to know how often a Job really ran, not just what its Order says: every execution
inserts a row when it starts and marks it when its script returns, so a Job run twice (or run again
after it already had its Outcome) shows up as two rows. Fields: ``seconds`` (total sleep, default
0.5), ``steps`` (how many progress reports, default one per 0.25 s), ``silent`` (no reports:
a late result is only noticed when it is delivered), ``writeBytes`` (write that many
bytes into ``writePath`` first, to fill a disk).
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlqueue import store
from mlqueue.settings import get_settings

STEP = 0.25


def run(job: dict[str, Any], report: Any) -> dict[str, Any]:
    settings = get_settings()
    runs = store.db(settings)["chaos_runs"]
    row = {"jobId": job["jobId"], "host": socket.gethostname(), "pid": os.getpid(), "startedAt": datetime.now(UTC)}
    run_id = store.durable(lambda: runs.insert_one(row).inserted_id, "record chaos run", settings)
    if job.get("writeBytes"):
        (Path(job["writePath"]) / "filler.bin").write_bytes(b"\0" * int(job["writeBytes"]))
    seconds = float(job.get("seconds", 0.5))
    steps = int(job.get("steps") or max(1, round(seconds / STEP)))
    for step in range(steps):
        time.sleep(seconds / steps)
        if not job.get("silent"):
            report(step=step + 1, loss=1.0 / (step + 1))
        try:  # how far this execution got, for "work re-done" should it be killed now
            runs.update_one({"_id": run_id}, {"$set": {"lastAt": datetime.now(UTC)}})
        except store.TRANSIENT:
            pass
    store.durable(lambda: runs.update_one({"_id": run_id}, {"$set": {"endedAt": datetime.now(UTC)}}),
                  "record chaos run end", settings)
    return {"status": 200, "loss": 0.0, "metric": 1.0, "runId": str(run_id)}
