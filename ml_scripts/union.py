"""Stack datasets that share the same columns into one CSV (e.g. monthly exports).

Job fields: ``dataPaths`` (two or more CSVs, set by the worker from ``dataFileNames``),
``writePath`` (output directory) and ``outputFileName`` [``union.csv``].  Column order may
differ between files -- rows are aligned to the first file's order -- but the column *sets*
must match, otherwise the job is refused with status 400 naming, per file, the columns it
lacks or adds.  The stacked file is returned in ``datasets`` with the row counts.

Command line (seed style; outcome JSON is the last stdout line):
``python ml_scripts/union.py WRITE_PATH '{"dataPaths": ["a.csv", "b.csv"], "outputFileName": "all.csv"}'``
or ``python ml_scripts/union.py WRITE_PATH a.csv b.csv [...]``.  Relative paths are
resolved against the working directory; WRITE_PATH is created when missing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, "") or importlib.util.find_spec("ml_scripts") is None:
    # run as `python ml_scripts/X.py`, or loaded from its file without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml_scripts._common import (  # noqa: E402 - needs the path fix above
    JobError,
    Outcome,
    Report,
    dataset_entry,
    output_name,
    parse_json_argument,
    read_csv,
    require_path,
    run_cli,
)

DEFAULT_OUTPUT = "union.csv"


def input_paths(job: dict[str, Any]) -> list[Path]:
    """The validated ``dataPaths``: at least two existing files."""
    raw = job.get("dataPaths")
    if not isinstance(raw, list) or len(raw) < 2:
        raise JobError("dataPaths", "'dataPaths' must list two or more CSV files to stack "
                       "(set dataFileNames on the job so the worker downloads them).")
    return [require_path({"dataPaths": item}, "dataPaths") for item in raw]


def column_mismatches(frames: list[pd.DataFrame], paths: list[Path]) -> list[str]:
    """One description per file whose columns differ from the first file's."""
    reference = list(frames[0].columns)
    problems = []
    for frame, path in zip(frames[1:], paths[1:], strict=True):
        missing = [name for name in reference if name not in frame.columns]
        extra = [name for name in frame.columns if name not in reference]
        if missing or extra:
            problems.append(f"{path.name} lacks {missing} and adds {extra}")
    return problems


def stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of every frame, in input order, with the first frame's column order."""
    order = list(frames[0].columns)
    return pd.concat([frame[order] for frame in frames], ignore_index=True)


def run(job: dict[str, Any], report: Report) -> Outcome:
    """Worker entry point: check the files agree on columns, then write their union."""
    try:
        paths = input_paths(job)
        write_path = require_path(job, "writePath", directory=True)
        name = output_name(job, DEFAULT_OUTPUT)
        frames = [read_csv(path, "dataPaths") for path in paths]
        problems = column_mismatches(frames, paths)
        if problems:
            raise JobError("dataPaths", f"All files must have the same columns as {paths[0].name}: "
                           + "; ".join(problems) + ". Rename or drop those columns (encode.py rem_ prefix).")
    except JobError as exc:
        return exc.outcome()
    union = stack(frames)
    output = write_path / name
    union.to_csv(output, index=False)
    return {
        "status": 200,
        "datasets": [dataset_entry(output)],
        "rows": {"perFile": [{"fileName": path.name, "rows": len(frame)} for path, frame in zip(paths, frames,
                                                                                               strict=True)],
                 "total": len(union)},
        "columns": list(union.columns),
    }


def _job_from_argv(argv: list[str]) -> dict[str, Any]:
    """``union.py WRITE_PATH '<json>'`` or ``union.py WRITE_PATH file1.csv file2.csv ...``."""
    if len(argv) < 2:
        raise JobError("argv", "Usage: union.py WRITE_PATH '<json with dataPaths>' | union.py WRITE_PATH a.csv b.csv")
    write_dir = Path(argv[0]).resolve()
    if argv[1].lstrip().startswith("{"):
        job = parse_json_argument(argv[1], "job")
    else:
        job = {"dataPaths": argv[1:]}
    if isinstance(job.get("dataPaths"), list):
        job["dataPaths"] = [str(Path(str(item)).resolve()) for item in job["dataPaths"]]
    write_dir.mkdir(parents=True, exist_ok=True)
    job["writePath"] = str(write_dir)
    return job


if __name__ == "__main__":
    sys.exit(run_cli(run, _job_from_argv, sys.argv[1:]))
