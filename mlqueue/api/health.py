"""``/health``: is the HQ able to take work? Public (no token), says nothing secret."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mlqueue import __version__, brokers, service, store
from mlqueue.api.deps import SettingsDep
from mlqueue.errors import ConfigError
from mlqueue.settings import Settings

router = APIRouter(tags=["health"])


class Health(BaseModel):
    ok: bool
    version: str
    redis: dict[str, Any]
    broker: dict[str, Any] | None = None
    mongo: dict[str, Any]
    workers: dict[str, int]


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "the broker, Redis or the store is not answering"}})
def health(settings: SettingsDep) -> JSONResponse:
    """Is the HQ able to take work? No token needed; says nothing secret."""
    broker = brokers.ping(settings)
    report = {"ok": True, "version": __version__, "redis": _ping_redis(settings, broker), "broker": broker,
              "mongo": _ping_mongo(settings), "workers": {"online": 0, "registered": 0}}
    if report["mongo"]["ok"]:
        try:
            report["workers"] = service.worker_counts(settings)
        except store.TRANSIENT:
            report["mongo"] = {"ok": False, "error": "stopped answering"}
    report["ok"] = broker["ok"] and report["mongo"]["ok"]  # a separate Redis (sweeps only) down: Jobs still run
    return JSONResponse(report, status_code=200 if report["ok"] else 503)


def _ping_redis(settings: Settings, broker: dict[str, Any]) -> dict[str, Any]:
    """The Redis of sweeps and verdicts: the broker itself, a separate one beside RabbitMQ, or none."""
    url = brokers.redis_url(settings)
    if url is None:
        return broker if not settings.broker_url else {"ok": True, "used": False}
    return broker if url == settings.broker_url else brokers.ping_redis(url)


def _ping_mongo(settings: Settings) -> dict[str, Any]:
    try:
        store.client(settings).admin.command("ping")
        return {"ok": True}
    except (*store.TRANSIENT, ConfigError) as exc:
        return {"ok": False, "error": type(exc).__name__}
