"""Plumbing shared by the job scripts.

The worker calls ``run(job, report)`` in-process, while the seed-style command line
prints the outcome as JSON.  Both paths need the same guarantees: a 400 outcome for a
bad job instead of a traceback, plain-JSON numbers (the outcome is stored in MongoDB and
sent over Celery), and exactly one JSON object on the last stdout line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ml_scripts._json_safe import json_safe

Outcome = dict[str, Any]
Report = Callable[..., None]
RunFunction = Callable[[dict[str, Any], Report], Outcome]


class JobError(ValueError):
    """A problem with the job the user can fix; becomes a status-400 outcome.

    Not ``mlqueue.errors.JobError`` (a Job refused at submit, before it is stored): this one is raised
    inside a running script, and ``ml_scripts`` stays importable without mlqueue (the seed-style
    command line runs a script alone), so it cannot subclass mlqueue's hierarchy.

    Raised instead of returned so deeply nested helpers can refuse a job without
    threading error values back up through every caller.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def outcome(self) -> Outcome:
        """The status-400 outcome the worker stores for this problem."""
        return bad_request(self.message, self.field)


def noop_report(**_metrics: Any) -> None:
    """A ``report`` that discards intermediate metrics (tests and the command line)."""


def bad_request(message: str, field: str) -> Outcome:
    """Outcome for a job the script refuses to run; ``field`` names the culprit."""
    return {"status": 400, "message": message, "field": field}


def require_path(job: Mapping[str, Any], field: str, *, directory: bool = False) -> Path:
    """The existing file (or directory) named by ``job[field]``, or a JobError saying how to fix it."""
    raw = job.get(field)
    if not isinstance(raw, (str, Path)) or not str(raw):
        kind = "directory" if directory else "CSV file"
        raise JobError(field, f"'{field}' is missing: set it to the absolute path of the {kind} to use.")
    path = Path(raw)
    if directory and not path.is_dir():
        raise JobError(field, f"'{field}' {str(path)!r} is not an existing directory; create it first.")
    if not directory and not path.is_file():
        raise JobError(field, f"'{field}' {str(path)!r} does not exist; check the dataset was downloaded.")
    return path


def read_csv(path: Path, field: str) -> pd.DataFrame:
    """Load a CSV, turning unreadable or empty files into a JobError naming ``field``."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise JobError(field, f"Could not read {path.name} as CSV ({exc}); upload a comma-separated file.") from exc
    if frame.empty:
        raise JobError(field, f"{path.name} has no data rows; upload a CSV with a header and rows.")
    return frame


def output_name(job: Mapping[str, Any], default: str) -> str:
    """The validated ``outputFileName``: a plain CSV file name, never a path."""
    name = job.get("outputFileName") or default
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".csv"):
        raise JobError("outputFileName", f"'outputFileName' must be a plain file name ending in .csv, got {name!r}.")
    return name


def dataset_entry(path: Path) -> dict[str, str]:
    """One item of the outcome's ``datasets`` list, in the shape the worker uploads."""
    return {"fileName": path.name, "path": str(path.resolve())}


def parse_json_argument(text: str, what: str) -> dict[str, Any]:
    """Parse a command-line JSON object, raising JobError (not a traceback) on bad input."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobError(what, f"The {what} argument is not valid JSON: {exc}.") from exc
    if not isinstance(value, dict):
        raise JobError(what, f"The {what} argument must be a JSON object, got {type(value).__name__}.")
    return value


def print_outcome(outcome: Outcome) -> None:
    """Print the outcome as one JSON line; the worker and the seeds parse the last line."""
    sys.stdout.flush()
    print(json.dumps(json_safe(outcome), allow_nan=False), flush=True)


def run_cli(run: RunFunction, build_job: Callable[[list[str]], dict[str, Any]], argv: list[str]) -> int:
    """Seed-style entry point: build the job from argv, run it, print the outcome last.

    Exit 0 for 200 and 400 outcomes (a refused job is an answer, not a crash); exit 1 only
    for unexpected errors, which are still printed as a JSON outcome with status 500.
    """
    try:
        outcome = run(build_job(argv), noop_report)
    except JobError as exc:
        outcome = exc.outcome()
    except Exception as exc:  # noqa: BLE001 - the CLI must always print an outcome
        outcome = {"status": 500, "message": f"{type(exc).__name__}: {exc}"}
    print_outcome(outcome)
    return 0 if outcome.get("status") in (200, 400) else 1
