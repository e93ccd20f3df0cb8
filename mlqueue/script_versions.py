"""A script's versions, for editing it in the browser: list them, read one's source, save a new one, diff.

Every save is a new hash-addressed bundle made by ``scripts.push`` (exactly what ``mlqueue scripts push``
stores), so a version is never overwritten: a Job that ran version A keeps A's SHA-256 in its Order and
Outcome, and a Job may pin any version with ``scriptHash``. Saving identical text creates nothing.
The editor edits a bundle's entry file; a folder bundle's other files are carried over unchanged.
"""

from __future__ import annotations

import difflib
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from mlqueue import scripts
from mlqueue.errors import InvalidInput, MlqueueError, NotFound
from mlqueue.settings import Settings, get_settings

MAX_SOURCE_BYTES = 1_000_000
NEW_SCRIPT = '''"""{name}: what it trains and why."""


def run(job, report):
    """Called with the Job's fields; return the Outcome. Printed lines stream live to the dashboard."""
    for epoch in range(1, int(job.get("epochs", 3)) + 1):
        loss = 1.0 / epoch
        print(f"metric: loss={{loss}} epoch={{epoch}}")  # a printed metric line draws the live curve
    return {{"status": 200, "loss": loss}}
'''


class VersionError(MlqueueError):
    """Raised when a script version cannot be read or saved (the message says why)."""


class VersionNotFound(VersionError, NotFound):
    """Raised when a script has no such version (or no versions at all)."""


class VersionRefused(VersionError, InvalidInput):
    """Raised when a save is refused: not a script name, text too long, or not Python; nothing is stored."""


def versions(name: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first: pushed bundles, then the built-in file if there is one.

    The first one is what a Job naming the script runs (pushed bundles win over built-in files).
    """
    settings = settings or get_settings()
    _check_name(name)
    found = [{"name": name, "sha256": d["metadata"]["sha256"], "source": "pushed", "kind": d["metadata"].get("kind"),
              "entry": d["metadata"].get("entry"), "savedDate": d["uploadDate"]}
             for d in scripts.pushed_versions(name, settings)]
    builtin = Path(settings.scripts_dir) / f"{name}.py"
    if builtin.is_file() and not name.startswith("_"):
        text = builtin.read_bytes()
        found.append({"name": name, "sha256": scripts._hash_bytes(text), "source": "builtin", "entry": builtin.name,
                      "kind": "module" if b"\ndef run(" in b"\n" + text else "command-line", "savedDate": None})
    return found


def source(name: str, version: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """One version's entry-file text (default: the version Jobs naming the script run now), and the
    names of all the files in its bundle."""
    settings = settings or get_settings()
    found = versions(name, settings)
    chosen = next((v for v in found if version is None or v["sha256"].startswith(version)), None)
    if chosen is None:
        raise VersionNotFound(f"script {name!r} has no version {version!r}; its versions: "
                           f"{', '.join(v['sha256'][:12] for v in found) or '(none)'}")
    if chosen["source"] == "builtin":
        text = (Path(settings.scripts_dir) / f"{name}.py").read_text(errors="replace")
        files = [f"{name}.py"]
    else:
        bundle = _bundle(name, chosen["sha256"], settings)
        text, files = bundle.read(chosen["entry"]).decode(errors="replace"), sorted(bundle.namelist())
    index = found.index(chosen)
    previous = found[index + 1]["sha256"] if index + 1 < len(found) else None
    return {**chosen, "text": text, "files": files, "previous": previous, "current": index == 0}


def _bundle(name: str, sha256: str, settings: Settings) -> zipfile.ZipFile:
    doc = scripts.pushed_version(name, sha256, settings)
    if doc is None:
        raise VersionNotFound(f"script {name!r} has no pushed version {sha256[:12]}")
    return zipfile.ZipFile(scripts.bundle_bytes(doc["_id"], settings))


def save(name: str, text: str, base: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Store ``text`` as a new version of ``name`` (built on version ``base``'s other files, if a folder).

    Returns the version (``created`` False when the text equals the current version: nothing stored).
    """
    from mlqueue.access import require_write

    require_write("save script versions")
    settings = settings or get_settings()
    _check_name(name)
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise VersionRefused("the script's text is not valid Unicode (a lone surrogate); nothing was saved") from None
    if size > MAX_SOURCE_BYTES:
        raise VersionRefused(f"the script is over {MAX_SOURCE_BYTES // 1000} kB; push large code with "
                           "`mlqueue scripts push FOLDER`")
    _check_syntax(name, text)
    before = versions(name, settings)
    base_version = next((v for v in before if base is None or v["sha256"].startswith(base)), None)
    with tempfile.TemporaryDirectory(prefix="mlqueue-save-") as tmp:
        if base_version and base_version["source"] == "pushed":
            bundle = _bundle(name, base_version["sha256"], settings)
            if len(bundle.namelist()) > 1:  # a folder: keep its other files, replace the entry
                folder = Path(tmp) / name
                scripts._safe_extract(bundle, folder)
                (folder / base_version["entry"]).write_text(text)
                meta = scripts.push(folder, name, settings)
                return _saved(meta, before)
            entry = base_version["entry"]
        else:
            entry = f"{name}.py"
        path = Path(tmp) / entry
        path.write_text(text)
        meta = scripts.push(path, name, settings)
    return _saved(meta, before)


def _saved(meta: dict[str, Any], before: list[dict[str, Any]]) -> dict[str, Any]:
    known = {v["sha256"] for v in before if v["source"] == "pushed"}
    previous = before[0]["sha256"] if before else None
    return {"name": meta["name"], "sha256": meta["sha256"], "kind": meta.get("kind"), "entry": meta.get("entry"),
            "created": meta["sha256"] not in known, "previous": previous if previous != meta["sha256"] else None}


def diff(name: str, version: str | None = None, against: str | None = None,
         settings: Settings | None = None) -> dict[str, Any]:
    """A unified diff of ``version`` (default: current) against ``against`` (default: the one before it)."""
    settings = settings or get_settings()
    new = source(name, version, settings)
    old_hash = against or new["previous"]
    old = source(name, old_hash, settings) if old_hash else {"sha256": None, "text": ""}
    label = lambda v: f"{name}@{v['sha256'][:12]}" if v["sha256"] else "(nothing)"  # noqa: E731
    lines = difflib.unified_diff(old["text"].splitlines(keepends=True), new["text"].splitlines(keepends=True),
                                 fromfile=label(old), tofile=label(new))
    return {"name": name, "from": old["sha256"], "to": new["sha256"], "diff": "".join(lines)}


def job_template(name: str, settings: Settings | None = None, version: str | None = None) -> dict[str, Any]:
    """A Job for the script, prefilled from its ``Params`` model's defaults (required fields as null).

    Only module scripts are imported (as ``mlqueue submit`` does to validate); a command-line script
    would run if imported, so its template is just its name.
    """
    settings = settings or get_settings()
    job: dict[str, Any] = {"scriptName": name}
    try:
        chosen = next((v for v in versions(name, settings) if version is None or v["sha256"].startswith(version)),
                      None)
        if chosen is None:
            return job
        script = scripts.Script(name=name, path=Path(settings.scripts_dir) / f"{name}.py", sha256=chosen["sha256"]) \
            if chosen["source"] == "builtin" else scripts.resolve(name, settings, pinned=chosen["sha256"])
        if not script.has_run_function:
            return job
        params = getattr(scripts.load(script), "Params", None)
    except Exception:  # noqa: BLE001 - a script that does not load yet still gets a template to edit
        return job
    for field, info in getattr(params, "model_fields", {}).items():
        if field in job:
            continue
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if default is None or isinstance(default, str | int | float | bool | list | dict):
            job[field] = default
    return job


def _check_name(name: str) -> None:
    if not scripts.NAME_RE.match(name or "") or name.endswith(".py"):
        raise VersionRefused(f"{name!r} is not a script name: use letters, digits, _ and - (no .py)")


def _check_syntax(name: str, text: str) -> None:
    """Refuse Python that does not even parse, naming the line, before anything is stored."""
    try:
        compile(text, f"{name}.py", "exec")
    except SyntaxError as exc:
        raise VersionRefused(f"{name}.py line {exc.lineno}, column {exc.offset}: {exc.msg}; nothing was saved") \
            from None
    except ValueError as exc:  # e.g. a NUL character
        raise VersionRefused(f"{name}.py cannot be Python: {exc}; nothing was saved") from None
