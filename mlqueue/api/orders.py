"""``/orders`` and ``/status``: where each Job is in its lifecycle; cancel and requeue."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from mlqueue import orders, service
from mlqueue.api.deps import ID_PATTERN, Page, PageDep, SettingsDep, WhoDep, page_of, plain
from mlqueue.api.problems import CONFLICT, NOT_FOUND

router = APIRouter(tags=["orders"])
METRICS_DEFAULT = 1000
OrderState = Literal[orders.STATES]  # type: ignore[valid-type] - the states, as orders.py defines them


class Requeued(BaseModel):
    jobId: str = Field(description="the Job that will run (a copy when the original had finished)")
    requeuedFrom: str
    order: str


def order_filter(state: list[str] | None, project: str | None, script: str | None, sweep: str | None,
                 worker: str | None, ids: list[str] | None) -> dict[str, Any]:
    where: dict[str, Any] = {}
    if state:
        where["state"] = state[0] if len(state) == 1 else {"$in": state}
    for key, value in (("projectName", project), ("scriptName", script), ("sweepId", sweep), ("worker", worker)):
        if value is not None:
            where[key] = value
    if ids:
        where["jobId"] = {"$in": ids}
    return where


@router.get("/orders", response_model=Page)
def list_orders(request: Request, settings: SettingsDep, page: PageDep,
                state: list[OrderState] | None = Query(None, description="one or more states"),
                projectName: str | None = Query(None, max_length=200),
                scriptName: str | None = Query(None, max_length=200),
                sweepId: str | None = Query(None, max_length=200),
                worker: str | None = Query(None, max_length=200),
                jobId: list[str] | None = Query(None, description="only these Jobs", max_length=1000)
                ) -> dict[str, Any]:
    """Orders (without history and metrics) with their Jobs, newest first."""
    offset, limit = page
    where = order_filter(state, projectName, scriptName, sweepId, worker, jobId)
    return page_of(request, service.orders_page(settings, where, offset, limit), offset, limit)


@router.get("/orders/{job_id}", responses=NOT_FOUND)
def get_order(settings: SettingsDep, job_id: str = Path(pattern=ID_PATTERN),
              metrics: int = Query(METRICS_DEFAULT, ge=0, le=orders.METRICS_KEPT,
                                   description="how many of the latest metric reports to include")
              ) -> dict[str, Any]:
    """One Order: state, full history, latest metrics, Outcome, and the Job itself."""
    return plain(service.show(job_id, settings, metrics=metrics))


@router.post("/orders/{job_id}/cancel", responses=CONFLICT)
def cancel_order(settings: SettingsDep, by: WhoDep, job_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
    """Cancel a Job that has not finished; a running one is stopped by its worker within a heartbeat."""
    order = service.cancel(job_id, by, settings)
    return plain({"jobId": order["jobId"], "state": order["state"], "outcome": order.get("outcome")})


@router.post("/orders/{job_id}/requeue", response_model=Requeued, responses=CONFLICT)
def requeue_order(settings: SettingsDep, by: WhoDep, job_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
    """Run a Job again: a finished one is copied as a new Job, an unfinished one is re-sent."""
    done = service.requeue(job_id, by, settings)
    return {**done, "order": f"/orders/{done['jobId']}"}


@router.get("/status")
def status(settings: SettingsDep) -> dict[str, Any]:
    """Orders counted by state, and the workers (what `mlqueue status` shows)."""
    return plain(service.status(settings))
