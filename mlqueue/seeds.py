"""The seeds' shapes, accepted as they are: their Job nesting and their command-line runner's arguments.

The seeds (the Boss/Worker system mlqueue grew from) wrapped a Job as ``{scriptName, jobParameters:
{dataFileName, dataPath, writePath, execution}}`` and called a command-line script as
``script.py dataFileName dataPath writePath '<execution json>'``, with both paths ending in a separator
so scripts could build ``dataPath + dataFileName``. People arriving from there bring scripts and
clients written for exactly that, so mlqueue meets them here, at the edge, instead of asking them to
change: ``normalised`` flattens the nesting before a Job is validated and stored, and
``positional_args`` rebuilds the seeds' argument list on the worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlqueue.errors import InvalidInput

NESTING = "jobParameters"
EXECUTION = "execution"
# Paths on the seeds' worker machine: meaningless on ours, where the worker fills them in for each run.
MACHINE_LOCAL = ("dataPath", "writePath", "dataPaths", "scriptsPath")
# Bookkeeping the seeds' worker added to a Job it ran; mlqueue has its own (Orders).
SEEDS_BOOKKEEPING = ("callbackAddress", "assignmentId")


class SeedsShapeError(InvalidInput):
    """Raised when a Job uses the seeds' nesting with the wrong types (e.g. ``jobParameters`` not an object)."""


def normalised(document: dict[str, Any]) -> dict[str, Any]:
    """The Job with the seeds' nesting flattened; a Job without it comes back unchanged.

    Fields are taken, lowest priority first, from ``execution`` (the script's own parameters, so a
    module script sees them at top level too), then ``jobParameters``, then the Job's top level. The
    ``execution`` object itself is kept: the positional runner passes it to command-line scripts.
    """
    nested = document.get(NESTING)
    execution = document.get(EXECUTION)
    if nested is None and not isinstance(execution, dict):
        return document
    if nested is not None and not isinstance(nested, dict):
        raise SeedsShapeError(f"field '{NESTING}': must be an object such as "
                              '{"dataFileName": "wine.csv", "execution": {...}}, got ' + type(nested).__name__)
    nested = dict(nested or {})
    execution = nested.pop(EXECUTION, execution)
    if execution is not None and not isinstance(execution, dict):
        raise SeedsShapeError(f"field '{EXECUTION}': must be an object of the script's parameters, "
                              f"got {type(execution).__name__}")
    for local in MACHINE_LOCAL:
        nested.pop(local, None)
    top = {k: v for k, v in document.items() if k not in (NESTING, *SEEDS_BOOKKEEPING)}
    flat = {**(execution or {}), **nested, **top}
    if execution is not None:
        flat[EXECUTION] = execution
    return flat


def is_object_id(text: str) -> bool:
    """Whether ``text`` is a whole Job id as the seeds' clients send it (24 hex digits)."""
    from bson import ObjectId

    return ObjectId.is_valid(text)


def with_separator(path: str) -> str:
    """A directory as the seeds' runner passed it: ending in the platform's separator."""
    return path if not path or path.endswith(os.sep) else path + os.sep


def positional_args(job: dict[str, Any]) -> list[str]:
    """``dataFileName dataPath writePath '<execution json>'``, as the seeds' runner called scripts.

    ``dataPath`` is the directory of the worker's cached copy of the dataset (so ``dataPath +
    dataFileName`` is that file), ``writePath`` the Job's output directory; both end in ``os.sep``.
    The last argument is the Job's ``execution`` object only, ``{}`` when it has none.
    """
    data_path = job.get("dataPath")
    if data_path:
        data_dir, data_name = str(Path(data_path).parent), Path(data_path).name
    else:
        data_dir, data_name = "", str(job.get("dataFileName") or "")
    execution = job.get(EXECUTION)
    return [data_name, with_separator(data_dir), with_separator(str(job.get("writePath") or ".")),
            json.dumps(execution if execution is not None else {}, default=str)]
