"""The ``workers`` collection's one rule for "online" (``store.workers.is_online``), seen from every reader."""

from __future__ import annotations

from datetime import timedelta

from conftest import Farm, wait_for

from mlqueue import invites, machines, orders, service


def _online_in_status(farm: Farm, name: str) -> bool:
    return next(w["online"] for w in service.status(farm.settings)["workers"] if w["name"].startswith(f"{name}@"))


def _state_in_machines(farm: Farm, name: str) -> str:
    return next(m["state"] for m in machines.listing(farm.settings) if m["name"] == name)


def test_a_worker_silent_beyond_lost_after_is_offline_in_status_and_the_machines_listing(farm: Farm) -> None:
    machines.enroll("m1", invites.create(settings=farm.settings)["code"], "127.0.0.1", farm.settings)
    proc = farm.start_worker("m1")
    assert _online_in_status(farm, "m1") and _state_in_machines(farm, "m1") == "online"
    farm.kill_worker(proc)  # no goodbye: its document still says online, only its silence tells
    beat = farm.db.workers.find_one({"name": {"$regex": "^m1@"}})["lastHeartbeat"]
    wait_for(lambda: orders.now() - beat > timedelta(seconds=farm.settings.lost_after),
             what="the worker to be silent for longer than lost_after")
    assert farm.db.workers.find_one({"name": {"$regex": "^m1@"}})["online"] is True
    assert not _online_in_status(farm, "m1")
    assert _state_in_machines(farm, "m1") == "offline"
    assert service.worker_counts(farm.settings)["online"] == 0
