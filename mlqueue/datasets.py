"""Datasets that reach every worker: stored once in GridFS, cached on each machine by content hash.

A Job names its data by ``projectName`` + ``dataFileName`` (or a list ``dataFileNames``). Pushing a
file with the same name again makes a new version; Jobs use the latest. Workers keep a cache keyed
by SHA-256 under ``HOME/cache/datasets``: the second Job on the same data reads the local copy, and a
cached file whose size or modification time changed since it was verified is hashed again and
re-fetched if it no longer matches (a partial download is never visible: files are renamed into
place only once complete). So a cache hit costs one indexed read (the newest version's hash) and a
``stat``, whatever the file's size: bench/dataset_cache.py.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from gridfs.errors import NoFile

from mlqueue import names, store
from mlqueue.errors import JobError, NotFound
from mlqueue.settings import Settings, get_settings

BUCKET = "datasets"
CHUNK = 1 << 20


class DatasetError(NotFound):
    """A dataset is missing or unreadable; the message says how to provide it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _key(project: str, name: str) -> str:
    return f"{project}/{name}"


def check_names(project: str, name: str) -> None:
    """Refuse a project or dataset name that is not one plain file name (it becomes a path on workers)."""
    try:
        names.file_name(project, "project name")
        names.file_name(name, "dataset name")
    except names.UnsafeName as exc:
        raise DatasetError(f"{exc}; nothing was stored") from None


def push(path: Path, project: str, name: str | None = None, source: str = "push",
         settings: Settings | None = None) -> dict[str, Any]:
    """Store a file as dataset ``project/name``; pushing identical content again stores nothing."""
    from mlqueue.access import require_write

    require_write("push datasets")
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    name = name or path.name
    check_names(project, name)
    digest = sha256_of(path)
    current = latest(project, name, settings)
    if current and current["sha256"] == digest:
        return current
    meta = {"project": project, "name": name, "sha256": digest, "size": path.stat().st_size, "source": source}
    with open(path, "rb") as fh:
        store.bucket(BUCKET, settings).upload_from_stream(_key(project, name), fh, metadata=meta)
    return {**meta, "version": (current or {}).get("version", 0) + 1}


def _describe(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    return {"project": meta.get("project"), "name": meta.get("name"), "sha256": meta.get("sha256"),
            "size": doc.get("length"), "uploadDate": doc.get("uploadDate"), "fileId": str(doc["_id"]),
            "source": meta.get("source")}


def newest(project: str, name: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The newest version of a dataset without its version number: one indexed read, what a cache hit costs."""
    files = store.db(settings)[f"{BUCKET}.files"]
    doc = files.find_one({"filename": _key(project, name)}, sort=[("uploadDate", -1)])
    return None if doc is None else _describe(doc)


def latest(project: str, name: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The newest version of a dataset, with its version number (how many were pushed), or None."""
    doc = newest(project, name, settings)
    if doc is None:
        return None
    versions = store.db(settings)[f"{BUCKET}.files"].count_documents({"filename": _key(project, name)})
    return {**doc, "version": versions}


def listing(project: str | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every dataset's newest version (optionally of one project), sorted by project and name."""
    files = store.db(settings)[f"{BUCKET}.files"]
    query = {"metadata.project": project} if project else {}
    newest: dict[str, dict[str, Any]] = {}
    for doc in files.find(query).sort("uploadDate", 1):
        newest[doc["filename"]] = _describe(doc)
    return [newest[k] for k in sorted(newest)]


def require(jobs: list[dict[str, Any]], settings: Settings | None = None) -> None:
    """Refuse Jobs whose datasets are not in the store (``JobError``), before anything is queued."""
    missing = []
    for job in jobs:
        project = job.get("projectName", "default")
        for name in data_names(job):
            try:
                check_names(project, name)
            except DatasetError as exc:
                raise JobError(f"{exc} (in the Job's projectName/dataFileName)") from None
            if newest(project, name, settings) is None:
                missing.append(f"{project}/{name}")
    if missing:
        listed = ", ".join(dict.fromkeys(missing))
        raise JobError(f"dataset not found in the store: {listed}. Upload it first with "
                       f"`mlqueue data push FILE --project PROJECT` (see `mlqueue data ls`); nothing was submitted.")


def data_names(job: dict[str, Any]) -> list[str]:
    """The dataset names a Job uses (``dataFileName`` and/or ``dataFileNames``)."""
    found = []
    if isinstance(job.get("dataFileName"), str) and job["dataFileName"]:
        found.append(job["dataFileName"])
    if isinstance(job.get("dataFileNames"), list):
        found += [n for n in job["dataFileNames"] if isinstance(n, str)]
    return found


class Cache:
    """A machine's local copies of datasets, addressed by content hash."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.root = Path(self.settings.home) / "cache" / "datasets"
        self.hits = 0
        self.misses = 0

    def path_for(self, project: str, name: str) -> Path:
        """A verified local file with the dataset's newest content (downloaded only when needed).

        The file lives at ``cache/datasets/SHA256/NAME``; a name or hash that would lead elsewhere (one
        stored before names were checked) is refused, so no worker ever writes outside its cache.
        """
        check_names(project, name)
        meta = newest(project, name, self.settings)  # asked every time: a dataset pushed again is used at once
        if meta is None:
            raise DatasetError(f"dataset {project}/{name} is not in the store; push it with "
                               f"`mlqueue data push {name} --project {project}`")
        try:
            target = names.inside(self.root, names.file_name(str(meta["sha256"]), "dataset hash"), name)
        except names.UnsafeName as exc:
            raise DatasetError(f"dataset {project}/{name} is stored with an unsafe name or hash ({exc})") from None
        if self._verified(target, meta["sha256"]):
            self.hits += 1
            return target
        self.misses += 1
        self._download(meta, target)
        return target

    def _verified(self, target: Path, digest: str) -> bool:
        stamp = target.with_name(target.name + ".verified")
        if not target.is_file():
            return False
        state = f"{target.stat().st_size}:{target.stat().st_mtime_ns}"
        if stamp.is_file() and stamp.read_text() == state:
            return True
        if sha256_of(target) != digest:
            return False
        stamp.write_text(state)
        return True

    def _download(self, meta: dict[str, Any], target: Path) -> None:
        from bson import ObjectId

        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as fh:
                store.bucket(BUCKET, self.settings).download_to_stream(ObjectId(meta["fileId"]), fh)
            if sha256_of(Path(tmp)) != meta["sha256"]:
                raise DatasetError(f"dataset {meta['project']}/{meta['name']} arrived corrupted; retry the job")
            os.replace(tmp, target)
        except NoFile as exc:
            raise DatasetError(f"dataset {meta['project']}/{meta['name']} vanished from the store") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        target.with_name(target.name + ".verified").write_text(
            f"{target.stat().st_size}:{target.stat().st_mtime_ns}")


def open_stream(file_id: str, settings: Settings | None = None) -> Any:
    """A stored dataset file's bytes (``fileId`` of its description) as a GridFS stream."""
    from bson import ObjectId

    return store.bucket(BUCKET, settings).open_download_stream(ObjectId(file_id))


def pull(project: str, name: str, dest: Path, settings: Settings | None = None) -> Path:
    """Download a dataset's newest version to ``dest`` (a file path or an existing directory)."""
    check_names(project, name)
    meta = newest(project, name, settings)
    if meta is None:
        raise DatasetError(f"dataset {project}/{name} is not in the store (see `mlqueue data ls`)")
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / name
    with open(dest, "wb") as fh:
        from bson import ObjectId

        store.bucket(BUCKET, settings).download_to_stream(ObjectId(meta["fileId"]), fh)
    return dest
