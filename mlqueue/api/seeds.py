"""The seeds' HTTP routes, kept so their clients work against the HQ unchanged (OpenAPI tag ``seeds``).

The seeds' Boss answered ``POST /job/create`` and ``GET /retrieve/{order|job}/...``; each seeds worker
answered ``POST /scripts/run`` with a ``pythonJob`` body, ran the script there and then and sent back
what it printed. Here the same routes sit on the HQ, behind its token like every other route, and call
the same use cases as the rest of the API (``service``): a Job is validated (the seeds' ``jobParameters``
nesting is flattened by ``jobs.validate``), stored with its Order, and run by whichever worker is free.
This module only translates request and answer shapes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlqueue import seeds, service
from mlqueue.api.deps import SettingsDep, WhoDep, json_body, plain
from mlqueue.api.jobs import submit_body
from mlqueue.api.scripts import MAX_WAIT_SECONDS, wait_final

router = APIRouter(tags=["seeds"])
LISTING_MAX = 10_000

PYTHON_JOB_EXAMPLE = {
    "scriptName": "encode.py", "projectName": "wine_data",
    "jobParameters": {"dataFileName": "wine_raw.csv", "dataPath": "data/", "writePath": "out/",
                      "execution": {"columnsToRemove": [], "outputFileName": "wine_encoded.csv"}},
}


def seeds_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the seeds' Mongoose models answered it: ``_id`` a string, ``status`` on Orders."""
    out = plain(doc)
    if "state" in out:
        out["status"] = out["state"]
    return out


def python_job(body: Any) -> dict[str, Any]:
    """The seeds' ``pythonJob`` as a Job: their micro-service runner (``jobParameters``) was positional."""
    if not isinstance(body, dict):
        raise HTTPException(422, "the body must be a JSON object, the seeds' pythonJob: "
                                 '{"scriptName": "encode.py", "jobParameters": {"dataFileName": ..., '
                                 '"execution": {...}}}')
    job = {k: v for k, v in body.items() if k not in seeds.SEEDS_BOOKKEEPING}
    if seeds.NESTING in job and "scriptArgs" not in job:
        job["scriptArgs"] = "positional"
    return job


@router.post("/scripts/run", summary="Run a script now (the seeds' pythonJob)",
             responses={200: {"description": "the Outcome: the JSON object the script printed, plus "
                                             "mlqueue's durationSeconds, worker and script identity"},
                        202: {"description": "still running: poll `retrieve` (or `order`)"}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object", "additionalProperties": True}, "example": PYTHON_JOB_EXAMPLE}}}})
async def run_python_job(request: Request, settings: SettingsDep, by: WhoDep,
                         wait: float = Query(60.0, ge=0, le=MAX_WAIT_SECONDS,
                                             description="seconds to wait for the Outcome")) -> Response:
    """The seeds' worker route. With ``jobParameters`` the script is called as the seeds' micro-service
    runner did (``dataFileName dataPath/ writePath/ '<execution>'``), otherwise with the whole Job as
    its one argument. The data comes from the HQ's datasets of the Job's ``projectName``; files the
    script writes become datasets (``*.csv``) or artifacts. Answers the Outcome, whose own ``status``
    says how the script did."""
    job = python_job(await json_body(request))
    [job_id] = await run_in_threadpool(submit_body, job, by, settings)
    order = await wait_final(job_id, wait, settings)
    where = {"X-Mlqueue-Job": job_id}
    if order is None:
        return JSONResponse({"jobId": job_id, "state": "running", "retrieve": f"/retrieve/job/{job_id}",
                             "order": f"/orders/{job_id}"}, status_code=202,
                            headers={**where, "Location": f"/orders/{job_id}"})
    return JSONResponse(plain(order.get("outcome") or {}), headers=where)


@router.post("/job/create", summary="Create a Job and its Order (the seeds' Boss)")
async def create_job(request: Request, settings: SettingsDep, by: WhoDep) -> dict[str, Any]:
    """A seeds-shaped Job (top level or ``jobParameters`` nesting) is validated, stored and queued.
    Answers the stored documents: ``{"job": {...}, "order": {...}}`` with string ``_id``s."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise HTTPException(422, "the body must be one Job object; to send many at once use POST /jobs")
    [job_id] = await run_in_threadpool(submit_body, body, by, settings)
    stored = await run_in_threadpool(service.stored_documents, job_id, settings)
    return {"job": seeds_document(stored["job"]), "order": seeds_document(stored["order"])}


@router.get("/retrieve/order", summary="Every Order, oldest first (the seeds' Boss)")
def retrieve_orders(settings: SettingsDep, offset: int = Query(0, ge=0),
                    limit: int = Query(1000, ge=1, le=LISTING_MAX)) -> list[dict[str, Any]]:
    """Orders as a plain list like the seeds answered, with ``status`` beside mlqueue's ``state``;
    logs and metric series are left out (they are at ``/orders/{jobId}``)."""
    return [seeds_document(o) for o in service.orders_oldest_first(settings, offset, limit)]


@router.get("/retrieve/job", include_in_schema=False)
def retrieve_job_without_id() -> None:
    raise HTTPException(422, "missing Job id: ask for /retrieve/job/ID (ids are in /retrieve/order as jobId)")


@router.get("/retrieve/job/{job_id}", summary="One Job as stored (the seeds' Boss)")
def retrieve_job(settings: SettingsDep, job_id: str = Path(min_length=1, max_length=100)) -> dict[str, Any]:
    if not seeds.is_object_id(job_id):
        raise HTTPException(422, f"{job_id!r} is not a Job id (24 hex digits, e.g. from /retrieve/order)")
    job = service.stored_job(job_id, settings)
    if job is None:
        raise HTTPException(404, f"no Job {job_id}: /retrieve/order lists the Jobs there are")
    return seeds_document(job)


@router.get("/retrieve/{kind}", include_in_schema=False)
def retrieve_unknown(kind: str) -> None:
    raise HTTPException(404, f"nothing to retrieve as {kind!r}: use /retrieve/order or /retrieve/job/ID")
