"""The Order state machine against a real MongoDB-protocol server and Redis (no worker processes)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import redis
from conftest import Farm
from pymongo import monitoring

from mlqueue import orders, store


def _queued_messages(farm: Farm) -> int:
    return redis.Redis.from_url(farm.settings.broker_url).llen(farm.settings.queue)


def _claim_and_start(farm: Farm, job_id: str, worker: str = "wA") -> dict:
    order = farm.order(job_id)
    claimed = orders.claim(job_id, order["delivery"], worker, farm.settings)
    return orders.start(claimed, {"name": "toy"}, farm.settings)


def test_submit_stores_job_as_given_with_an_unassigned_order_and_one_message(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy", "depedentVariable": "con_lot", "nested": {"a": [1, 2]}})
    job = farm.db.jobs.find_one()
    assert job["depedentVariable"] == "con_lot" and job["nested"] == {"a": [1, 2]} and job["createdDate"]
    order = farm.order(job_id)
    assert order["state"] == "unassigned" and order["attempts"] == 0 and order["enqueuedAt"]
    assert order["maxAttempts"] == 3 and order["timeLimit"] == farm.settings.default_time_limit
    assert _queued_messages(farm) == 1


def test_a_delivery_is_claimed_once_and_a_stale_delivery_never(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    delivery = farm.order(job_id)["delivery"]
    assert orders.claim(job_id, delivery, "wA", farm.settings)["attempts"] == 1
    assert orders.claim(job_id, delivery, "wB", farm.settings) is None
    assert orders.claim(job_id, "not-the-current-delivery", "wB", farm.settings) is None
    order = farm.order(job_id)
    assert order["worker"] == "wA" and order["attempts"] == 1
    assert sum("duplicate delivery" in e["why"] for e in order["history"]) == 2


def test_finish_twice_writes_one_outcome(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    running = _claim_and_start(farm, job_id)
    assert orders.finish(running, orders.SUCCEEDED, {"status": 200, "loss": 1.0}, "done", farm.settings)
    assert not orders.finish(running, orders.SUCCEEDED, {"status": 200, "loss": 0.5}, "again", farm.settings)
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1
    assert farm.db.outcomes.find_one({"jobId": job_id})["loss"] == 1.0


def test_late_result_from_a_worker_presumed_dead_is_discarded(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    old = _claim_and_start(farm, job_id, "wA")
    farm.db.orders.update_one({"jobId": job_id}, {"$set": {"heartbeatAt": orders.now() - timedelta(hours=1)}})
    reaper = orders.Reaper("test-reaper", farm.settings)
    reaper.watching_since -= farm.settings.lost_after
    assert reaper.sweep()["lost"] == 1
    requeued = farm.order(job_id)
    assert requeued["state"] == "unassigned" and requeued["delivery"] != old["delivery"]
    new = _claim_and_start(farm, job_id, "wB")
    assert orders.record_metrics(old, {"epoch": 9}, farm.settings) == "lost"
    assert not orders.heartbeat(old, farm.settings)
    assert not orders.finish(old, orders.SUCCEEDED, {"loss": 9.9}, "late", farm.settings)
    assert orders.finish(new, orders.SUCCEEDED, {"loss": 1.1}, "done", farm.settings)
    outcome = farm.db.outcomes.find_one({"jobId": job_id})
    assert outcome["loss"] == 1.1 and outcome["attempt"] == 2
    assert any("late result of attempt 1 discarded" in e["why"] for e in farm.order(job_id)["history"])


def test_reaper_waits_a_full_lost_after_before_judging_silence(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    _claim_and_start(farm, job_id)
    farm.db.orders.update_one({"jobId": job_id}, {"$set": {"heartbeatAt": orders.now() - timedelta(hours=1)}})
    assert orders.Reaper("just-started", farm.settings).sweep()["lost"] == 0
    assert farm.order(job_id)["state"] == "running"


def test_reaper_gives_up_at_max_attempts(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy", "maxAttempts": 1})
    _claim_and_start(farm, job_id)
    farm.db.orders.update_one({"jobId": job_id}, {"$set": {"heartbeatAt": orders.now() - timedelta(hours=1)}})
    reaper = orders.Reaper("r", farm.settings)
    reaper.watching_since -= farm.settings.lost_after
    reaper.sweep()
    order = farm.order(job_id)
    assert order["state"] == "failed" and order["outcome"]["reason"] == "lost"
    assert farm.db.outcomes.find_one({"jobId": job_id})["reason"] == "lost"


def test_redelivery_after_the_holding_process_died_counts_an_attempt(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    delivery = farm.order(job_id)["delivery"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orders.claim(job_id, delivery, "wA", farm.settings)
    farm.db.orders.update_one({"jobId": job_id}, {"$set": {"pid": int(dead.stdout)}})
    again = orders.claim(job_id, delivery, "wA", farm.settings)
    assert again["attempts"] == 2
    assert any("attempt 1 lost" in e["why"] for e in again["history"])


def test_reaper_resends_orders_whose_message_never_reached_the_broker(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    redis.Redis.from_url(farm.settings.broker_url).delete(farm.settings.queue)
    farm.db.orders.update_one({"jobId": job_id}, {"$set": {"enqueuedAt": None,
                                                         "updatedDate": orders.now() - timedelta(minutes=5)}})
    assert orders.Reaper("r", farm.settings).sweep()["resent"] == 1
    assert _queued_messages(farm) == 1


def test_a_batch_is_marked_sent_chunk_by_chunk_as_it_is_sent(farm: Farm) -> None:
    """A submitter killed midway must not leave every message it sent unmarked (the reapers would re-send
    them all): each ``IN_CHUNK`` of messages is marked right after it is sent, before the next is sent."""
    ids = orders.submit([{"scriptName": "toy"}] * (2 * store.IN_CHUNK + 10), settings=farm.settings)
    assert _queued_messages(farm) == len(ids)
    stamps = {o["jobId"]: o["enqueuedAt"] for o in farm.db.orders.find({}, {"jobId": 1, "enqueuedAt": 1})}
    chunks = [{stamps[j] for j in ids[start:start + store.IN_CHUNK]} for start in range(0, len(ids), store.IN_CHUNK)]
    assert [len(c) for c in chunks] == [1, 1, 1]                      # one mark per chunk...
    assert max(chunks[0]) < min(chunks[1]) and max(chunks[1]) < min(chunks[2])   # ...in the order they were sent


def test_reaper_repairs_an_outcome_that_was_not_copied(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    running = _claim_and_start(farm, job_id)
    orders.finish(running, orders.SUCCEEDED, {"loss": 2.0}, "done", farm.settings)
    farm.db.outcomes.delete_many({})
    assert orders.Reaper("r", farm.settings).sweep()["repaired"] == 1
    assert farm.db.outcomes.find_one({"jobId": job_id})["loss"] == 2.0


def test_a_workers_reaper_repairs_outcomes_of_orders_that_ended_since_its_last_sweep(farm: Farm) -> None:
    reaper = orders.Reaper("r", farm.settings, full_repair=False)
    assert reaper.sweep()["repaired"] == 0
    [job_id] = farm.submit({"scriptName": "toy"})
    orders.finish(_claim_and_start(farm, job_id), orders.SUCCEEDED, {"loss": 3.0}, "done", farm.settings)
    farm.db.outcomes.delete_many({})
    assert reaper.sweep()["repaired"] == 1 and farm.db.outcomes.count_documents({"jobId": job_id}) == 1
    assert reaper.sweep()["repaired"] == 0


def test_cancel_and_requeue(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy", "x": 1, "sweepId": "s1", "trialNumber": 4})
    cancelled = orders.cancel(job_id[:10], by="me", settings=farm.settings)
    assert cancelled["state"] == "cancelled" and cancelled["outcome"]["reason"] == "cancelled"
    try:
        orders.cancel(job_id, settings=farm.settings)
        raise AssertionError("cancelling twice must be refused")
    except orders.OrderError as exc:
        assert "already cancelled" in str(exc)
    new_id = orders.requeue(job_id, settings=farm.settings)
    assert new_id != job_id
    copy = farm.db.jobs.find_one({"requeuedFrom": job_id})
    assert copy["x"] == 1 and "sweepId" not in copy and "trialNumber" not in copy
    assert farm.order(new_id)["state"] == "unassigned"
    assert farm.db.outcomes.count_documents({"jobId": job_id}) == 1


class _OrderReads(monitoring.CommandListener):
    """Counts the ``find`` commands on ``orders`` this process sends (a real listener on the real client)."""

    def __init__(self) -> None:
        self.finds, self.on = 0, False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.command_name == "find" and event.command.get("find") == "orders":
            self.finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _as_sent(farm: Farm, job_id: str) -> dict:
    """The Order as submit puts it in the message (``orders.carry``), read back through the header's codec."""
    order = farm.order(job_id)
    header = orders.carry(None, order)[orders.CARRIED_ORDER]
    return orders.carried_order(header, job_id, order["delivery"])


def test_a_claim_from_the_order_its_message_carried_reads_nothing_and_records_both_steps(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    as_sent = _as_sent(farm, job_id)
    reads = _OrderReads()
    monitoring.register(reads)   # clients made from now on report to it
    store.forget_clients()
    reads.on = True
    running = orders.claim(job_id, as_sent["delivery"], "wA", farm.settings, start_with={"name": "toy"},
                           carried=as_sent)
    reads.on = False
    assert reads.finds == 0
    stored = farm.order(job_id)
    assert running["state"] == stored["state"] == "running" and running["attempts"] == stored["attempts"] == 1
    assert running["_id"] == stored["_id"] and abs(running["deadline"] - stored["deadline"]) < timedelta(milliseconds=1)
    assert [e["to"] for e in stored["history"]] == ["unassigned", "assigned", "running"]


def test_a_carried_claim_that_lost_the_race_reads_the_order_and_says_why(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    as_sent = _as_sent(farm, job_id)
    assert orders.claim(job_id, as_sent["delivery"], "wA", farm.settings, start_with={"name": "toy"})
    assert orders.claim(job_id, as_sent["delivery"], "wB", farm.settings, start_with={"name": "toy"},
                        carried=as_sent) is None
    order = farm.order(job_id)
    assert order["worker"] == "wA" and order["attempts"] == 1
    assert "duplicate delivery" in order["history"][-1]["why"] and "running" in order["history"][-1]["why"]


def test_a_carried_order_of_another_delivery_is_not_used(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    header = orders.carry(None, farm.order(job_id))[orders.CARRIED_ORDER]
    assert orders.carried_order(header, job_id, "another-delivery") is None
    assert orders.carried_order("not json", job_id, farm.order(job_id)["delivery"]) is None
    assert orders.carried_order(None, job_id, farm.order(job_id)["delivery"]) is None
