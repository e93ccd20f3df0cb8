"""What every router shares: the settings dependency, who is asking, paging, JSON bodies, JSON values.

Routers get the HQ's settings with ``settings: SettingsDep`` (``create_app`` keeps them on
``app.state``), so a router module is plain ``APIRouter`` code with no closures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from bson import ObjectId
from fastapi import Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from mlqueue.settings import Settings

PAGE_DEFAULT, PAGE_MAX = 50, 1000
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
ID_PATTERN = r"^[0-9a-fA-F]{4,24}$"
BINARY_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}


async def settings_of(request: Request) -> Settings:
    """The settings of the HQ serving this request."""
    return request.app.state.settings


def who_is(request: Request) -> str:
    """Who asks, for Order histories: ``api@ADDRESS``."""
    return f"api@{request.client.host if request.client else '?'}"


async def who(request: Request) -> str:
    """``who_is`` as a dependency."""
    return who_is(request)


SettingsDep = Annotated[Settings, Depends(settings_of)]
WhoDep = Annotated[str, Depends(who)]


class Page(BaseModel):
    """A page of a listing; follow ``next`` (a path with its query) until it is null."""

    items: list[dict[str, Any]]
    offset: int
    limit: int
    next: str | None = None


def page_params(offset: int = Query(0, ge=0, le=10_000_000, description="rows to skip"),
                limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description="rows per page")
                ) -> tuple[int, int]:
    return offset, limit


PageDep = Annotated[tuple[int, int], Depends(page_params)]


def plain(value: Any) -> Any:
    """Store documents to JSON: ObjectIds and datetimes to strings, NaN/inf to null, bytes dropped."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if not isinstance(v, bytes)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def next_link(request: Request, offset: int, limit: int, got: int) -> str | None:
    """The same query one page further on; None on the last page."""
    if got < limit:
        return None
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "offset"]
    return f"{request.url.path}?{urlencode([*kept, ('offset', str(offset + got))])}"


def page_of(request: Request, items: list[dict[str, Any]], offset: int, limit: int) -> dict[str, Any]:
    """A ``Page`` of ``items`` (already cut to ``offset``/``limit``)."""
    return {"items": plain(items), "offset": offset, "limit": limit,
            "next": next_link(request, offset, limit, len(items))}


async def json_body(request: Request, default: Any = ...) -> Any:
    """The request body parsed as JSON (``default`` when empty), or a 422 saying where it breaks."""
    raw = await request.body()
    if not raw.strip():
        if default is not ...:
            return default
        raise HTTPException(422, "the body is empty: send a JSON Job object, or a list of them")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise HTTPException(422, f"the body is not valid JSON{where}: send a JSON object") from None


async def upload_to(request: Request, target: Path) -> Path:
    """Stream the request body to the file ``target`` (uploads can be large: never held in memory)."""
    with open(target, "wb") as fh:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(fh.write, chunk)
    return target


def download(meta: dict[str, Any], chunks: Iterator[bytes], filename: str) -> StreamingResponse:
    """A stored file as a download: its bytes streamed, its description in ``X-Mlqueue-*`` headers."""
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
               "X-Mlqueue-Sha256": str(meta.get("sha256") or "")}
    if meta.get("size") is not None:
        headers["Content-Length"] = str(meta["size"])
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="application/octet-stream", headers=headers)
