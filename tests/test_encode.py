"""ml_scripts/encode.py: type detection, prefixes, blanks, dummies and the column-growth guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml_scripts import encode
from ml_scripts._common import noop_report

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "raw.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def make_job(tmp_path: Path, data: Path, **extra: Any) -> dict[str, Any]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return {"scriptName": "encode.py", "dataFileName": data.name, "dataPath": str(data), "writePath": str(out),
            **extra}


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Twelve rows: a number, a category with a blank, dates with a blank, numbers stored as text."""
    frame = pd.DataFrame({
        "price": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
        "colour": ["red", "blue", "green", "red", None, "blue", "red", "green", "red", "blue", "red", "green"],
        "sold": ["2020-01-01", "2020-01-02", "2020-01-03", None, "2020-02-01", "2020-02-02",
                 "2020-03-01", "2020-03-02", "2020-03-03", "2020-04-01", "2020-04-02", "2020-04-03"],
        "weight": ["1.5", "2.5", "3.5", "4.5", "5.5", "6.5", "7.5", "8.5", "9.5", "10.5", "11.5", "12.5"],
    })
    return write(tmp_path, frame)


def encoded(outcome: dict[str, Any]) -> pd.DataFrame:
    assert outcome["status"] == 200, outcome
    return pd.read_csv(outcome["datasets"][0]["path"])


def test_detects_types_and_prefixes_columns(tmp_path: Path, raw: Path) -> None:
    outcome = encode.run(make_job(tmp_path, raw), noop_report)
    assert outcome["columnTypes"] == {"price": "continuous", "colour": "categorical", "sold": "date",
                                      "weight": "continuous"}
    frame = encoded(outcome)
    assert list(frame.columns) == outcome["columnsAfter"]
    assert {"con_price", "con_weight", "date_sold_days", "date_sold_year", "date_sold_month",
            "date_sold_dayofweek"} <= set(frame.columns)
    assert all(name.startswith(("con_", "cat_", "date_")) for name in frame.columns)
    assert all(pd.api.types.is_numeric_dtype(dtype) for dtype in frame.dtypes)
    assert outcome["columnsBefore"] == ["price", "colour", "sold", "weight"]
    assert outcome["columnCounts"] == {"before": 4, "after": len(frame.columns)}


def test_dummies_drop_first_level_and_blank_is_its_own_level(tmp_path: Path, raw: Path) -> None:
    frame = encoded(encode.run(make_job(tmp_path, raw), noop_report))
    dummies = sorted(name for name in frame.columns if name.startswith("cat_colour_"))
    # levels blue, green, missing, red -> "blue" (first) is dropped
    assert dummies == ["cat_colour_green", "cat_colour_missing", "cat_colour_red"]
    assert frame.loc[4, "cat_colour_missing"] == 1 and frame.loc[4, ["cat_colour_green", "cat_colour_red"]].sum() == 0
    assert frame.loc[1, dummies].sum() == 0  # a blue row is all zeros


def test_blanks_are_filled_with_median(tmp_path: Path, raw: Path) -> None:
    outcome = encode.run(make_job(tmp_path, raw), noop_report)
    frame = encoded(outcome)
    assert frame.loc[2, "con_price"] == pd.Series([1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]).median()
    assert frame.isna().sum().sum() == 0
    assert outcome["filledBlanks"] == {"price": 1, "colour": 1, "sold": 1}
    days = frame["date_sold_days"]
    assert days.min() <= days[3] <= days.max()


def test_dates_become_numbers(tmp_path: Path, raw: Path) -> None:
    frame = encoded(encode.run(make_job(tmp_path, raw), noop_report))
    first = frame.loc[0]
    assert first["date_sold_days"] == (pd.Timestamp("2020-01-01") - pd.Timestamp("1970-01-01")).days
    assert (first["date_sold_year"], first["date_sold_month"], first["date_sold_dayofweek"]) == (2020, 1, 2)


def test_declared_prefix_wins_over_detection(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "cat_zone": [1, 2, 3, 1, 2, 3],           # numbers, but declared categorical
        "con_code": ["7", "8", "x", "10", "11", "12"],  # text, declared continuous ("x" -> median)
        "date_when": ["2021-05-01"] * 6,
        "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    })
    outcome = encode.run(make_job(tmp_path, write(tmp_path, frame)), noop_report)
    result = encoded(outcome)
    assert outcome["columnTypes"]["cat_zone"] == "categorical"
    assert outcome["columnTypes"]["con_code"] == "continuous"
    assert outcome["columnTypes"]["date_when"] == "date"
    assert {"cat_zone_2", "cat_zone_3", "con_code", "date_when_year", "con_y"} <= set(result.columns)
    assert "cat_zone_1" not in result.columns and "con_con_code" not in result.columns
    assert result.loc[2, "con_code"] == 10.0


def test_rem_prefix_and_columns_to_remove_drop_columns(tmp_path: Path, raw: Path) -> None:
    frame = pd.read_csv(raw).assign(rem_notes=["n"] * 12)
    data = write(tmp_path, frame, "with_notes.csv")
    outcome = encode.run(make_job(tmp_path, data, columnsToRemove=["weight"]), noop_report)
    result = encoded(outcome)
    assert set(outcome["removedColumns"]) == {"weight", "rem_notes"}
    assert not any("weight" in name or "notes" in name for name in result.columns)


def test_unknown_column_to_remove_is_refused(tmp_path: Path, raw: Path) -> None:
    outcome = encode.run(make_job(tmp_path, raw, columnsToRemove=["wieght"]), noop_report)
    assert outcome["status"] == 400 and outcome["field"] == "columnsToRemove" and "wieght" in outcome["message"]


@pytest.fixture
def with_id(tmp_path: Path) -> Path:
    frame = pd.DataFrame({"customer": [f"C{i:04d}" for i in range(40)], "spend": range(40),
                          "region": ["north", "south"] * 20})
    return write(tmp_path, frame, "customers.csv")


def test_unreasonable_column_growth_is_refused_with_advice(tmp_path: Path, with_id: Path) -> None:
    outcome = encode.run(make_job(tmp_path, with_id), noop_report)
    assert outcome["status"] == 400 and outcome["field"] == "columnsToRemove"
    assert "'customer'" in outcome["message"] and "rem_customer" in outcome["message"]
    assert "id" in outcome["message"] and "columnsToRemove" in outcome["message"]
    assert not list((tmp_path / "out").iterdir())  # nothing written


def test_growth_guard_respects_threshold_and_removal(tmp_path: Path, with_id: Path) -> None:
    allowed = encode.run(make_job(tmp_path, with_id, unreasonableIncreaseThreshold=20), noop_report)
    assert encoded(allowed).shape[1] == 41
    outcome = encode.run(make_job(tmp_path, with_id, columnsToRemove=["customer"]), noop_report)
    assert list(encoded(outcome).columns) == ["con_spend", "cat_region_south"]


def test_output_name_default_and_custom(tmp_path: Path, raw: Path) -> None:
    outcome = encode.run(make_job(tmp_path, raw), noop_report)
    assert outcome["datasets"][0]["fileName"] == "raw_encoded.csv"
    assert Path(outcome["datasets"][0]["path"]) == tmp_path / "out" / "raw_encoded.csv"
    custom = encode.run(make_job(tmp_path, raw, outputFileName="clean.csv"), noop_report)
    assert Path(custom["datasets"][0]["path"]).is_file() and custom["datasets"][0]["fileName"] == "clean.csv"
    bad = encode.run(make_job(tmp_path, raw, outputFileName="../escape.csv"), noop_report)
    assert bad["status"] == 400 and bad["field"] == "outputFileName"


@pytest.mark.parametrize(("field", "change"), [("dataPath", {"dataPath": "/nope.csv"}),
                                               ("writePath", {"writePath": "/nope/dir"}),
                                               ("unreasonableIncreaseThreshold", {"unreasonableIncreaseThreshold": 0})])
def test_bad_job_fields_are_refused(tmp_path: Path, raw: Path, field: str, change: dict[str, Any]) -> None:
    outcome = encode.run({**make_job(tmp_path, raw), **change}, noop_report)
    assert outcome["status"] == 400 and outcome["field"] == field


def test_cli_seed_argument_order(tmp_path: Path, raw: Path) -> None:
    out = tmp_path / "cli_out"
    result = subprocess.run(
        [sys.executable, str(REPO / "ml_scripts" / "encode.py"), raw.name, str(raw.parent), str(out),
         json.dumps({"outputFileName": "cli.csv"})],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 200 and (out / "cli.csv").is_file()


def test_cli_refusal_still_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "ml_scripts" / "encode.py"), "missing.csv", str(tmp_path),
                             str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 400 and outcome["field"] == "dataPath"
