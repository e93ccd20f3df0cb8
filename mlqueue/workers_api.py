"""HTTP routes to hold a worker from the HQ: ``POST /workers/{name}/{pause|resume|drain}``.

The dashboard's Workers page calls these; the use case is ``worker_control.command``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request
from starlette.concurrency import run_in_threadpool

from mlqueue import worker_control

router = APIRouter(tags=["workers"])


@router.post("/workers/{name}/{action}")
async def control_worker(request: Request, name: str = Path(description="`w1@host`, or `w1` when unique"),
                         action: worker_control.Action = Path(description="pause | resume | drain")
                         ) -> dict[str, Any]:
    """Pause (suspend its Job, take none), drain (finish its Job, take none) or resume a worker."""
    settings = request.app.state.settings
    try:
        return await run_in_threadpool(worker_control.command, name, action, "api", settings)
    except worker_control.WorkerNotFound as exc:
        raise HTTPException(404, str(exc)) from None
