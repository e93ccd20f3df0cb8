"""ml_scripts/union.py: stacking datasets with matching columns, refusing mismatched ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml_scripts import union
from ml_scripts._common import noop_report

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, frame: pd.DataFrame) -> str:
    frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture
def parts(tmp_path: Path) -> list[str]:
    first = write(tmp_path / "jan.csv", pd.DataFrame({"a": [1, 2, 3], "b": [10, 20, 30]}))
    second = write(tmp_path / "feb.csv", pd.DataFrame({"b": [40, 50], "a": [4, 5]}))  # other column order
    return [first, second]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_stacks_rows_in_first_files_column_order(parts: list[str], out: Path) -> None:
    outcome = union.run({"dataPaths": parts, "writePath": str(out)}, noop_report)
    assert outcome["status"] == 200, outcome
    assert outcome["datasets"] == [{"fileName": "union.csv", "path": str(out / "union.csv")}]
    frame = pd.read_csv(out / "union.csv")
    assert list(frame.columns) == ["a", "b"]
    assert frame["a"].tolist() == [1, 2, 3, 4, 5] and frame["b"].tolist() == [10, 20, 30, 40, 50]
    assert outcome["rows"] == {"perFile": [{"fileName": "jan.csv", "rows": 3}, {"fileName": "feb.csv", "rows": 2}],
                               "total": 5}


def test_three_files_and_custom_name(parts: list[str], out: Path, tmp_path: Path) -> None:
    third = write(tmp_path / "mar.csv", pd.DataFrame({"a": [6], "b": [60]}))
    outcome = union.run({"dataPaths": [*parts, third], "writePath": str(out), "outputFileName": "q1.csv"},
                        noop_report)
    assert outcome["rows"]["total"] == 6 and (out / "q1.csv").is_file()


def test_mismatched_columns_are_named(parts: list[str], out: Path, tmp_path: Path) -> None:
    odd = write(tmp_path / "odd.csv", pd.DataFrame({"a": [1], "c": [2]}))
    outcome = union.run({"dataPaths": [*parts, odd], "writePath": str(out)}, noop_report)
    assert outcome["status"] == 400 and outcome["field"] == "dataPaths"
    assert "odd.csv" in outcome["message"] and "'b'" in outcome["message"] and "'c'" in outcome["message"]
    assert "feb.csv" not in outcome["message"]
    assert not (out / "union.csv").exists()


@pytest.mark.parametrize(
    ("field", "change"),
    [("dataPaths", {"dataPaths": None}), ("dataPaths", {"dataPaths": "one.csv"}),
     ("writePath", {"writePath": "/does/not/exist"}), ("outputFileName", {"outputFileName": "x.txt"})],
)
def test_bad_jobs_are_refused(parts: list[str], out: Path, field: str, change: dict[str, Any]) -> None:
    outcome = union.run({"dataPaths": parts, "writePath": str(out), **change}, noop_report)
    assert outcome["status"] == 400 and outcome["field"] == field


def test_single_or_missing_file_is_refused(parts: list[str], out: Path) -> None:
    assert union.run({"dataPaths": parts[:1], "writePath": str(out)}, noop_report)["field"] == "dataPaths"
    missing = union.run({"dataPaths": [parts[0], "/nope.csv"], "writePath": str(out)}, noop_report)
    assert missing["status"] == 400 and "/nope.csv" in missing["message"]


def cli(*args: str, cwd: Path) -> tuple[int, dict[str, Any]]:
    result = subprocess.run([sys.executable, str(REPO / "ml_scripts" / "union.py"), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_with_json_and_with_paths(parts: list[str], tmp_path: Path) -> None:
    code, outcome = cli("merged", json.dumps({"dataPaths": ["jan.csv", "feb.csv"], "outputFileName": "m.csv"}),
                        cwd=tmp_path)
    assert code == 0 and outcome["status"] == 200 and (tmp_path / "merged" / "m.csv").is_file()
    code, outcome = cli("merged2", "jan.csv", "feb.csv", cwd=tmp_path)
    assert code == 0 and outcome["rows"]["total"] == 5


def test_cli_mismatch_prints_400_and_exits_zero(tmp_path: Path) -> None:
    write(tmp_path / "x.csv", pd.DataFrame({"a": [1]}))
    write(tmp_path / "y.csv", pd.DataFrame({"b": [1]}))
    code, outcome = cli(str(tmp_path / "o"), "x.csv", "y.csv", cwd=tmp_path)
    assert code == 0 and outcome["status"] == 400
