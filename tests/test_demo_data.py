"""ml_scripts/demo_data.py: the demo files exist, have the promised shape, and feed the other scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ml_scripts import demo_data, encode, union  # noqa: E402
from ml_scripts._common import noop_report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo")
    demo_data.write_demo_data(directory)
    return directory


def test_writes_the_four_files(tmp_path: Path) -> None:
    paths = demo_data.write_demo_data(tmp_path / "new")
    assert [path.name for path in paths] == list(demo_data.DEMO_FILES)
    assert all(path.is_file() and path.parent == tmp_path / "new" for path in paths)


def test_wine_data_is_nn_ready_with_proline_as_lot(demo_dir: Path) -> None:
    from sklearn.datasets import load_wine

    frame = pd.read_csv(demo_dir / "wine_data.csv")
    assert frame.shape == (178, 13)
    assert all(name.startswith("con_") for name in frame.columns)
    assert frame["con_lot"].tolist() == load_wine().data[:, 12].tolist()  # column 12 is proline
    assert all(pd.api.types.is_numeric_dtype(dtype) for dtype in frame.dtypes)
    assert int((frame["con_lot"] > 1500).sum()) == 4 and frame["con_lot"].min() > 0


def test_raw_file_exercises_encode(demo_dir: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(demo_dir / "wine_raw.csv")
    assert not any(name.startswith(("con_", "cat_", "date_")) for name in raw.columns)
    assert raw.isna().sum().sum() > 0
    outcome = encode.run({"dataPath": str(demo_dir / "wine_raw.csv"), "dataFileName": "wine_raw.csv",
                          "writePath": str(tmp_path)}, noop_report)
    assert outcome["status"] == 200, outcome
    assert outcome["columnTypes"]["cultivar"] == "categorical"
    assert outcome["columnTypes"]["harvest_date"] == "date"
    assert outcome["columnTypes"]["lot"] == "continuous"
    assert set(outcome["filledBlanks"]) == {"magnesium", "cultivar", "harvest_date"}


def test_halves_union_back_to_the_whole(demo_dir: Path, tmp_path: Path) -> None:
    outcome = union.run({"dataPaths": [str(demo_dir / "wine_part1.csv"), str(demo_dir / "wine_part2.csv")],
                         "writePath": str(tmp_path)}, noop_report)
    assert outcome["status"] == 200 and outcome["rows"]["total"] == 178
    whole = pd.read_csv(demo_dir / "wine_data.csv")
    stacked = pd.read_csv(tmp_path / "union.csv")
    key = list(whole.columns)
    assert stacked.sort_values(key).reset_index(drop=True).equals(whole.sort_values(key).reset_index(drop=True))


def test_generation_is_deterministic(demo_dir: Path, tmp_path: Path) -> None:
    demo_data.write_demo_data(tmp_path)
    for name in demo_data.DEMO_FILES:
        assert (tmp_path / name).read_bytes() == (demo_dir / name).read_bytes(), name


def test_module_cli_writes_into_outdir(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ml_scripts.demo_data", str(tmp_path / "cli")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 200 and len(outcome["datasets"]) == 4
    assert (tmp_path / "cli" / "wine_data.csv").is_file()


def test_run_requires_write_path() -> None:
    assert demo_data.run({}, noop_report)["field"] == "writePath"
