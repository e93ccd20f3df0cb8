"""``/invites`` and ``/machines``: growing the house, and taking a machine back out.

``POST /machines/join`` is the one route reachable without the HQ token (listed in ``security``) — a
machine that is joining has no token, only an invite code — so wrong codes are braked per client and in
total, and nothing is done unless the code is valid. Every other route here is behind the token gate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from mlqueue import invites, service
from mlqueue.api.deps import SettingsDep, WhoDep, plain

JOIN_PATH = "/machines/join"
router = APIRouter(tags=["machines"])
limiter = invites.RateLimiter()


class Invite(BaseModel):
    code: str = Field(description="type it on the joining machine: mlqueue join HOST --code CODE")
    expires: datetime


class JoinRequest(BaseModel):
    code: str = Field(min_length=1, max_length=40, description="the invite code `mlqueue invite` printed")
    name: str = Field(min_length=1, max_length=64, description="the machine's name in the house")


class Joined(BaseModel):
    machine: str
    broker_url: str
    mongo_url: str
    mongo_db: str
    queue: str
    storeRevocable: bool


@router.post("/invites", response_model=Invite, status_code=201)
def create_invite(settings: SettingsDep, who: WhoDep) -> dict[str, Any]:
    """A one-time code, valid for 10 minutes, that lets one machine join the house."""
    return service.create_invite(who, settings)


@router.post(JOIN_PATH, response_model=Joined, responses={403: {"description": "the code is unknown, used or "
                                                                "expired"}, 429: {"description": "too many tries"}})
def join(body: JoinRequest, request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Exchange an invite code for this machine's own credentials (no token needed: the code is the key)."""
    client = request.client.host if request.client else "?"
    if not limiter.allow(client):
        raise HTTPException(429, "too many join attempts with wrong codes; wait a minute and try again",
                            headers={"Retry-After": "60"})
    host = request.url.hostname or "127.0.0.1"  # the address this machine reached the HQ at
    try:
        return service.join_machine(body.name, body.code, host, client, settings)
    except invites.InviteError:
        limiter.failed(client)
        raise


@router.get("/machines")
def list_machines(settings: SettingsDep) -> list[dict[str, Any]]:
    """Every machine that joined, with its state (online, offline, revoked) and capabilities."""
    return plain(service.machines_list(settings))


@router.post("/machines/{name}/remove")
def remove_machine(name: str, settings: SettingsDep) -> dict[str, Any]:
    """Revoke a machine: it can take no more Jobs and read nothing more from the store."""
    return service.remove_machine(name, settings)
