"""Roles and the brake on guessing tokens (mlqueue.access); the HTTP side is in test_api_access.py."""

from __future__ import annotations

import contextvars
from pathlib import Path

import pytest
from conftest import Farm

from mlqueue import access, datasets, orders, scripts


def test_roles_come_from_the_token_presented() -> None:
    assert access.role_for("full-t", "full-t", "read-t") == access.FULL
    assert access.role_for("read-t", "full-t", "read-t") == access.READ
    assert access.role_for("guess", "full-t", "read-t") is None and access.role_for(None, "full-t") is None
    assert access.role_for("", "full-t", None) is None


def test_the_read_role_may_look_log_in_and_use_the_dashboard_only() -> None:
    assert access.read_may("GET", "/orders") and access.read_may("HEAD", "/jobs")
    assert access.read_may("POST", "/login") and access.read_may("POST", "/ui/_dash-update-component")
    assert not access.read_may("POST", "/jobs") and not access.read_may("POST", "/orders/x/cancel")
    assert not access.read_may("DELETE", "/jobs/x") and not access.read_may("POST", "/ui/x")


def test_use_cases_refuse_a_read_only_caller_and_change_nothing(farm: Farm, tmp_path: Path) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    (tmp_path / "d.csv").write_text("a\n1\n")

    def as_reader() -> None:
        access.current_role.set(access.READ)
        for action in (lambda: farm.submit({"scriptName": "toy"}), lambda: orders.cancel(job_id),
                       lambda: orders.requeue(job_id), lambda: orders.request_stop(job_id, "x", "me"),
                       lambda: datasets.push(tmp_path / "d.csv", "p", settings=farm.settings),
                       lambda: scripts.push(tmp_path / "d.csv", "s", settings=farm.settings)):
            with pytest.raises(access.ReadOnly, match="read-only"):
                action()

    contextvars.copy_context().run(as_reader)
    assert farm.db.jobs.count_documents({}) == 1 and farm.order(job_id)["state"] == "unassigned"
    assert farm.db["datasets.files"].count_documents({}) == 0 and not farm.order(job_id).get("stopRequested")
    assert orders.cancel(job_id)["state"] == "cancelled"  # the default role (CLI, workers, HQ threads) is full


def test_failures_are_braked_per_address_within_the_window() -> None:
    limiter = access.FailureLimiter(max_failures=3, window=60)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert 1 <= limiter.retry_after("10.0.0.1") <= 60 and limiter.retry_after("10.0.0.2") is None
    quick = access.FailureLimiter(max_failures=1, window=0.0)
    quick.failed("a")
    assert quick.retry_after("a") is None  # outside the window: forgotten
