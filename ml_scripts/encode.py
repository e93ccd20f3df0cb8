"""Data preparation: turn a raw CSV into the all-numeric table nn.py trains on.

Each column gets a type, shown by the prefix of the column(s) it becomes:

* ``con_`` continuous -- numbers (or text that is at least 90% numbers).  Blanks are filled
  with the column median.
* ``cat_`` categorical -- anything else.  Blanks become the level ``"missing"``, then the
  column is dummy-encoded with the first level dropped: ``cat_<name>_<level>`` 0/1 columns.
* ``date_`` date -- text of which at least 90% parses as dates.  Blanks are filled with the
  median date; the column becomes the numbers ``date_<name>_days`` (days since 1970-01-01),
  ``_year``, ``_month`` and ``_dayofweek``.

A column whose name already starts with ``con_``, ``cat_`` or ``date_`` keeps that declared
type (a numeric ``date_`` column is taken as already encoded and passed through); a name
starting with ``rem_`` removes the column, as does listing it in ``columnsToRemove``.

Job fields: ``dataPath`` (the CSV, set by the worker), ``writePath`` (output directory),
``columnsToRemove`` [], ``unreasonableIncreaseThreshold`` [3] -- refuse (status 400) when
the encoded table would have more than this many times the input's columns, the usual
sign that an id or free-text column is being dummy-encoded -- and ``outputFileName``
[``<input stem>_encoded.csv``].  The file is returned in ``datasets``.

Command line (seed style):
``python ml_scripts/encode.py dataFileName dataPath writePath ['<json>']`` where dataPath is
the directory holding dataFileName and the optional JSON holds the other fields.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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

TYPE_PREFIXES = {"con_": "continuous", "cat_": "categorical", "date_": "date"}
REMOVE_PREFIX = "rem_"
DEFAULT_THRESHOLD = 3.0
PARSE_SHARE = 0.9
MISSING_LEVEL = "missing"
DATE_PARTS = ("days", "year", "month", "dayofweek")
SUSPECTS_SHOWN = 3


@dataclass(frozen=True)
class ColumnPlan:
    """How one input column will be encoded, decided before any data is transformed."""

    source: str
    kind: str
    base: str
    outputs: tuple[str, ...]


def clean_name(name: str) -> str:
    """A header-safe base name: runs of spaces/punctuation become one underscore."""
    return re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_") or "column"


def declared_type(name: str) -> str | None:
    """The type a prefix declares ("removed" for rem_), or None for an un-prefixed name."""
    if name.startswith(REMOVE_PREFIX):
        return "removed"
    return next((kind for prefix, kind in TYPE_PREFIXES.items() if name.startswith(prefix)), None)


def _strip_prefix(name: str) -> str:
    """Name without its type prefix, so ``con_x`` does not become ``con_con_x``."""
    for prefix in TYPE_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _mostly(parsed: pd.Series, original: pd.Series) -> bool:
    """Whether at least PARSE_SHARE of the non-blank values survived parsing."""
    present = original.notna().sum()
    return bool(present) and parsed.notna().sum() >= PARSE_SHARE * present


def _parse_dates(series: pd.Series) -> pd.Series:
    """Dates from text, unparseable values as NaT (mixed formats allowed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_datetime(series, errors="coerce", format="mixed")


def detect_type(series: pd.Series) -> str:
    """Guess continuous / date / categorical for an un-prefixed column."""
    if pd.api.types.is_bool_dtype(series):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series):
        return "continuous"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date"
    text = series.astype("string").str.strip().replace("", pd.NA)
    if _mostly(pd.to_numeric(text, errors="coerce"), text):
        return "continuous"
    if _mostly(_parse_dates(text), text):
        return "date"
    return "categorical"


def _categorical_levels(series: pd.Series) -> list[str]:
    """Sorted levels after blank filling; the first one is dropped by the dummy encoding."""
    return sorted(_category_text(series).unique().tolist())


def _blanks(series: pd.Series) -> pd.Series:
    """True where a cell is empty or whitespace only."""
    text = series.astype("string").str.strip()
    return (text.isna() | (text == "")).fillna(True).astype(bool)


def _category_text(series: pd.Series) -> pd.Series:
    """Categories as text with blanks turned into the explicit level "missing"."""
    text = series.astype("string").str.strip()
    return text.mask(_blanks(series), MISSING_LEVEL).astype(str)


def plan_column(name: str, series: pd.Series) -> ColumnPlan:
    """Decide type and output column names for one kept input column."""
    kind = declared_type(name) or detect_type(series)
    base = clean_name(_strip_prefix(name))
    if kind == "continuous":
        return ColumnPlan(name, kind, base, (f"con_{base}",))
    if kind == "date":
        if pd.api.types.is_numeric_dtype(series):
            return ColumnPlan(name, "date (already encoded)", base, (f"date_{base}",))
        return ColumnPlan(name, kind, base, tuple(f"date_{base}_{part}" for part in DATE_PARTS))
    levels = _categorical_levels(series)
    return ColumnPlan(name, kind, base, tuple(f"cat_{base}_{level}" for level in levels[1:]))


def _removal_list(job: dict[str, Any], columns: list[str]) -> list[str]:
    """Validated ``columnsToRemove`` plus every ``rem_`` column."""
    requested = job.get("columnsToRemove") or []
    if not isinstance(requested, list) or not all(isinstance(name, str) for name in requested):
        raise JobError("columnsToRemove", "'columnsToRemove' must be a list of column names.")
    unknown = [name for name in requested if name not in columns]
    if unknown:
        raise JobError("columnsToRemove", f"columnsToRemove names {unknown}, which are not in the data; "
                       f"columns are: {', '.join(columns[:30])}.")
    return [name for name in columns if name in requested or name.startswith(REMOVE_PREFIX)]


def _threshold(job: dict[str, Any]) -> float:
    """``unreasonableIncreaseThreshold``: a positive ratio of output to input columns."""
    value = job.get("unreasonableIncreaseThreshold", DEFAULT_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise JobError("unreasonableIncreaseThreshold",
                       f"'unreasonableIncreaseThreshold' must be a positive number, got {value!r}.")
    return float(value)


def _check_growth(plans: list[ColumnPlan], threshold: float) -> float:
    """Refuse an encoding that multiplies the column count, naming the likely id columns."""
    before = max(1, len(plans))
    after = sum(len(plan.outputs) for plan in plans)
    ratio = after / before
    if ratio > threshold:
        suspects = sorted((p for p in plans if p.kind == "categorical"), key=lambda p: -len(p.outputs))
        named = ", ".join(f"{p.source!r} ({len(p.outputs) + 1} distinct values)" for p in suspects[:SUSPECTS_SHOWN])
        example = suspects[0].source if suspects else "id"
        raise JobError("columnsToRemove", f"Encoding would grow the table from {before} to {after} columns "
                       f"(x{ratio:.1f}, limit x{threshold:g}). A unique id or free-text column was probably "
                       f"included: {named}. Rename it with the rem_ prefix (e.g. rem_{example}) or list it in "
                       "columnsToRemove; raise unreasonableIncreaseThreshold only if the categories are genuine.")
    return ratio


def _check_unique_outputs(plans: list[ColumnPlan]) -> None:
    """Two inputs such as ``price`` and ``con_price`` must not collide in the output."""
    seen: dict[str, str] = {}
    for plan in plans:
        for output in plan.outputs:
            if output in seen:
                raise JobError("dataPath", f"Columns {seen[output]!r} and {plan.source!r} both encode to "
                               f"{output!r}; rename or remove one of them.")
            seen[output] = plan.source


def _encode_continuous(series: pd.Series, plan: ColumnPlan) -> tuple[pd.DataFrame, int]:
    """Numbers with blanks (and unparseable text) replaced by the median."""
    values = pd.to_numeric(series, errors="coerce")
    blanks = int(values.isna().sum())
    median = values.median()
    filled = values.fillna(0.0 if pd.isna(median) else median)
    return pd.DataFrame({plan.outputs[0]: filled}), blanks


def _encode_categorical(series: pd.Series, plan: ColumnPlan) -> tuple[pd.DataFrame, int]:
    """Drop-first dummy columns; blanks count as their own "missing" level."""
    text = _category_text(series)
    blanks = int(_blanks(series).sum())
    levels = _categorical_levels(series)
    dummies = {f"cat_{plan.base}_{level}": (text == level).astype(int) for level in levels[1:]}
    return pd.DataFrame(dummies, index=series.index), blanks


def _encode_date(series: pd.Series, plan: ColumnPlan) -> tuple[pd.DataFrame, int]:
    """Dates as day count, year, month and weekday, blanks filled with the median date."""
    if plan.kind == "date (already encoded)":
        return pd.DataFrame({plan.outputs[0]: series.fillna(series.median())}), int(series.isna().sum())
    dates = _parse_dates(series)
    blanks = int(dates.isna().sum())
    dates = dates.fillna(dates.median() if dates.notna().any() else pd.Timestamp(0))
    days = (dates - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    parts = {"days": days.astype(float), "year": dates.dt.year, "month": dates.dt.month,
             "dayofweek": dates.dt.day_of_week}
    return pd.DataFrame({f"date_{plan.base}_{name}": values for name, values in parts.items()}), blanks


ENCODERS = {"continuous": _encode_continuous, "categorical": _encode_categorical, "date": _encode_date,
            "date (already encoded)": _encode_date}


def encode_frame(frame: pd.DataFrame, plans: list[ColumnPlan]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the plans; returns the encoded table and blanks filled per input column."""
    pieces, filled = [], {}
    for plan in plans:
        encoded, blanks = ENCODERS[plan.kind](frame[plan.source], plan)
        pieces.append(encoded)
        if blanks:
            filled[plan.source] = blanks
    encoded = pd.concat(pieces, axis=1) if pieces else pd.DataFrame(index=frame.index)
    return encoded, filled


def _default_output(job: dict[str, Any], data_path: Path) -> str:
    """``<stem>_encoded.csv`` from the job's dataFileName (the worker's copy may be renamed)."""
    stem = Path(str(job.get("dataFileName") or data_path.name)).stem
    return f"{stem}_encoded.csv"


def run(job: dict[str, Any], report: Report) -> Outcome:
    """Worker entry point: type, fill and encode the columns, write the new dataset."""
    try:
        data_path = require_path(job, "dataPath")
        write_path = require_path(job, "writePath", directory=True)
        name = output_name(job, _default_output(job, data_path))
        threshold = _threshold(job)
        frame = read_csv(data_path, "dataPath")
        removed = _removal_list(job, list(frame.columns))
        plans = [plan_column(column, frame[column]) for column in frame.columns if column not in removed]
        _check_unique_outputs(plans)
        ratio = _check_growth(plans, threshold)
    except JobError as exc:
        return exc.outcome()
    encoded, filled = encode_frame(frame, plans)
    output = write_path / name
    encoded.to_csv(output, index=False)
    return {
        "status": 200,
        "datasets": [dataset_entry(output)],
        "rows": len(encoded),
        "columnTypes": {plan.source: plan.kind for plan in plans} | {column: "removed" for column in removed},
        "columnsBefore": list(frame.columns),
        "columnsAfter": list(encoded.columns),
        "columnCounts": {"before": frame.shape[1], "after": encoded.shape[1]},
        "removedColumns": removed,
        "filledBlanks": filled,
        "increaseRatio": float(np.round(ratio, 4)),
    }


def _job_from_argv(argv: list[str]) -> dict[str, Any]:
    """``encode.py dataFileName dataPath writePath ['<json>']`` (seed argument order)."""
    if len(argv) not in (3, 4):
        raise JobError("argv", "Usage: encode.py dataFileName dataPath writePath ['<json>']")
    file_name, data_dir, write_dir = argv[:3]
    job = parse_json_argument(argv[3], "execution") if len(argv) == 4 else {}
    Path(write_dir).mkdir(parents=True, exist_ok=True)
    job.update(dataFileName=file_name, dataPath=str((Path(data_dir) / file_name).resolve()),
               writePath=str(Path(write_dir).resolve()))
    return job


if __name__ == "__main__":
    sys.exit(run_cli(run, _job_from_argv, sys.argv[1:]))
