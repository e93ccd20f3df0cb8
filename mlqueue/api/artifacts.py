"""``/jobs/{id}/artifacts`` and ``/artifacts/{fileId}``: the files Jobs stored (model weights, plots...)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse

from mlqueue import service
from mlqueue.api.deps import ID_PATTERN, SettingsDep, download, plain
from mlqueue.api.problems import NOT_FOUND

router = APIRouter(tags=["artifacts"])


@router.get("/jobs/{job_id}/artifacts", responses=NOT_FOUND)
def list_artifacts(settings: SettingsDep, job_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
    """A Job's artifacts: ``{"jobId", "artifacts": [{name, fileId, size, sha256}]}``; download at ``/artifacts/ID``."""
    return plain(service.artifacts_of(job_id, settings))


@router.get("/artifacts/{file_id}", response_class=StreamingResponse, responses=NOT_FOUND)
def get_artifact(settings: SettingsDep, file_id: str = Path(pattern=r"^[0-9a-fA-F]{24}$")) -> StreamingResponse:
    """One artifact's bytes, named as the Job stored it."""
    meta, chunks = service.artifact_file(file_id, settings)
    return download(meta, chunks, str(meta.get("name") or file_id))
