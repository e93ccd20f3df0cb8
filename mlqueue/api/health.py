"""``/health``: is the HQ able to take work? Public (no token), says nothing secret."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mlqueue import __version__, service, store
from mlqueue.api.deps import SettingsDep
from mlqueue.errors import ConfigError
from mlqueue.settings import Settings

router = APIRouter(tags=["health"])


class Health(BaseModel):
    ok: bool
    version: str
    redis: dict[str, Any]
    mongo: dict[str, Any]
    workers: dict[str, int]


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "Redis or the store is not answering"}})
def health(settings: SettingsDep) -> JSONResponse:
    """Is the HQ able to take work? No token needed; says nothing secret."""
    report = {"ok": True, "version": __version__, "redis": _ping_redis(settings),
              "mongo": _ping_mongo(settings), "workers": {"online": 0, "registered": 0}}
    if report["mongo"]["ok"]:
        try:
            report["workers"] = service.worker_counts(settings)
        except store.TRANSIENT:
            report["mongo"] = {"ok": False, "error": "stopped answering"}
    report["ok"] = report["redis"]["ok"] and report["mongo"]["ok"]
    return JSONResponse(report, status_code=200 if report["ok"] else 503)


def _ping_redis(settings: Settings) -> dict[str, Any]:
    if not settings.broker_url:
        return {"ok": False, "error": "no broker configured"}
    try:
        with redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2) as r:
            r.ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "error": type(exc).__name__}


def _ping_mongo(settings: Settings) -> dict[str, Any]:
    try:
        store.client(settings).admin.command("ping")
        return {"ok": True}
    except (*store.TRANSIENT, ConfigError) as exc:
        return {"ok": False, "error": type(exc).__name__}
