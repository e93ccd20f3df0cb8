"""Result pages from the in-memory ranking are exactly the store's own sorted pages, and stay current."""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_helpers import insert_finished
from bson import ObjectId
from conftest import Farm

from mlqueue import outcomes, ranking
from mlqueue.store import outcomes as outcome_store


def _store_page(farm: Farm, **kwargs) -> list[str]:
    """The same page computed by the store (the path taken for filters the ranking does not hold)."""
    where = dict(kwargs.pop("match", {}))
    if kwargs.get("job_ids") is not None:
        where["jobId"] = {"$in": kwargs.pop("job_ids")}
    kwargs.pop("job_ids", None)
    rows = outcome_store.page_sorted_by(kwargs.get("sort", "loss"), kwargs.get("descending", False), where,
                                        kwargs.get("offset", 0), kwargs.get("limit", 50), farm.settings)
    return [r["jobId"] for r in rows]


def _ranked_page(farm: Farm, **kwargs) -> list[str]:
    return [r["jobId"] for r in outcomes.page(farm.settings, **kwargs)]


def test_ranked_pages_equal_the_stores_and_follow_new_outcomes(farm: Farm) -> None:
    ids = insert_finished(farm.db, 60, seed=11, unscored_every=6)
    cases = [{}, {"descending": True}, {"sort": "acc"}, {"sort": "acc", "descending": True, "offset": 45},
             {"offset": 48, "limit": 10}, {"offset": 55}, {"offset": 100}, {"match": {"state": "failed"}},
             {"match": {"worker": "w2@host", "state": "succeeded"}, "limit": 5},
             {"job_ids": ids[:7]}, {"job_ids": []}, {"sort": "no_such_metric", "limit": 7}]
    for kwargs in cases:
        assert _ranked_page(farm, **kwargs) == _store_page(farm, **kwargs), kwargs
    # ranked lists exist now; Outcomes written afterwards must show up in the very next page
    newer = insert_finished(farm.db, 10, seed=12, unscored_every=3)
    farm.db.outcomes.update_many({"jobId": {"$in": newer[1:3]}}, {"$set": {"loss": -1.0}})  # new best ones
    for kwargs in cases[:6]:
        assert _ranked_page(farm, **kwargs) == _store_page(farm, **kwargs), kwargs
    assert set(_ranked_page(farm, limit=2)) == set(newer[1:3])
    assert len(_ranked_page(farm, limit=1000)) == 70


def test_late_commits_are_picked_up_and_deleted_outcomes_forgotten(farm: Farm, monkeypatch) -> None:
    insert_finished(farm.db, 20, seed=5, unscored_every=0)
    assert len(_ranked_page(farm, limit=100)) == 20
    newest = farm.db.outcomes.find_one(sort=[("_id", -1)])["_id"]
    late_id = ObjectId.from_datetime(newest.generation_time - timedelta(seconds=5))  # an _id older than seen
    farm.db.outcomes.insert_one({"_id": late_id, "jobId": str(ObjectId()), "state": "succeeded", "loss": -5.0})
    assert len(_ranked_page(farm, limit=100)) == 20  # not yet: it hides behind the newest _id
    monkeypatch.setattr(ranking, "RESWEEP_SECONDS", 0.0)
    assert _ranked_page(farm, limit=1) == [farm.db.outcomes.find_one({"_id": late_id})["jobId"]]
    gone = _ranked_page(farm, limit=3)
    farm.db.outcomes.delete_many({"jobId": {"$in": gone}})
    assert len(_ranked_page(farm, limit=3)) == 0  # a page of gone Outcomes comes back short once...
    assert _ranked_page(farm, limit=100) == _store_page(farm, limit=100)  # ...and they are forgotten


@pytest.mark.parametrize("descending", [False, True])
def test_window_is_a_slice_of_the_reversed_list(descending: bool) -> None:
    items = list(range(10))
    view = items[::-1] if descending else items
    for offset in range(0, 12):
        for count in range(0, 12):
            assert ranking._window(items, offset, count, descending) == view[offset:offset + count]
