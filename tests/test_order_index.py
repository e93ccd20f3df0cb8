"""The in-memory index of Orders behind ``GET /orders`` and ``GET /jobs`` pages stays exact as Orders move."""

from __future__ import annotations

from conftest import Farm, wait_for

from mlqueue import order_index, orders, outcomes


def _ready(farm: Farm) -> order_index.OrderIndex:
    index = order_index.OrderIndex(farm.settings)
    index.read_all()
    return index


def test_pages_are_newest_first_and_follow_moves_and_new_jobs(farm: Farm) -> None:
    first = farm.submit({"scriptName": "toy", "projectName": "a"}, {"scriptName": "toy", "projectName": "b"})
    index = _ready(farm)
    assert index.page({}, 0, 10) == list(reversed(first))
    later = farm.submit({"scriptName": "toy", "projectName": "a"})
    orders.cancel(first[0], settings=farm.settings)
    assert index.page({"projectName": "a"}, 0, 10) == [later[0], first[0]]
    assert index.page({"state": "cancelled"}, 0, 10) == [first[0]]
    assert index.page({"state": {"$in": ["unassigned", "cancelled"]}}, 1, 1) == [first[1]]
    assert index.page({}, 3, 10) == []


def test_api_listing_pages_match_the_store_query(farm: Farm) -> None:
    ids = farm.submit(*({"scriptName": "toy", "projectName": f"p{i % 3}", "x": i} for i in range(12)))
    orders.cancel(ids[4], settings=farm.settings)
    wait_for(lambda: order_index.ready_index(farm.settings), timeout=30, what="the index to be read")
    for where in ({}, {"projectName": "p1"}, {"state": "cancelled"}, {"state": {"$in": ["unassigned"]}}):
        by_index = [o["jobId"] for o in outcomes.order_page(farm.settings, where, 2, 4)]
        by_store = [o["jobId"] for o in farm.db.orders.find(where).sort("jobId", -1).skip(2).limit(4)]
        assert by_index == by_store, where
        jobs = [str(j["_id"]) for j in outcomes.job_page(farm.settings, where if "state" not in where else {}, 1, 5)]
        assert jobs == [str(j["_id"]) for j in farm.db.jobs.find(where if "state" not in where else {})
                        .sort("_id", -1).skip(1).limit(5)]


def test_state_counts_come_from_a_read_index_and_follow_moves(farm: Farm) -> None:
    ids = farm.submit(*({"scriptName": "toy", "x": i} for i in range(5)))
    assert order_index.state_counts(farm.settings) is None   # no index read in this process: the store counts
    assert outcomes.state_counts(farm.settings)["unassigned"] == 5
    wait_for(lambda: order_index.ready_index(farm.settings), timeout=30, what="the index to be read")
    orders.cancel(ids[0], settings=farm.settings)
    assert order_index.state_counts(farm.settings) == {"unassigned": 4, "cancelled": 1}
    counts = outcomes.state_counts(farm.settings)
    assert counts["unassigned"] == 4 and counts["cancelled"] == 1 and counts["running"] == 0
