"""``/workers``: the machines of the farm, what each can do and is doing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from mlqueue import service
from mlqueue.api.deps import SettingsDep, plain
from mlqueue.worker_control import Action

router = APIRouter(tags=["workers"])


@router.get("/workers")
def list_workers(settings: SettingsDep) -> list[dict[str, Any]]:
    """Registered workers, their capabilities, what each runs and its heartbeat's age."""
    return plain(service.workers(settings))


@router.post("/workers/{name}/{action}")
def control_worker(settings: SettingsDep, name: str = Path(description="`w1@host`, or `w1` when unique"),
                   action: Action = Path(description="pause | resume | drain")) -> dict[str, Any]:
    """Pause (suspend its Job, take no new one), drain (finish its Job, take none) or resume a worker."""
    return service.worker_command(name, action, "api", settings)
