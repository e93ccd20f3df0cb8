"""``/workers``: the machines of the farm, what each can do and is doing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlqueue import service
from mlqueue.api.deps import SettingsDep, plain

router = APIRouter(tags=["workers"])


@router.get("/workers")
def list_workers(settings: SettingsDep) -> list[dict[str, Any]]:
    """Registered workers, their capabilities, what each runs and its heartbeat's age."""
    return plain(service.workers(settings))
