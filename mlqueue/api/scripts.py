"""``/scripts``: the scripts a Job may name, pushing one, and running one as a micro-service."""

from __future__ import annotations

import asyncio
import tempfile
import time
import zipfile
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlqueue import names, scripts, service
from mlqueue.api.deps import BINARY_BODY, SettingsDep, WhoDep, json_body, plain, upload_to
from mlqueue.api.jobs import submit_body
from mlqueue.api.problems import NOT_FOUND
from mlqueue.errors import InvalidInput
from mlqueue.settings import Settings

router = APIRouter(tags=["scripts"])
MAX_WAIT_SECONDS = 600.0


@router.get("/scripts")
def list_scripts(settings: SettingsDep) -> list[dict[str, Any]]:
    """The scripts a Job may name (pushed bundles and built-ins), each callable at ``run``."""
    return plain([{**s, "run": f"/scripts/{s['name']}/run"} for s in service.scripts_list(settings)])


@router.post("/scripts", status_code=201, openapi_extra=BINARY_BODY)
async def push_script(request: Request, settings: SettingsDep,
                      name: str | None = Query(None, pattern=scripts.NAME_RE.pattern, max_length=100,
                                               description="the scriptName Jobs use (default: file or folder name)"),
                      filename: str | None = Query(None, max_length=200, description="a single file: its name"),
                      folder: str | None = Query(None, max_length=200,
                                                 description="a folder: its name; the body is a zip of it")
                      ) -> dict[str, Any]:
    """Store a script (the raw file, or a zip of a folder with main.py) as a bundle every worker fetches."""
    if (filename is None) == (folder is None):
        raise InvalidInput("say what the body is: ?filename=train.py for one file, or ?folder=NAME for a zip "
                           "of a folder; nothing was stored")
    try:
        base = names.file_name(filename or folder, "script file or folder name")
    except names.UnsafeName as exc:
        raise InvalidInput(f"{exc}; nothing was stored") from None
    with tempfile.TemporaryDirectory(prefix="mlqueue-script-") as tmp:
        received = await upload_to(request, FilePath(tmp) / (base if filename else "bundle.zip"))
        if folder:
            received = await run_in_threadpool(_unzip, received, FilePath(tmp) / "src" / base)
        meta = await run_in_threadpool(service.script_push, received, name, settings)
    return plain(meta)


def _unzip(archive: FilePath, into: FilePath) -> FilePath:
    """Unpack an uploaded folder, refusing entries that are absolute or climb out with ``..``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                names.relative_path(member, "zip entry")
            into.mkdir(parents=True)
            zf.extractall(into)
    except (zipfile.BadZipFile, names.UnsafeName) as exc:
        raise InvalidInput(f"the uploaded folder is not a usable zip ({exc}); nothing was stored") from None
    return into


@router.post("/scripts/{name}/run",
             responses={202: {"description": "still running: poll the Order at `order`"}, **NOT_FOUND},
             openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
                 "schema": {"type": "object", "additionalProperties": True,
                            "description": "the Job's fields (hyperparameters)"}}}}})
async def run_script(request: Request, settings: SettingsDep, by: WhoDep,
                     name: str = Path(pattern=scripts.NAME_RE.pattern, max_length=100),
                     wait: float = Query(30.0, ge=0, le=MAX_WAIT_SECONDS,
                                         description="seconds to wait for the Outcome")) -> Response:
    """Run a script on the farm as a micro-service: its Outcome if it ends within ``wait``, else 202."""
    fields = await json_body(request, default={})
    if not isinstance(fields, dict):
        raise HTTPException(422, "the body must be a JSON object of the script's fields")
    await run_in_threadpool(service.script_check, name, settings)
    [job_id] = await run_in_threadpool(submit_body, {**fields, "scriptName": name}, by, settings)
    order = await wait_final(job_id, wait, settings)
    if order is None:
        return JSONResponse({"jobId": job_id, "state": "running", "order": f"/orders/{job_id}"},
                            status_code=202, headers={"Location": f"/orders/{job_id}"})
    return JSONResponse(plain({"jobId": job_id, "state": order["state"], "outcome": order.get("outcome")}))


async def wait_final(job_id: str, wait: float, settings: Settings) -> dict[str, Any] | None:
    """Poll the Order until it is final or ``wait`` seconds have passed (None)."""
    deadline = time.monotonic() + wait
    while True:
        order = await run_in_threadpool(service.final_order, job_id, settings)
        if order is not None:
            return order
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
