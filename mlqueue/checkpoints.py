"""A Job's last checkpoint, kept in the HQ store so an interrupted attempt resumes on any machine.

A script saves with ``report(epoch=N, ..., checkpoint=PATH)`` (a file, or a folder that is zipped;
a command-line script prints ``metric: epoch=N checkpoint=PATH``, see ``metric_lines``);
the next attempt of the Job — on whichever worker takes it — gets the restored copy as ``resumeFrom``
and its epoch as ``resumeEpoch``.

Atomic by construction: the bytes are uploaded to GridFS completely first, and only then does one
conditional update of the Order (``orders.set_checkpoint``: "only if this attempt still holds it")
flip its ``checkpoint`` pointer to the new file. A crash mid-upload leaves an orphan nobody points at
(removed by the next save), never a half checkpoint; a late save from an attempt that lost the Order
is refused and its file removed. Only the pointed-to file is kept per Job: every save removes the
older ones; a Job that succeeds removes its last one, and the reapers remove those of Jobs that ended
otherwise (cancelled, failed, given up).
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

from mlqueue import orders, store
from mlqueue.settings import Settings
from mlqueue.store import orders as order_store

log = logging.getLogger(__name__)
BUCKET = "checkpoints"


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:   # model weights do not compress: store
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


def prepare(job: dict[str, Any], order: dict[str, Any], workdir: Path, settings: Settings | None = None
            ) -> dict[str, Any] | None:
    """Give the script its ``checkpointDir`` and, when the Job has a checkpoint, ``resumeFrom``/``resumeEpoch``.

    Returns the restored checkpoint's pointer (None: start from scratch) and notes the resume in the
    Order's history.
    """
    job["checkpointDir"] = str(workdir / "checkpoint")
    Path(job["checkpointDir"]).mkdir(parents=True, exist_ok=True)
    restored = restore(order["jobId"], workdir / "resume", settings, order)
    job["resumeFrom"] = restored["path"] if restored else None
    job["resumeEpoch"] = restored.get("step") if restored else None
    if restored:
        orders.note(order["jobId"], order.get("worker") or "?", describe(restored, order["attempts"]), settings)
    return restored


def save(order: dict[str, Any], path: Path | str, step: int | None, settings: Settings | None = None,
         resumed_step: int | None = None) -> dict[str, Any] | None:
    """Upload ``path`` as this attempt's newest checkpoint. None if the attempt no longer holds the Order.

    A checkpoint past the one the attempt resumed from is progress: the attempt then does not count
    toward ``maxAttempts`` if its machine goes away.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; save it before report(checkpoint=...)")
    folder = path.is_dir()
    payload = _zip_folder(path) if folder else path.read_bytes()
    meta = {"jobId": order["jobId"], "attempt": order["attempts"], "step": step, "name": path.name,
            "folder": folder, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    bucket = store.bucket(BUCKET, settings)
    file_id = bucket.upload_from_stream(f"{order['jobId']}/{path.name}", io.BytesIO(payload), metadata=meta)
    pointer = {**meta, "fileId": file_id, "at": orders.now()}
    progress = step is None or resumed_step is None or step > resumed_step
    if not orders.set_checkpoint(order, pointer, progress, settings):
        bucket.delete(file_id)
        return None
    _remove_others(order["jobId"], file_id, settings)
    return pointer


def _remove_others(job_id: str, keep: Any, settings: Settings | None) -> None:
    """Older checkpoints of the Job, and orphans of uploads that never got pointed at."""
    bucket = store.bucket(BUCKET, settings)
    for doc in store.db(settings)[f"{BUCKET}.files"].find({"metadata.jobId": job_id, "_id": {"$ne": keep}},
                                                          {"_id": 1}):
        try:
            bucket.delete(doc["_id"])
        except Exception:  # noqa: BLE001 - another save removed it first
            pass


def restore(job_id: str, into: Path, settings: Settings | None = None,
            order: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Fetch the Job's checkpoint into ``into``; its pointer plus ``path``, or None when there is none.

    ``order``: the Order as this attempt just claimed it (only a holding attempt moves the pointer, so
    it is current), which spares a read. A file whose bytes do not match the pointer's hash is not used
    (the attempt starts from scratch).
    """
    if order is None:
        order = order_store.by_job(job_id, settings, {"checkpoint": 1})
    pointer = (order or {}).get("checkpoint")
    if not pointer:
        return None
    buf = io.BytesIO()
    try:
        store.bucket(BUCKET, settings).download_to_stream(pointer["fileId"], buf)
    except Exception as exc:  # noqa: BLE001 - a missing checkpoint costs progress, never the Job
        log.warning("checkpoint of job %s could not be fetched (%s); starting from scratch", job_id, exc)
        return None
    data = buf.getvalue()
    if hashlib.sha256(data).hexdigest() != pointer["sha256"]:
        log.warning("checkpoint of job %s is corrupt; starting from scratch", job_id)
        return None
    into.mkdir(parents=True, exist_ok=True)
    target = into / pointer["name"]
    shutil.rmtree(target, ignore_errors=True)
    if pointer.get("folder"):
        zipfile.ZipFile(io.BytesIO(data)).extractall(target)
    else:
        target.write_bytes(data)
    return {**pointer, "path": str(target)}


def remove(job_id: str, settings: Settings | None = None) -> None:
    """Forget a Job's checkpoints (it ended well: nothing will resume from them)."""
    _remove_others(job_id, None, settings)


def remove_ended(settings: Settings | None = None) -> int:
    """Remove the checkpoints of Jobs that ended (cancelled, failed, lost...): nothing resumes from them.

    Run by every reaper; two cheap reads when there is nothing to do.
    """
    job_ids = store.db(settings)[f"{BUCKET}.files"].distinct("metadata.jobId")
    if not job_ids:
        return 0
    ended = order_store.job_ids_in_among(orders.FINAL, job_ids, settings)
    for job_id in ended:
        remove(job_id, settings)
    return len(ended)


def describe(pointer: dict[str, Any], attempt: int) -> str:
    """The words the history and the Outcome use for a resumed attempt."""
    return f"resumed from epoch {pointer.get('step')} (attempt {attempt})"
