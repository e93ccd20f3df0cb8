"""``/scripts/{name}/versions|source|diff|template``: edit a script from anywhere — its versions, one
version's source, save a new one, diff two, and a Job template from its ``Params``. The dashboard's
Code page is a client of the same use cases (``service.script_*``).

Running an edited version is an ordinary ``POST /jobs`` with ``scriptHash`` (that version) and, to
choose the machine, ``worker``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlqueue import scripts, service
from mlqueue.api.deps import SettingsDep, plain
from mlqueue.api.problems import NOT_FOUND, Problem
from mlqueue.script_versions import MAX_SOURCE_BYTES

router = APIRouter(tags=["scripts"])
NAME = Path(pattern=scripts.NAME_RE.pattern, max_length=100)
HASH = r"^[0-9a-fA-F]{4,64}$"
REFUSED: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND, 422: {"model": Problem, "description": "not a script name, or the text does not parse"}}


class NewVersion(BaseModel):
    """The text of the script's entry file, and the version it was edited from (for folder bundles)."""

    text: str = Field(max_length=MAX_SOURCE_BYTES)
    base: str | None = Field(None, pattern=HASH, description="the version edited (default: the current one)")


@router.get("/scripts/{name}/versions", responses=NOT_FOUND)
async def list_versions(settings: SettingsDep, name: str = NAME) -> list[dict[str, Any]]:
    """Every version of a script, newest first; the first is what Jobs naming it run now."""
    return plain(await run_in_threadpool(service.script_versions, name, settings))


@router.get("/scripts/{name}/source", responses=NOT_FOUND)
async def get_source(settings: SettingsDep, name: str = NAME,
                     version: str | None = Query(None, pattern=HASH, description="a SHA-256 or its prefix "
                                                                                 "(default: the current version)")
                     ) -> dict[str, Any]:
    """One version's entry-file text, with its hash, ``previous`` version and whether it is ``current``."""
    return plain(await run_in_threadpool(service.script_source, name, version, settings))


@router.post("/scripts/{name}/versions", status_code=201, responses=REFUSED)
async def save_version(settings: SettingsDep, body: NewVersion, name: str = NAME) -> JSONResponse:
    """Save the text as a new version (never overwriting one); ``created`` is false if it equals the current."""
    saved = await run_in_threadpool(service.save_script_version, name, body.text, body.base, settings)
    return JSONResponse(plain(saved), status_code=201 if saved["created"] else 200)


@router.get("/scripts/{name}/diff", responses=NOT_FOUND)
async def get_diff(settings: SettingsDep, name: str = NAME,
                   version: str | None = Query(None, pattern=HASH, description="default: the current version"),
                   against: str | None = Query(None, pattern=HASH, description="default: the version before it")
                   ) -> dict[str, Any]:
    """A unified diff between two versions of a script."""
    return await run_in_threadpool(service.script_diff, name, version, against, settings)


@router.get("/scripts/{name}/template", responses=NOT_FOUND)
async def get_template(settings: SettingsDep, name: str = NAME,
                       version: str | None = Query(None, pattern=HASH)) -> dict[str, Any]:
    """A Job for this script, prefilled from its ``Params`` model's defaults, ready to edit and submit."""
    return plain(await run_in_threadpool(service.script_template, name, version, settings))
