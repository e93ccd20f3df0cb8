"""Derived views of Outcomes: per-worker totals kept current without grouping every Outcome each time."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import Farm

from mlqueue import outcomes
from mlqueue.store import outcomes as outcome_store


def _outcome(farm: Farm, i: int, worker: str, seconds: float) -> None:
    outcome_store.insert_once(f"job{i}", {"jobId": f"job{i}", "state": "succeeded", "worker": worker,
                                          "durationSeconds": seconds, "finishedDate": datetime.now(UTC)},
                              farm.settings)


def _plain(totals: dict) -> dict:
    return {w: (t["n"], round(t["busy"], 6)) for w, t in totals.items()}


def test_worker_totals_read_only_new_outcomes_and_agree_with_grouping_them_all(farm: Farm) -> None:
    totals = outcomes.WorkerTotals()
    assert totals.refresh(farm.settings) == {}
    for i in range(3):
        _outcome(farm, i, "w1@a", 1.5)
    assert _plain(totals.refresh(farm.settings)) == {"w1@a": (3, 4.5)}
    _outcome(farm, 3, "w2@b", 2.0)
    _outcome(farm, 4, "w1@a", 0.5)
    outcome_store.insert_once("job4", {"jobId": "job4", "worker": "w1@a", "durationSeconds": 99.0}, farm.settings)
    assert _plain(totals.refresh(farm.settings)) == {"w1@a": (4, 5.0), "w2@b": (1, 2.0)}
    assert _plain(totals.refresh(farm.settings)) == _plain(outcome_store.done_by_worker(farm.settings))
