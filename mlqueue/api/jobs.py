"""``/jobs``: submit Jobs (one object or a list; all validated before any is stored) and read them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlqueue import jobs, service
from mlqueue.api.deps import ID_PATTERN, Page, PageDep, SettingsDep, WhoDep, json_body, page_of, plain
from mlqueue.api.problems import NOT_FOUND
from mlqueue.settings import Settings

router = APIRouter(tags=["jobs"])
MAX_JOBS_PER_REQUEST = 10_000

JOB_SCHEMA = jobs.JobSpec.model_json_schema()
JOB_BODY_SCHEMA = {
    "oneOf": [JOB_SCHEMA, {"type": "array", "items": JOB_SCHEMA, "minItems": 1}],
    "example": {"scriptName": "toy", "projectName": "demo", "lr": 0.1, "epochs": 3},
}


class Submitted(BaseModel):
    jobIds: list[str]
    orders: list[str] = Field(description="paths of the new Orders, to poll")


def submit_body(documents: Any, by: str, settings: Settings) -> list[str]:
    """A request body (one Job object or a list) through ``service.submit``; limits checked first."""
    many = isinstance(documents, list)
    items = documents if many else [documents]
    if not items:
        raise HTTPException(422, "the body is an empty list: send one Job object or a list of them")
    if len(items) > MAX_JOBS_PER_REQUEST:
        raise HTTPException(413, f"{len(items)} Jobs in one request; send at most {MAX_JOBS_PER_REQUEST}")
    return service.submit(items, by, settings, where=None if many else ["job"])


@router.post("/jobs", status_code=201, response_model=Submitted,
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"application/json": {"schema": JOB_BODY_SCHEMA}}}})
async def submit_jobs(request: Request, settings: SettingsDep, by: WhoDep) -> dict[str, Any]:
    """Submit one Job (an object) or many (a list). All are validated before any is stored."""
    documents = await json_body(request)
    ids = await run_in_threadpool(submit_body, documents, by, settings)
    return {"jobIds": ids, "orders": [f"/orders/{i}" for i in ids]}


@router.get("/jobs", response_model=Page)
def list_jobs(request: Request, settings: SettingsDep, page: PageDep,
              projectName: str | None = Query(None, max_length=200),
              scriptName: str | None = Query(None, max_length=200),
              sweepId: str | None = Query(None, max_length=200)) -> dict[str, Any]:
    """Jobs as submitted, newest first."""
    offset, limit = page
    where = {k: v for k, v in (("projectName", projectName), ("scriptName", scriptName),
                               ("sweepId", sweepId)) if v is not None}
    return page_of(request, service.jobs_page(settings, where, offset, limit), offset, limit)


@router.get("/jobs/{job_id}", responses=NOT_FOUND)
def get_job(settings: SettingsDep, job_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
    """One Job's fields and its Order's state."""
    found = service.job_and_state(job_id, settings)
    return plain({**found, "order": f"/orders/{found['jobId']}"})
