"""``/datasets``: the data Jobs name (``projectName`` + ``dataFileName``), stored in the HQ: list, upload, download."""

from __future__ import annotations

import tempfile
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from mlqueue import names, service
from mlqueue.api.deps import BINARY_BODY, Page, PageDep, SettingsDep, download, page_of, plain, upload_to
from mlqueue.api.problems import NOT_FOUND
from mlqueue.errors import InvalidInput

router = APIRouter(tags=["datasets"])
NAME = r"^[^/\\]{1,200}$"


@router.get("/datasets", response_model=Page)
def list_datasets(request: Request, settings: SettingsDep, page: PageDep,
                  project: str | None = Query(None, max_length=200)) -> dict[str, Any]:
    """Datasets stored in the HQ, newest version of each (upload with `mlqueue data push`)."""
    offset, limit = page
    return page_of(request, service.datasets_list(settings, project)[offset:offset + limit], offset, limit)


@router.post("/datasets", status_code=201,
             openapi_extra=BINARY_BODY)
async def push_dataset(request: Request, settings: SettingsDep,
                       project: str = Query("default", max_length=200, description="project it belongs to"),
                       name: str = Query(..., max_length=200, description="the file name Jobs use")
                       ) -> dict[str, Any]:
    """Upload a file (the raw body) as dataset ``project/name``; changed content makes a new version."""
    try:
        names.file_name(name, "dataset name")
    except names.UnsafeName as exc:
        raise InvalidInput(f"{exc}; nothing was stored") from None
    with tempfile.TemporaryDirectory(prefix="mlqueue-upload-") as tmp:
        path = await upload_to(request, FilePath(tmp) / name)
        meta = await run_in_threadpool(service.dataset_push, path, project, name, settings)
    return plain(meta)


@router.get("/datasets/{project}/{name}", response_class=StreamingResponse, responses=NOT_FOUND)
def pull_dataset(settings: SettingsDep, project: str = Path(pattern=NAME),
                 name: str = Path(pattern=NAME)) -> StreamingResponse:
    """The newest version's bytes (``X-Mlqueue-Sha256`` says which)."""
    meta, chunks = service.dataset_file(project, name, settings)
    return download(meta, chunks, name)
