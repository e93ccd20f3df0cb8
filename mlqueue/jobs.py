"""The Job schema: validated once, here, at the edge; everything inside trusts it.

A Job is stored exactly as the user wrote it (the seeds' documents, misspelt ``depedentVariable``
included) plus ``createdDate``. Only the fields mlqueue itself acts on are typed here; any other
field belongs to the script, which may declare its own pydantic ``Params`` model to have them
checked at submit time too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlqueue import requirements, scripts, seeds
from mlqueue.errors import JobError
from mlqueue.settings import Settings, get_settings


class JobSpec(BaseModel):
    """The fields of a Job that mlqueue reads; all others pass through untouched."""

    model_config = ConfigDict(extra="allow", strict=False)

    scriptName: str = Field(min_length=1, description="script in ml_scripts/ to run, e.g. 'toy' or 'nn.py'")
    projectName: str = Field(default="default", min_length=1)
    timeLimit: float | None = Field(default=None, gt=0, description="seconds before the Job is killed")
    maxAttempts: int | None = Field(default=None, ge=1, le=100, description="runs before giving up")
    sweepId: str | None = None
    pruneSteps: dict[str, Any] | None = Field(default=None, description="set by a sweep: where its pruner decides")
    scriptHash: str | None = Field(default=None, min_length=6, description="pin a pushed script version")
    scriptMode: Literal["module", "subprocess"] | None = None
    scriptArgs: Literal["job", "positional"] | None = None
    requires: dict[str, Any] | None = Field(default=None, description="what a machine needs, see requirements.py")
    worker: str | None = Field(default=None, min_length=1, description="run only on this worker (w1@host or w1)")


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def _explain(exc: ValidationError, where: str) -> str:
    lines = [f"{where}: the Job is not valid:"]
    for err in exc.errors():
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f" (got {json.dumps(given, default=str)[:60]})"
        message = str(err["msg"]).removeprefix("Value error, ")  # a validator's own words need no prefix
        lines.append(f"  - field '{_field_path(err['loc'])}': {message}{shown}")
    lines.append("  Fix those fields and submit again; nothing was stored.")
    return "\n".join(lines)


def validate(document: Any, where: str = "job", settings: Settings | None = None) -> dict[str, Any]:
    """Check one Job document; return it unchanged (as a dict) or raise ``JobError``."""
    settings = settings or get_settings()
    if not isinstance(document, dict):
        raise JobError(f"{where}: a Job must be a JSON object, got {type(document).__name__}")
    try:
        document = seeds.normalised(document)  # the seeds' jobParameters/execution nesting, flattened
        spec = JobSpec.model_validate(document)
    except ValidationError as exc:
        raise JobError(_explain(exc, where)) from None
    except seeds.SeedsShapeError as exc:
        raise JobError(f"{where}: {exc}") from None
    try:
        script = scripts.resolve(spec.scriptName, settings, pinned=spec.scriptHash)
    except scripts.ScriptNotFound as exc:
        raise JobError(f"{where}: field 'scriptName': {exc}") from None
    try:
        requirements.merge(requirements.declared(script.path), spec.requires)
    except requirements.RequirementError as exc:
        raise JobError(f"{where}: {exc}\n  Fix the requirement and submit again; nothing was stored.") from None
    _validate_script_params(script, document, where)
    return dict(document)


def _validate_script_params(script: scripts.Script, document: dict[str, Any], where: str) -> None:
    """Let a script with a ``Params`` model refuse wrong hyperparameters before anything is queued.

    Command-line scripts are never imported here: importing one would run it.
    """
    if document.get("scriptMode") == "subprocess" or not script.has_run_function:
        return
    try:
        module = scripts.load(script)
    except Exception as exc:  # noqa: BLE001 - a broken script file is the user's error to see
        raise JobError(f"{where}: script {script.name!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
    params = getattr(module, "Params", None)
    if params is None:
        return
    try:
        params.model_validate(document)
    except ValidationError as exc:
        raise JobError(_explain(exc, f"{where} (script {script.name})")) from None


def parse_text(text: str, where: str) -> list[Any]:
    """A file holds one Job object or a list of them; malformed JSON names line and column."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobError(
            f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "Jobs are JSON objects like {\"scriptName\": \"toy\", \"x\": 1}; nothing was submitted."
        ) from None
    return data if isinstance(data, list) else [data]


def collect(paths: list[str], stdin_text: str | None = None) -> list[tuple[str, Any]]:
    """Expand files, directories (their *.json) and '-' (stdin) into (where, document) pairs."""
    found: list[tuple[str, Any]] = []
    for raw in paths:
        if raw == "-":
            docs = parse_text(stdin_text or "", "<stdin>")
            found += [(f"<stdin>[{i}]" if len(docs) > 1 else "<stdin>", d) for i, d in enumerate(docs)]
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(path.glob("*.json"))
            if not files:
                raise JobError(f"{path}: directory holds no *.json Job files")
        elif path.is_file():
            files = [path]
        else:
            raise JobError(f"{path}: no such file or directory")
        for file in files:
            docs = parse_text(file.read_text(), str(file))
            found += [(f"{file}[{i}]" if len(docs) > 1 else str(file), d) for i, d in enumerate(docs)]
    return found


def validate_all(items: list[tuple[str, Any]], settings: Settings | None = None) -> list[dict[str, Any]]:
    """Validate every Job before any is stored: one bad Job refuses the whole submission."""
    errors, valid = [], []
    for where, doc in items:
        try:
            valid.append(validate(doc, where, settings))
        except JobError as exc:
            errors.append(str(exc))
    if errors:
        raise JobError("\n".join(errors))
    return valid
