"""Work done after a Job's final move (mlqueue/deferred.py): the Outcome copy and the working directory."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from conftest import ROOT, Farm, wait_for

from mlqueue import orders

# A worker process that makes the final move, hands the Outcome copy to its background thread behind an
# action that never ends, and is killed (SIGKILL) before the copy can be written.
KILLED_BETWEEN_MOVE_AND_COPY = textwrap.dedent("""
    import os, signal, sys, threading
    from mlqueue import deferred, orders
    job_id = sys.argv[1]
    delivery = orders.get(job_id)["delivery"]
    running = orders.claim(job_id, delivery, "wK", start_with={"name": "toy"})
    blocked = threading.Event()
    deferred.later("an action that never ends", lambda: (blocked.set(), threading.Event().wait()))
    blocked.wait()
    assert orders.finish(running, orders.SUCCEEDED, {"status": 200, "loss": 4.0}, "done",
                         copy=deferred.copy_outcome)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_worker_killed_between_the_final_move_and_the_copy_leaves_it_to_the_reaper(farm: Farm) -> None:
    reaper = orders.Reaper("reaper@other", farm.settings, full_repair=False)  # as in every worker
    [job_id] = farm.submit({"scriptName": "toy"})
    done = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_MOVE_AND_COPY, job_id], cwd=ROOT, env=farm.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    order = farm.order(job_id)
    assert order["state"] == "succeeded" and order["outcome"]["loss"] == 4.0   # the acknowledged move stays
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 0            # the copy never came
    assert reaper.sweep()["repaired"] == 1
    assert [o["loss"] for o in farm.db.outcomes.find({"jobId": job_id})] == [4.0]


def test_a_worker_copies_the_outcome_and_removes_the_working_directory_after_the_job(farm: Farm) -> None:
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "toy", "printLines": 3})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded" and [ln["line"] for ln in order["log"]][-1] == "toy line 3 of 3"
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1
    wait_for(lambda: not (farm.home / "work" / f"{job_id}-1").exists(), what="the working directory removed")
