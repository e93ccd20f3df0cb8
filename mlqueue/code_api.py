"""``/scripts/{name}/...``: edit a script from anywhere: its versions, one version's source, save, diff,
and a Job template from its ``Params``. The dashboard's Code page is a client of exactly these.

Running an edited version is an ordinary ``POST /jobs`` with ``scriptHash`` (that version) and, to
choose the machine, ``worker``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlqueue import script_versions, scripts
from mlqueue.settings import Settings

router = APIRouter(tags=["scripts"])
NAME = Path(pattern=scripts.NAME_RE.pattern, max_length=100)
HASH = r"^[0-9a-fA-F]{4,64}$"
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such script or version"}}


class NewVersion(BaseModel):
    """The text of the script's entry file, and the version it was edited from (for folder bundles)."""

    text: str = Field(max_length=script_versions.MAX_SOURCE_BYTES)
    base: str | None = Field(None, pattern=HASH, description="the version edited (default: the current one)")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _call(function: Any, *args: Any, status: int = 404) -> Any:
    try:
        return await run_in_threadpool(function, *args)
    except script_versions.VersionError as exc:
        raise HTTPException(status, str(exc)) from None


@router.get("/scripts/{name}/versions", responses=NOT_FOUND)
async def list_versions(request: Request, name: str = NAME) -> list[dict[str, Any]]:
    """Every version of a script, newest first; the first is what Jobs naming it run now."""
    found = await _call(script_versions.versions, name, _settings(request))
    if not found:
        raise HTTPException(404, f"no script {name!r}: save one (POST /scripts/{name}/versions) or push it")
    return _plain(found)


@router.get("/scripts/{name}/source", responses=NOT_FOUND)
async def get_source(request: Request, name: str = NAME,
                     version: str | None = Query(None, pattern=HASH, description="a SHA-256 or its prefix "
                                                                                 "(default: the current version)")
                     ) -> dict[str, Any]:
    """One version's entry-file text, with its hash, ``previous`` version and whether it is ``current``."""
    return _plain(await _call(script_versions.source, name, version, _settings(request)))


@router.post("/scripts/{name}/versions", status_code=201,
             responses={**NOT_FOUND, 422: {"description": "not a script name, or the text does not parse"}})
async def save_version(request: Request, body: NewVersion, name: str = NAME) -> JSONResponse:
    """Save the text as a new version (never overwriting one); ``created`` is false if it equals the current."""
    saved = await _call(script_versions.save, name, body.text, body.base, _settings(request), status=422)
    return JSONResponse(saved, status_code=201 if saved["created"] else 200)


@router.get("/scripts/{name}/diff", responses=NOT_FOUND)
async def get_diff(request: Request, name: str = NAME,
                   version: str | None = Query(None, pattern=HASH, description="default: the current version"),
                   against: str | None = Query(None, pattern=HASH, description="default: the version before it")
                   ) -> dict[str, Any]:
    """A unified diff between two versions of a script."""
    return await _call(script_versions.diff, name, version, against, _settings(request))


@router.get("/scripts/{name}/template", responses=NOT_FOUND)
async def get_template(request: Request, name: str = NAME,
                       version: str | None = Query(None, pattern=HASH)) -> dict[str, Any]:
    """A Job for this script, prefilled from its ``Params`` model's defaults, ready to edit and submit."""
    return await _call(script_versions.job_template, name, _settings(request), version)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in value.items()}
    return value
