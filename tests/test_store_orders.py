"""The ``orders`` collection's reads after its indexes were cut to the few every move can afford."""

from __future__ import annotations

from datetime import timedelta

from conftest import Farm

from mlqueue import orders, store
from mlqueue.store import orders as order_store


def _held_by(farm: Farm, job_id: str, worker: str, state: str = orders.RUNNING, **fields: object) -> None:
    farm.db.orders.update_one({"jobId": job_id}, {"$set": {"state": state, "worker": worker, **fields}})


def test_an_older_store_loses_the_indexes_no_read_needs_and_keeps_the_others(farm: Farm) -> None:
    coll = farm.db.orders
    coll.create_index([("state", 1), ("heartbeatAt", 1)])
    coll.create_index([("worker", 1), ("state", 1)])
    store.ensure_indexes(farm.settings)
    names = set(coll.index_information())
    assert not names & set(order_store.OBSOLETE_INDEXES)
    assert {"jobId_1", "state_1", "updatedDate_1", "sweepId_1", "placedOn_1_state_1"} <= names
    store.ensure_indexes(farm.settings)   # again, with nothing left to drop
    assert set(coll.index_information()) == names


def test_the_reads_that_used_the_dropped_indexes_still_find_the_right_orders(farm: Farm) -> None:
    ids = farm.submit(*[{"scriptName": "toy", "x": i} for i in range(6)])
    long_ago = orders.now() - timedelta(hours=1)
    _held_by(farm, ids[0], "wA", heartbeatAt=long_ago, deadline=long_ago)          # silent and overdue
    _held_by(farm, ids[1], "wA", orders.ASSIGNED, heartbeatAt=orders.now())        # held, fresh
    _held_by(farm, ids[2], "wB", heartbeatAt=orders.now(), deadline=orders.now() + timedelta(hours=1))
    farm.db.orders.update_one({"jobId": ids[3]}, {"$set": {"placedOn": "wA"}})     # queued, placed on wA
    farm.db.orders.update_one({"jobId": ids[4]}, {"$set": {"state": orders.SUCCEEDED}})

    assert [o["jobId"] for o in order_store.silent(orders.HELD, orders.now() - timedelta(minutes=1), farm.settings)] \
        == [ids[0]]
    assert [o["jobId"] for o in order_store.past_deadline(orders.RUNNING, orders.now(), farm.settings)] == [ids[0]]
    assert sorted(o["jobId"] for o in order_store.held_by("wA", orders.HELD, farm.settings)) == sorted(ids[:2])
    assert sorted(o["jobId"] for o in order_store.in_states(orders.HELD, farm.settings)) == sorted(ids[:3])
    todo = order_store.running_on_or_placed_on("wA", orders.HELD, orders.UNASSIGNED, farm.settings, {"jobId": 1})
    assert sorted(o["jobId"] for o in todo) == sorted([ids[0], ids[1], ids[3]])
    assert [o["jobId"] for o in order_store.placed(orders.UNASSIGNED, farm.settings)] == [ids[3]]
    assert order_store.count_by("state", settings=farm.settings) == {orders.RUNNING: 2, orders.ASSIGNED: 1,
                                                                     orders.UNASSIGNED: 2, orders.SUCCEEDED: 1}
