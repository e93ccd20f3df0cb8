"""Whole reads of a collection in short windows (``store.in_windows``), and what the HQ builds on them at
start: the Orders index and the dashboard's table from one read, the newest rows served first."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId
from conftest import Farm, wait_for

from mlqueue import order_index, orders, outcomes, store
from mlqueue.store import orders as order_store


def stored_history(farm: Farm, n: int) -> list[str]:
    """``n`` finished Jobs as mlqueue stores them (Job, Order with its Outcome, Outcome), oldest first: one
    every 10 minutes, then after a quiet hour the last ten, one a minute up to now."""
    now = orders.now()
    ends = [now - timedelta(minutes=70 + 10 * (n - 10 - i)) for i in range(n - 10)]
    ends += [now - timedelta(minutes=10 - i) for i in range(10)]
    jobs, order_docs, outcome_docs = [], [], []
    for i, ended in enumerate(ends):
        oid, created = ObjectId(), ended - timedelta(seconds=1)
        outcome = {"jobId": str(oid), "state": "succeeded", "status": 200, "loss": float(i), "worker": "w1@h",
                   "finishedDate": ended}
        jobs.append({"_id": oid, "scriptName": "toy", "projectName": f"p{i % 3}", "lr": i, "createdDate": created})
        order_docs.append({"jobId": str(oid), "state": "succeeded", "createdDate": created, "updatedDate": ended,
                           "scriptName": "toy", "projectName": f"p{i % 3}", "sweepId": None, "worker": "w1@h",
                           "attempts": 1, "startedDate": created, "finishedDate": ended, "outcome": outcome})
        outcome_docs.append(dict(outcome))
    farm.db.jobs.insert_many(jobs)
    farm.db.orders.insert_many(order_docs)
    farm.db.outcomes.insert_many(outcome_docs)
    return [str(j["_id"]) for j in jobs]


def test_windows_read_each_order_once_and_what_moved_meanwhile_is_read_after(farm: Farm) -> None:
    ids = stored_history(farm, 60)
    farm.db.orders.insert_one({"jobId": "unstamped", "state": "succeeded"})  # no updatedDate: still read
    started = orders.now()
    windows = order_store.in_windows(farm.settings, {"jobId": 1}, size=5)
    seen = list(next(windows))
    assert ids[-1] in {o["jobId"] for o in seen}, "the most recently moved Order comes first"
    farm.db.orders.update_one({"jobId": ids[0]}, {"$set": {"updatedDate": orders.now()}})  # moves, not read yet
    [new] = farm.submit({"scriptName": "toy"})
    rest = list(windows)
    seen += [o for window in rest for o in window]

    counts = Counter(o["jobId"] for o in seen)
    assert max(counts.values()) == 1, "an Order read twice"
    assert len(rest) >= 8, "the read was not split into windows"
    assert set(ids[1:]) | {"unstamped"} <= set(counts)
    moved_meanwhile = {o["jobId"] for o in order_store.updated_since(started - order_index.OVERLAP, farm.settings)}
    assert set(counts) | moved_meanwhile == set(ids) | {"unstamped", new}


def test_the_orders_index_read_in_windows_matches_the_store(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "WINDOW", 4)
    ids = stored_history(farm, 30)
    index = order_index.OrderIndex(farm.settings)
    index.read_all()
    assert index.page({}, 0, 100) == sorted(ids, reverse=True)
    assert index.page({"projectName": "p1"}, 2, 3) == [o["jobId"] for o in farm.db.orders.find(
        {"projectName": "p1"}).sort("jobId", -1).skip(2).limit(3)]


def test_the_newest_jobs_show_before_the_whole_table_is_read_and_the_index_comes_with_it(
        farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first start with no saved table: the page's first rows come from the first windows read, while
    the read is held (here on purpose) before its end; the same read also builds the Orders index."""
    from mlqueue.dashboard.table import JobTable

    monkeypatch.setattr(store, "WINDOW", 5)
    ids = stored_history(farm, 60)
    held, release = threading.Event(), threading.Event()
    read_in_windows = outcomes.table_row_windows

    def held_after_ten_rows(settings: Any, also: Any = None) -> Iterator[list[dict[str, Any]]]:
        read = 0
        for rows in read_in_windows(settings, also):
            yield rows
            read += len(rows)
            if read >= 10 and not held.is_set():
                held.set()
                assert release.wait(60)

    monkeypatch.setattr(outcomes, "table_row_windows", held_after_ten_rows)
    table = JobTable(farm.settings)
    table.start_loading()
    index = order_index.index_for(farm.settings)
    index.start_loading()  # as the HQ does right after the dashboard starts: the table's read is shared
    try:
        assert held.wait(60), "the table's read did not start"
        rows, count = table.page(0, 5)
        assert [r["jobId"] for r in rows] == ids[::-1][:5] and count is None  # count: not known yet
        assert not table.ready and 10 <= table.rows_read < 60 and not index.ready
        assert table.columns()[:2] == [("jobId", "text"), ("state", "text")]
    finally:
        release.set()
    wait_for(lambda: table.ready, what="the whole table")
    rows, count = table.page(0, 5)
    assert [r["jobId"] for r in rows] == ids[::-1][:5] and count == 60
    assert table.full_reads == 1 and index.ready and index.page({}, 0, 3) == sorted(ids, reverse=True)[:3]
    assert len(order_index.index_for(farm.settings)) == 60


def test_the_default_rankings_are_built_from_one_windowed_read(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlqueue import ranking

    monkeypatch.setattr(store, "WINDOW", 2)  # Outcomes: 8 a window
    ids = stored_history(farm, 40)
    ranking.warm(farm.settings)
    by_loss, by_metric = ranking.ranking(farm.settings, "loss"), ranking.ranking(farm.settings, "metric")
    assert by_loss.built and by_metric.built
    assert ranking.page_ids(farm.settings, "loss", {}, None, False, 0, 5) == ids[:5]  # loss i: the oldest first
    assert ranking.page_ids(farm.settings, "loss", {}, None, True, 0, 3) == ids[::-1][:3]
    assert ranking.page_ids(farm.settings, "metric", {}, None, True, 0, 3) == sorted(ids, reverse=True)[:3]


def test_the_hqs_reaper_compares_whole_collections_once_the_start_reads_are_done(farm: Farm) -> None:
    """Until then it looks only at Orders ending meanwhile (its whole comparison read every Order while the
    table was being read); asked, its next sweep repairs an Outcome lost long ago."""
    from mlqueue import hq

    ids = stored_history(farm, 12)
    farm.db.outcomes.delete_one({"jobId": ids[0]})  # ended an hour ago, its Outcome never copied
    reaper = orders.Reaper("reaper@hq", farm.settings, full_repair=False)
    assert reaper.sweep()["repaired"] == 0
    hq.read_at_start(farm.settings, reaper)
    assert order_index.index_for(farm.settings).ready
    assert ranking_built(farm, "loss") and ranking_built(farm, "metric")
    assert reaper.sweep()["repaired"] == 1 and farm.db.outcomes.count_documents({"jobId": ids[0]}) == 1
    assert reaper.sweep()["repaired"] == 0


def ranking_built(farm: Farm, field: str) -> bool:
    from mlqueue import ranking

    return ranking.ranking(farm.settings, field).built


def test_after_a_quiet_spell_a_busy_past_is_read_in_pieces_not_at_once(farm: Farm) -> None:
    """The range that crosses a quiet day reaches into a busy hour before it: read in pieces of ~size."""
    now = orders.now()
    busy = [{"jobId": f"b{i:03d}", "updatedDate": now - timedelta(days=1, seconds=i)} for i in range(60)]
    farm.db.orders.insert_many([*busy, {"jobId": "recent", "updatedDate": now - timedelta(seconds=5)}])
    windows = list(order_store.in_windows(farm.settings, {"jobId": 1}, size=10))
    assert [o["jobId"] for o in windows[0]] == ["recent"]
    assert max(len(w) for w in windows) <= 12, [len(w) for w in windows]
    read = [o["jobId"] for w in windows for o in w]
    assert sorted(read) == sorted(["recent", *(b["jobId"] for b in busy)])
    assert set(read[1:11]) == {f"b{i:03d}" for i in range(10)}, "the busy hour's newest first"


def test_the_newest_rows_are_found_across_a_quiet_spell(farm: Farm) -> None:
    """What the Jobs page shows before its table is read: the newest Jobs, however long ago the last ones."""
    ids = stored_history(farm, 30)
    for i, job_id in enumerate(ids):  # one a second, two days ago; nothing since
        farm.db.jobs.update_one({"_id": ObjectId(job_id)},
                                {"$set": {"createdDate": orders.now() - timedelta(days=2, seconds=30 - i)}})
        farm.db.orders.update_one({"jobId": job_id},
                                  {"$set": {"createdDate": orders.now() - timedelta(days=2, seconds=30 - i)}})
    assert [r["jobId"] for r in outcomes.newest_rows(farm.settings, 5)] == ids[::-1][:5]
