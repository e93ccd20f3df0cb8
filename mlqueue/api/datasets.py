"""``/datasets``: the data Jobs name (``projectName`` + ``dataFileName``), stored in the HQ."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from mlqueue import service
from mlqueue.api.deps import Page, PageDep, SettingsDep, page_of

router = APIRouter(tags=["datasets"])


@router.get("/datasets", response_model=Page)
def list_datasets(request: Request, settings: SettingsDep, page: PageDep,
                  project: str | None = Query(None, max_length=200)) -> dict[str, Any]:
    """Datasets stored in the HQ (read-only here: upload them with `mlqueue datasets push`)."""
    offset, limit = page
    return page_of(request, service.datasets_list(settings, project)[offset:offset + limit], offset, limit)
