"""HTTP routes for invites and machines.

``POST /machines/join`` is the one route reachable without the HQ token — a machine that is joining has
no token, only an invite code — so it is rate-limited per client and in total, and does nothing unless
the code is valid. Every other route here is behind the token gate like the rest of the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from mlqueue import invites, machines
from mlqueue.settings import Settings

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


def _settings(request: Request) -> Settings:
    return request.app.state.settings


@router.post("/invites", response_model=Invite, status_code=201)
def create_invite(request: Request) -> dict[str, Any]:
    """A one-time code, valid for 10 minutes, that lets one machine join the house."""
    return invites.create(by=f"api@{request.client.host if request.client else '?'}", settings=_settings(request))


@router.post(JOIN_PATH, response_model=Joined, responses={403: {"description": "the code is unknown, used or "
                                                                "expired"}, 429: {"description": "too many tries"}})
def join(body: JoinRequest, request: Request) -> dict[str, Any]:
    """Exchange an invite code for this machine's own credentials (no token needed: the code is the key)."""
    client = request.client.host if request.client else "?"
    if not limiter.allow(client):
        raise HTTPException(429, "too many join attempts with wrong codes; wait a minute and try again",
                            headers={"Retry-After": "60"})
    host = request.url.hostname or "127.0.0.1"  # the address this machine reached the HQ at
    try:
        machines.check_name(body.name)
    except machines.MachineError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        return machines.enroll(body.name, body.code, host, _settings(request), address=client)
    except invites.InviteError as exc:
        limiter.failed(client)
        raise HTTPException(403, str(exc)) from None
    except machines.BrokerRefused as exc:
        raise HTTPException(503, str(exc)) from None
    except machines.MachineError as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/machines")
def list_machines(request: Request) -> list[dict[str, Any]]:
    """Every machine that joined, with its state (online, offline, revoked) and capabilities."""
    from mlqueue.api import plain

    return plain(machines.listing(_settings(request)))


@router.post("/machines/{name}/remove")
def remove_machine(name: str, request: Request) -> dict[str, Any]:
    """Revoke a machine: it can take no more Jobs and read nothing more from the store."""
    try:
        return machines.revoke(name, _settings(request))
    except machines.MachineError as exc:
        raise HTTPException(404, str(exc)) from None
