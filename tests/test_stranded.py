"""A message taken by a worker that died before claiming its Job is found in the broker and sent again."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import LOST_AFTER, Farm, wait_for

from mlqueue import orders

TAKE_AND_DIE = """
import os, sys
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    message = conn.default_channel.basic_get(queue=sys.argv[2], no_ack=False)
    print(message.headers["id"], flush=True)
    os._exit(0)  # like a SIGKILL: no ack, no restore at shutdown
"""


def _submit_and_take(farm: Farm, program: str) -> tuple[str, str]:
    """One toy Job, its message taken from the queue by ``program`` in another process: (jobId, delivery)."""
    [job_id] = farm.submit({"scriptName": "toy"})
    taken = subprocess.run([sys.executable, "-c", program, farm.settings.broker_url, farm.settings.queue],
                           capture_output=True, text=True, timeout=60)
    assert taken.stdout.strip() == farm.order(job_id)["delivery"], taken.stderr
    return job_id, taken.stdout.strip()


def test_a_job_whose_message_died_with_its_consumer_is_queued_again_and_runs(farm: Farm) -> None:
    job_id, taken = _submit_and_take(farm, TAKE_AND_DIE)
    reaper = orders.Reaper("r", farm.settings)
    assert reaper.sweep()["stranded"] == 0  # not yet: a live consumer claims within moments
    time.sleep(LOST_AFTER + 0.5)
    assert reaper.sweep()["stranded"] == 1
    order = farm.order(job_id)
    assert order["state"] == "unassigned" and order["delivery"] != taken and order["enqueuedAt"]
    assert "never claimed it" in order["history"][-1]["why"]
    farm.start_worker("w1")
    assert farm.wait_final(job_id)["state"] == "succeeded"
    assert reaper.sweep()["stranded"] == 0
    wait_for(lambda: farm.order(job_id)["attempts"] == 1, timeout=5, what="one attempt only")


TAKE_UNTRACKED = """
import sys
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    message = conn.default_channel.basic_get(queue=sys.argv[2], no_ack=True)
    print(message.headers["id"], flush=True)   # popped and never recorded as unacked: gone from Redis
"""


def test_a_job_whose_message_vanished_from_the_broker_is_queued_again_and_runs_once(farm: Farm) -> None:
    """kombu pops a message, then records it as unacked: a worker killed in between leaves it nowhere."""
    job_id, taken = _submit_and_take(farm, TAKE_UNTRACKED)
    reaper = orders.Reaper("r", farm.settings)
    assert reaper.sweep()["vanished"] == 0  # sent too recently to judge: a worker may be claiming it
    time.sleep(LOST_AFTER + 0.5)
    counts = reaper.sweep()
    assert counts["vanished"] == 1 and counts["stranded"] == 0
    order = farm.order(job_id)
    assert order["state"] == "unassigned" and order["delivery"] != taken and order["enqueuedAt"]
    assert "in no queue" in order["history"][-1]["why"]
    farm.start_worker("w1")
    assert farm.wait_final(job_id)["state"] == "succeeded"
    assert farm.order(job_id)["attempts"] == 1


def test_a_job_still_waiting_in_its_queue_is_left_alone(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    delivery = farm.order(job_id)["delivery"]
    time.sleep(LOST_AFTER + 0.5)
    assert orders.Reaper("r", farm.settings).sweep()["vanished"] == 0
    assert farm.order(job_id)["delivery"] == delivery
