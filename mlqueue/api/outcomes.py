"""``/outcomes``: finished Jobs with their results, best first, as JSON pages or one CSV."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response

from mlqueue import orders, service, tables
from mlqueue.api.deps import FIELD_PATTERN, Page, PageDep, SettingsDep, page_of, plain

router = APIRouter(tags=["outcomes"])
FinalState = Literal[orders.FINAL]  # type: ignore[valid-type] - the final states, as orders.py defines them


class OutcomeFilter(NamedTuple):
    match: dict[str, Any]
    job_ids: list[str] | None


def outcome_filter(settings: SettingsDep,
                   state: FinalState | None = Query(None),
                   status: int | None = Query(None, ge=0, le=999, description="the Outcome's status"),
                   reason: str | None = Query(None, max_length=100, description="e.g. error, timeout"),
                   worker: str | None = Query(None, max_length=200),
                   projectName: str | None = Query(None, max_length=200),
                   scriptName: str | None = Query(None, max_length=200),
                   sweepId: str | None = Query(None, max_length=200),
                   jobId: list[str] | None = Query(None, max_length=1000)) -> OutcomeFilter:
    match = {k: v for k, v in (("state", state), ("status", status), ("reason", reason), ("worker", worker))
             if v is not None}
    ids = list(jobId) if jobId else None
    by_order = {k: v for k, v in (("projectName", projectName), ("scriptName", scriptName),
                                  ("sweepId", sweepId)) if v is not None}
    if by_order:
        of_orders = service.job_ids_where(settings, by_order)
        ids = [i for i in ids if i in set(of_orders)] if ids is not None else of_orders
    return OutcomeFilter(match, ids)


def outcome_sort(sort: str = Query("loss", pattern=FIELD_PATTERN, max_length=100,
                                   description="Outcome field to rank by: loss, metric, or any "
                                               "metric the script returned"),
                 desc: bool = Query(False, description="higher is better")) -> tuple[str, bool]:
    return sort, desc


@router.get("/outcomes", response_model=Page)
def list_outcomes(request: Request, settings: SettingsDep, page: PageDep,
                  where: OutcomeFilter = Depends(outcome_filter),
                  order: tuple[str, bool] = Depends(outcome_sort)) -> dict[str, Any]:
    """Finished Jobs, best first: rows with the sort field in order, then the rest newest first.

    Each row: ``jobId``, ``state``, ``outcome``, ``job`` (its hyperparameters) and ``createdDate``.
    """
    offset, limit = page
    rows = service.outcomes_page(settings, order[0], order[1], where.match, where.job_ids, offset, limit)
    return page_of(request, rows, offset, limit)


@router.get("/outcomes.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "one flattened row per Outcome"}})
def export_outcomes(settings: SettingsDep, where: OutcomeFilter = Depends(outcome_filter),
                    order: tuple[str, bool] = Depends(outcome_sort),
                    limit: int | None = Query(None, ge=1, le=1_000_000)) -> Response:
    """The same rows as /outcomes, all of them (or ``limit``), flattened to CSV."""
    rows = service.outcomes_page(settings, order[0], order[1], where.match, where.job_ids, 0, limit or 1_000_000)
    public = [tables.flatten(plain({k: r.get(k) for k in ("jobId", "state", "outcome", "job")})) for r in rows]
    columns = list(dict.fromkeys(k for r in public for k in r)) or ["jobId", "state"]
    return Response(tables.to_csv(public, columns) + "\n", media_type="text/csv",
                    headers={"Content-Disposition": "attachment; filename=outcomes.csv"})
