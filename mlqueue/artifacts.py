"""Files a Job produced that are worth keeping (model weights, plots): stored in GridFS with the Job.

Scripts write them into their ``writePath`` and list them in the Outcome as
``"artifacts": [{"name": ..., "path": ...}]``; the worker uploads them and the Outcome keeps
``{"name", "fileId", "size", "sha256"}`` so the CLI, API and dashboard can offer downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bson import ObjectId
from gridfs.errors import NoFile

from mlqueue import names, store
from mlqueue.datasets import sha256_of
from mlqueue.errors import NotFound
from mlqueue.settings import Settings

BUCKET = "artifacts"


class ArtifactError(NotFound):
    """An artifact does not exist; the message says where to look."""


def upload(job_id: str, path: Path, name: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    path = Path(path)
    name = name or path.name
    try:
        names.file_name(name, "artifact name")
    except names.UnsafeName as exc:
        raise ArtifactError(f"{exc}; the artifact was not stored") from None
    meta = {"jobId": job_id, "name": name, "sha256": sha256_of(path), "size": path.stat().st_size}
    with open(path, "rb") as fh:
        file_id = store.bucket(BUCKET, settings).upload_from_stream(f"{job_id}/{name}", fh, metadata=meta)
    return {"name": name, "fileId": str(file_id), "size": meta["size"], "sha256": meta["sha256"]}


def for_job(job_id: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    files = store.db(settings)[f"{BUCKET}.files"]
    return [{"name": d["metadata"]["name"], "fileId": str(d["_id"]), "size": d["length"],
             "sha256": d["metadata"]["sha256"]} for d in files.find({"metadata.jobId": job_id}).sort("uploadDate", 1)]


def stored_file(file_id: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The GridFS file document of an artifact (``metadata``, ``length``), or None for an unknown or invalid id."""
    return store.db(settings)[f"{BUCKET}.files"].find_one({"_id": ObjectId(file_id)}) \
        if ObjectId.is_valid(file_id) else None


def open_stream(file_id: str | ObjectId, settings: Settings | None = None) -> Any:
    """An artifact's bytes as a GridFS stream (``InvalidId`` / ``NoFile`` for a bad or unknown id)."""
    return store.bucket(BUCKET, settings).open_download_stream(ObjectId(file_id))


def download(file_id: str, dest: Path, settings: Settings | None = None) -> Path:
    """Write an artifact to ``dest`` (a file path, or a directory to put it in under its own name)."""
    files = store.db(settings)[f"{BUCKET}.files"]
    doc = files.find_one({"_id": ObjectId(file_id)}) if ObjectId.is_valid(file_id) else None
    if doc is None:
        raise ArtifactError(f"no artifact with id {file_id!r}; `mlqueue show JOB_ID` lists a job's artifacts")
    dest = Path(dest)
    if dest.is_dir():
        try:  # a name stored before names were checked must not lead outside ``dest``
            dest = names.inside(dest, names.file_name(doc["metadata"]["name"], "artifact name"))
        except names.UnsafeName as exc:
            raise ArtifactError(f"artifact {file_id} has an unsafe name ({exc}); not written") from None
    try:
        with open(dest, "wb") as fh:
            store.bucket(BUCKET, settings).download_to_stream(doc["_id"], fh)
    except NoFile as exc:
        raise ArtifactError(f"artifact {file_id} is incomplete in the store") from exc
    return dest
