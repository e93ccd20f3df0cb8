"""Finding, identifying and loading the training scripts Jobs name.

A Job's ``scriptName`` ("toy", "toy.py", "encode") names either a script bundle pushed to the store
with ``mlqueue scripts push`` (so it reaches every worker without copying by hand; a Job may pin one
version with ``scriptHash``), or a module in the local scripts directory (``ml_scripts/``, built in).
Pushed bundles win over built-in files of the same name. Workers cache bundles by content hash.

Two kinds of script run:
- *module* scripts expose ``run(job, report) -> dict`` and run inside the worker process;
- *command-line* scripts (no ``run`` function, or a Job with ``"scriptMode": "subprocess"``) run as
  their own process the way the seeds' scripts did: ``python script.py '<job json>'``, or with
  ``"scriptArgs": "positional"``: ``python script.py dataFileName dataPath/ writePath/ '<execution json>'``
  exactly as the seeds' runner called them (see ``mlqueue.seeds``).
  The last line they print must be one JSON object: the Outcome.

Over 400 lines because which file a Job runs (name, pushed version or built-in, the version its message
carries, the local cache) and how it is run are one story, read top to bottom.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bson import ObjectId

from mlqueue import names, seeds
from mlqueue.errors import MlqueueError, NotFound
from mlqueue.settings import Settings, get_settings

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.py)?$")
BUCKET = "scripts"
ENTRY_NAMES = ("main.py", "__main__.py", "run.py")


class ScriptNotFound(NotFound):
    """The Job names a script this machine does not have."""


@dataclass(frozen=True)
class Script:
    name: str
    path: Path
    sha256: str
    source: str = "builtin"

    @property
    def identity(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256, "source": self.source}

    @property
    def has_run_function(self) -> bool:
        """Decided from the source text, so a command-line script is never imported (it would run)."""
        return re.search(r"^def run\(", self.path.read_text(errors="replace"), re.MULTILINE) is not None


def stem_of(script_name: str) -> str:
    return script_name[:-3] if script_name.endswith(".py") else script_name


def _builtin_names(settings: Settings) -> list[str]:
    return sorted(p.stem for p in Path(settings.scripts_dir).glob("*.py") if not p.stem.startswith("_"))


def available(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every script a Job may name: pushed bundles and built-in files."""
    settings = settings or get_settings()
    found: dict[str, dict[str, Any]] = {}
    for name in _builtin_names(settings):
        path = Path(settings.scripts_dir) / f"{name}.py"
        found[name] = {"name": name, "source": "builtin", "sha256": _hash_bytes(path.read_bytes()),
                       "kind": "module" if Script(name, path, "").has_run_function else "command-line"}
    for bundle in bundles(settings):
        found[bundle["name"]] = {**bundle, "source": "pushed"}
    return [found[k] for k in sorted(found)]


def _hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve(script_name: str, settings: Settings | None = None, pinned: str | None = None,
            carried: Any = None) -> Script:
    """Map a ``scriptName`` (and optional pinned hash) to a file on this machine, or explain.

    ``carried``: the version its message says the Job runs (``version_now`` at submit); used when this
    machine has it (a pushed bundle cached by its hash, fetched by its id if not; a built-in file), so
    the store is not asked which version is newest. Anything else is resolved as without it."""
    settings = settings or get_settings()
    if not NAME_RE.match(script_name or ""):
        raise ScriptNotFound(f"scriptName {script_name!r} is not a script name; use one of: "
                             f"{', '.join(_builtin_names(settings))} or a pushed script")
    stem = stem_of(script_name)
    if isinstance(carried, dict) and carried.get("name") == stem and (known := _carried(carried, pinned, settings)):
        return known
    bundle = _find_bundle(stem, pinned, settings)
    if bundle is not None:
        return _materialize(bundle, settings)
    if pinned:
        raise ScriptNotFound(f"no pushed version {pinned[:12]} of script {stem!r}; `mlqueue scripts ls` lists them")
    path = Path(settings.scripts_dir) / f"{stem}.py"
    if not path.is_file() or stem.startswith("_"):
        raise ScriptNotFound(
            f"unknown script {script_name!r}: not pushed to the store and no {path.name} in {settings.scripts_dir}. "
            f"Available: {', '.join(s['name'] for s in _safe_available(settings)) or '(none)'}; "
            "push your own with `mlqueue scripts push PATH`")
    return Script(name=stem, path=path, sha256=_hash_bytes(path.read_bytes()))


def version_now(script_name: str, pinned: str | None = None, settings: Settings | None = None) -> dict[str, str] | None:
    """The version a Job naming this script runs, as its message carries it (``resolve``'s ``carried``):
    the pushed bundle newest now (or the pinned one), else the built-in file. None if there is none.

    So a Job runs the version that was newest when it was submitted: its Order keeps it, and every
    message sent for it carries it (``orders.enqueue``)."""
    settings = settings or get_settings()
    if not NAME_RE.match(script_name or ""):
        return None
    stem = stem_of(script_name)
    bundle = _find_bundle(stem, pinned, settings)
    if bundle is not None:
        return {"name": stem, "source": "pushed", "sha256": bundle["sha256"], "entry": bundle["entry"],
                "fileId": str(bundle["fileId"])}
    return None if pinned else {"name": stem, "source": "builtin"}


def _carried(version: dict[str, Any], pinned: str | None, settings: Settings) -> Script | None:
    """The script a message's ``version_now`` names, if this machine has it or can fetch it by its id."""
    stem = version["name"]
    if version.get("source") == "builtin":
        path = Path(settings.scripts_dir) / f"{stem}.py"
        if pinned or stem.startswith("_") or not path.is_file():
            return None
        return Script(name=stem, path=path, sha256=_hash_bytes(path.read_bytes()))
    sha, entry, file_id = version.get("sha256"), version.get("entry"), version.get("fileId")
    if not (isinstance(sha, str) and isinstance(entry, str) and isinstance(file_id, str)
            and ObjectId.is_valid(file_id)):
        return None
    if pinned and not sha.startswith(pinned):
        return None
    try:
        return _materialize({"name": stem, "sha256": sha, "entry": entry, "fileId": ObjectId(file_id)}, settings)
    except Exception:  # noqa: BLE001 - e.g. the version was deleted since: resolve it as if nothing was carried
        return None


def _safe_available(settings: Settings) -> list[dict[str, Any]]:
    try:
        return available(settings)
    except Exception:  # noqa: BLE001 - the store may be unreachable; built-ins still help the user
        return [{"name": n} for n in _builtin_names(settings)]


_loaded: dict[tuple[str, str], ModuleType] = {}


def load(script: Script) -> ModuleType:
    """Import a module script, once per content hash: an edited file is re-imported, an unchanged one is not."""
    key = (str(script.path), script.sha256)
    if key not in _loaded:
        _loaded[key] = _import(script)
    return _loaded[key]


def _import(script: Script) -> ModuleType:
    module_name = f"ml_scripts.{script.name}" if script.source == "builtin" else f"mlqueue_scripts.{script.name}"
    spec = importlib.util.spec_from_file_location(module_name, script.path)
    if spec is None or spec.loader is None:
        raise ScriptNotFound(f"cannot import {script.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    if str(script.path.parent) not in sys.path and script.source != "builtin":
        sys.path.insert(0, str(script.path.parent))
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ScriptNotFound(f"{script.path} has no run(job, report) function")
    return module


def runner_for(script: Script, job: dict[str, Any]) -> Any:
    """Something with ``run(job, report)``: the module itself, or a command-line adapter."""
    if job.get("scriptMode") == "subprocess" or not script.has_run_function:
        return CommandLineScript(script)
    return load(script)


# --------------------------------------------------------------------------- pushed bundles


def _bundle_files(settings: Settings | None) -> Any:
    from mlqueue import store

    return store.db(settings)[f"{BUCKET}.files"]


def pushed_versions(name: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The GridFS file documents of every pushed version of ``name``, newest first (``script_versions``)."""
    return list(_bundle_files(settings).find({"metadata.name": name}).sort("uploadDate", -1))


def pushed_version(name: str, sha256: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The GridFS file document of the version of ``name`` with this hash, or None."""
    return _bundle_files(settings).find_one({"metadata.name": name, "metadata.sha256": sha256})


def bundle_bytes(file_id: Any, settings: Settings | None = None) -> io.BytesIO:
    """A pushed bundle's zip bytes, read from the store."""
    from mlqueue import store

    buf = io.BytesIO()
    store.bucket(BUCKET, settings).download_to_stream(file_id, buf)
    return buf


def bundles(settings: Settings | None = None) -> list[dict[str, Any]]:
    """The newest pushed version of each script."""
    settings = settings or get_settings()
    if not settings.mongo_url:
        return []
    newest: dict[str, dict[str, Any]] = {}
    for doc in _bundle_files(settings).find().sort("uploadDate", 1):
        meta = doc["metadata"]
        newest[meta["name"]] = {"name": meta["name"], "sha256": meta["sha256"], "entry": meta["entry"],
                                "kind": meta.get("kind", "command-line"), "uploadDate": doc["uploadDate"],
                                "fileId": str(doc["_id"])}
    return list(newest.values())


def _find_bundle(stem: str, pinned: str | None, settings: Settings) -> dict[str, Any] | None:
    if not settings.mongo_url:
        return None
    query: dict[str, Any] = {"metadata.name": stem}
    if pinned:
        query["metadata.sha256"] = {"$regex": f"^{re.escape(pinned)}"}
    doc = _bundle_files(settings).find_one(query, sort=[("uploadDate", -1)])
    return None if doc is None else {**doc["metadata"], "fileId": doc["_id"]}


def push(path: Path, name: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Store a script file or folder as a bundle (a zip); identical content is stored once."""
    from mlqueue import store
    from mlqueue.access import require_write

    require_write("push scripts")
    settings = settings or get_settings()
    path = Path(path)
    entry, payload = _zip_script(path)
    name = name or (path.stem if path.is_file() else path.name)
    if not NAME_RE.match(name):
        raise ScriptNotFound(f"{name!r} is not a valid script name (letters, digits, _ and -)")
    digest = _hash_bytes(payload)
    current = _find_bundle(name, None, settings)
    if current and current["sha256"] == digest:
        return {k: v for k, v in current.items() if k != "fileId"}
    entry_text = zipfile.ZipFile(io.BytesIO(payload)).read(entry).decode(errors="replace")
    kind = "module" if re.search(r"^def run\(", entry_text, re.MULTILINE) else "command-line"
    meta = {"name": name, "sha256": digest, "entry": entry, "kind": kind}
    store.bucket(BUCKET, settings).upload_from_stream(f"{name}.zip", io.BytesIO(payload), metadata=meta)
    return meta


def bundle_of(path: Path) -> tuple[str, bytes]:
    """The deterministic zip ``push`` stores for a file or folder: (entry file, bytes). Clients send it over HTTP."""
    return _zip_script(path)


def _zip_script(path: Path) -> tuple[str, bytes]:
    """Zip a file or a folder deterministically (same content, same hash); return (entry file, bytes)."""
    if path.is_file():
        files, base, entry = [path], path.parent, path.name
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and _stays_inside(path, p))
        base = path
        names = [p.relative_to(path).as_posix() for p in files]
        entry = next((n for n in ENTRY_NAMES if n in names), None) or next(
            (n for n in names if n == f"{path.name}.py"), None)
        if entry is None:
            raise ScriptNotFound(f"{path}: a script folder needs a main.py (or {path.name}.py) to run")
    else:
        raise ScriptNotFound(f"{path}: no such file or folder")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in files:
            info = zipfile.ZipInfo(file.relative_to(base).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, file.read_bytes())
    return entry, buf.getvalue()


def _stays_inside(folder: Path, file: Path) -> bool:
    """A symlink in a pushed folder pointing elsewhere (``~/.ssh``...) is left out of the bundle."""
    try:
        names.inside(folder, str(file.relative_to(folder)))
    except names.UnsafeName:
        return False
    return True


def _safe_extract(archive: zipfile.ZipFile, into: Path) -> None:
    """Unpack a bundle, refusing any entry that is absolute or climbs out with ``..``."""
    for member in archive.namelist():
        try:
            names.relative_path(member, "bundle entry")
        except names.UnsafeName as exc:
            raise ScriptNotFound(f"script bundle refused: {exc}") from None
    archive.extractall(into)


def _materialize(bundle: dict[str, Any], settings: Settings) -> Script:
    """Unpack a bundle into this machine's cache (once per content hash), never writing outside it."""
    from mlqueue import store

    cache = Path(settings.home) / "cache" / "scripts"
    try:
        root = names.inside(cache, names.file_name(str(bundle["sha256"]), "bundle hash"))
        entry = names.inside(root, names.relative_path(str(bundle["entry"]), "bundle entry"))
    except names.UnsafeName as exc:
        raise ScriptNotFound(f"script bundle {bundle.get('name')!r} refused: {exc}") from None
    if not (root / ".complete").is_file():
        tmp = root.with_name(root.name + f".part-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        buf = io.BytesIO()
        store.bucket(BUCKET, settings).download_to_stream(bundle["fileId"], buf)
        if _hash_bytes(buf.getvalue()) != bundle["sha256"]:
            raise ScriptNotFound(f"script bundle {bundle['name']} arrived corrupted; retry")
        _safe_extract(zipfile.ZipFile(buf), tmp)
        (tmp / ".complete").write_text(bundle["sha256"])
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, root)
    return Script(name=bundle["name"], path=entry, sha256=bundle["sha256"], source="pushed")


# --------------------------------------------------------------------------- command-line scripts


class ScriptOutputError(MlqueueError, RuntimeError):
    """Raised when a command-line script exited badly or did not print a JSON Outcome last."""


class CommandLineScript:
    """Runs a seeds-style script in its own process with the same ``run(job, report)`` interface.

    Output lines are echoed (the worker captures them into the Order's log as they come). Files the
    script leaves in ``writePath`` that the Outcome does not mention are kept: ``*.csv`` as new
    datasets of the Job's project, anything else as artifacts.
    """

    def __init__(self, script: Script) -> None:
        self.script = script

    def argv(self, job: dict[str, Any]) -> list[str]:
        payload = json.dumps({k: v for k, v in job.items()}, default=str)
        if job.get("scriptArgs") == "positional":
            return [sys.executable, "-u", str(self.script.path), *seeds.positional_args(job)]
        return [sys.executable, "-u", str(self.script.path), payload]

    def run(self, job: dict[str, Any], report: Any) -> dict[str, Any]:
        write_path = Path(job.get("writePath") or ".")
        before = set(write_path.iterdir()) if write_path.is_dir() else set()
        proc = subprocess.Popen(self.argv(job), cwd=write_path.parent if write_path.is_dir() else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        stdout_lines: list[str] = []
        stderr_lines: list[str] = []
        readers = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, stdout_lines), daemon=True),
                   threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, stderr_lines), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            while proc.poll() is None:
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for reader in readers:
            reader.join(5)
        outcome = self._outcome(proc.returncode, stdout_lines, stderr_lines)
        return self._with_written_files(outcome, write_path, before)

    def _outcome(self, code: int, out: list[str], err: list[str]) -> dict[str, Any]:
        if code != 0:
            tail = " | ".join(line for line in err[-5:] if line.strip())
            raise ScriptOutputError(f"{self.script.name} exited with code {code}" + (f": {tail}" if tail else ""))
        last = next((line for line in reversed(out) if line.strip()), "")
        try:
            outcome = json.loads(last)
        except json.JSONDecodeError:
            raise ScriptOutputError(
                f"{self.script.name} must print one JSON object as its last line of output (the Outcome); "
                f"its last line was: {last[:200]!r}") from None
        if not isinstance(outcome, dict):
            raise ScriptOutputError(f"{self.script.name}'s last line is JSON but not an object: {last[:200]!r}")
        return outcome

    @staticmethod
    def _with_written_files(outcome: dict[str, Any], write_path: Path, before: set[Path]) -> dict[str, Any]:
        if not write_path.is_dir():
            return outcome
        listed = {str(item.get("path")) for key in ("artifacts", "datasets")
                  for item in outcome.get(key) or [] if isinstance(item, dict)}
        for path in sorted(set(write_path.iterdir()) - before):
            if not path.is_file() or str(path) in listed:
                continue
            if path.suffix == ".csv":
                outcome.setdefault("datasets", []).append({"fileName": path.name, "path": str(path)})
            else:
                outcome.setdefault("artifacts", []).append({"name": path.name, "path": str(path)})
        return outcome


def _pump(source: Any, echo: Any, lines: list[str]) -> None:
    for line in iter(source.readline, ""):
        lines.append(line.rstrip("\n"))
        echo.write(line if line.endswith("\n") else line + "\n")
