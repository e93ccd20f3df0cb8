"""Every error the API answers with: one JSON shape, ``{"error": message, "fields": [...]}``.

Routes raise ``mlqueue.errors`` (or ``HTTPException``) and never build error responses themselves;
the handlers here turn them into a ``Problem`` with the right status.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlqueue import store
from mlqueue.errors import InvalidInput, MlqueueError

log = logging.getLogger(__name__)


class Problem(BaseModel):
    """Every error: what went wrong and what to do about it."""

    error: str
    fields: list[str] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong token"},
    422: {"model": Problem, "description": "a parameter or field is not valid; the message names it"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}
CONFLICT: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, 409: {"model": Problem}}


def problem(status: int, message: str, fields: list[str] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def fields_named(message: str) -> list[str]:
    """The fields an error message names (``field 'lr'``), in order, once each."""
    return list(dict.fromkeys(re.findall(r"field '([^']+)'", message)))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the ``Problem`` shape."""

    @app.exception_handler(MlqueueError)
    async def refused(_: Request, exc: MlqueueError) -> JSONResponse:
        message = str(exc)
        if isinstance(exc, InvalidInput):  # a wrong field, or a dataset the store does not have
            return JSONResponse({"error": message, "fields": fields_named(message)}, status_code=exc.status)
        return problem(exc.status, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            return JSONResponse(exc.detail, status_code=exc.status_code, headers=getattr(exc, "headers", None))
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such resource: see /docs for the API's routes"
        elif exc.status_code == 405:
            message = "method not allowed on this resource: see /docs for what it accepts"
        return problem(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields, lines = [], []
        for err in exc.errors():
            name = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            fields.append(name)
            lines.append(f"field '{name}': {err.get('msg')}")
        return problem(422, "; ".join(lines) + ". Fix and send again; nothing was done.", fields)

    async def store_down(_: Request, exc: Exception) -> JSONResponse:
        return problem(503, f"the HQ's database is not answering ({type(exc).__name__}); "
                            "check that `mlqueue hq` is running and retry")

    for transient in store.TRANSIENT:
        app.add_exception_handler(transient, store_down)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        return problem(500, f"internal error ({type(exc).__name__}); the HQ's log has the details")
