"""``/sweeps``: start a hyperparameter sweep from its file's text, watch it, take its best Job, stop it.

``SWEEP`` in a path is a sweep id, a unique prefix of one, or ``latest``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlqueue import service
from mlqueue.api.deps import SettingsDep, WhoDep, plain
from mlqueue.api.problems import NOT_FOUND

router = APIRouter(tags=["sweeps"])
SWEEP = Path(pattern=r"^([0-9a-fA-F]{4,24}|latest)$", description="a sweep id, a unique prefix, or `latest`")


class SweepFile(BaseModel):
    text: str = Field(max_length=1_000_000, description="the sweep file (YAML or JSON) as written")
    where: str = Field("sweep", max_length=500, description="its name, for error messages (file:line:column)")


def _named(sweep_id: str) -> str | None:
    return None if sweep_id == "latest" else sweep_id


@router.get("/sweeps")
def list_sweeps(settings: SettingsDep) -> list[dict[str, Any]]:
    """All sweeps, newest first."""
    return plain(service.sweeps_list(settings))


@router.post("/sweeps", status_code=201)
async def start_sweep(body: SweepFile, settings: SettingsDep, by: WhoDep) -> dict[str, Any]:
    """Check a sweep file and store the sweep; the HQ's driver starts its trials. 422 names line and column."""
    return plain(await run_in_threadpool(service.sweep_start, body.text, body.where, by, settings))


@router.get("/sweeps/{sweep_id}", responses=NOT_FOUND)
def sweep_status(settings: SettingsDep, sweep_id: str = SWEEP,
                 trials: bool = Query(False, description="include every trial's record as `trialList`")
                 ) -> dict[str, Any]:
    """Trials by state, best so far, wall and machine time, machines used."""
    return plain(service.sweep_status(_named(sweep_id), settings, trials=trials))


@router.get("/sweeps/{sweep_id}/best", responses=NOT_FOUND)
def sweep_best(settings: SettingsDep, sweep_id: str = SWEEP) -> dict[str, Any]:
    """The best trial's Job ready to submit (``job``, null while no trial succeeded) and its record (``trial``)."""
    return plain(service.sweep_best(_named(sweep_id), settings))


@router.post("/sweeps/{sweep_id}/stop", responses=NOT_FOUND)
def stop_sweep(settings: SettingsDep, by: WhoDep, sweep_id: str = SWEEP) -> dict[str, Any]:
    """No new trials; unfinished ones are cancelled, finished ones kept."""
    return plain(service.sweep_stop(service.sweep_id_or_latest(_named(sweep_id), settings), by, settings))
