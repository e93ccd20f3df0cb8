"""Demo datasets built from scikit-learn's bundled wine data (no download needed).

The seeds' sample job trains on ``wine_data.csv`` with target ``con_lot`` and keeps rows
whose target lies in [0, 1500].  The seeds never published that file, so it is rebuilt
here: "lot" is the wine data's **proline** column (values roughly 280-1680), which makes
the sample's 0/1500 range a real filter that drops the few highest-proline wines.

Files written:

* ``wine_data.csv`` -- the 12 other measurements as ``con_<name>`` plus ``con_lot``:
  ready for nn.py as is.
* ``wine_raw.csv`` -- un-prefixed names, the cultivar as text (categorical), a harvest date
  and a few blanks: the input encode.py is meant for.
* ``wine_part1.csv`` / ``wine_part2.csv`` -- the even and odd rows of ``wine_data.csv``,
  for union.py.

Everything is deterministic so tests and benchmarks see the same numbers every time.
Usage: ``python -m ml_scripts.demo_data OUTDIR`` (or ``run(job)`` with ``writePath``).
"""

from __future__ import annotations

import importlib.util
import re
import sys
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
    require_path,
    run_cli,
)

DEMO_FILES = ("wine_data.csv", "wine_raw.csv", "wine_part1.csv", "wine_part2.csv")
HARVEST_START = pd.Timestamp("2018-09-03")


def _snake(name: str) -> str:
    """Column names safe for CSV headers and prefixes: od280/od315... -> od280_od315..."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def wine_measurements() -> tuple[pd.DataFrame, pd.Series]:
    """The 13 wine measurements with snake_case names, and the cultivar (0, 1, 2)."""
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.data.rename(columns=_snake)
    return frame, bunch.target


def wine_data_frame() -> pd.DataFrame:
    """nn.py-ready table: ``con_`` features and the proline target renamed ``con_lot``."""
    measurements, _ = wine_measurements()
    features = measurements.drop(columns=["proline"]).add_prefix("con_")
    return features.assign(con_lot=measurements["proline"])


def wine_raw_frame() -> pd.DataFrame:
    """Messy table for encode.py: text category, dates and blanks, no type prefixes."""
    measurements, cultivar = wine_measurements()
    raw = measurements.rename(columns={"proline": "lot"})
    rows = np.arange(len(raw))
    raw["cultivar"] = cultivar.map({0: "cultivar_a", 1: "cultivar_b", 2: "cultivar_c"})
    raw["harvest_date"] = (HARVEST_START + pd.to_timedelta((rows * 7) % 45, unit="D")).strftime("%Y-%m-%d")
    raw.loc[rows % 17 == 5, "magnesium"] = np.nan
    raw.loc[rows % 23 == 7, "cultivar"] = np.nan
    raw.loc[rows % 41 == 3, "harvest_date"] = np.nan
    return raw


def write_demo_data(outdir: Path | str) -> list[Path]:
    """Write the four demo CSVs into ``outdir`` (created if needed) and return their paths."""
    target = Path(outdir)
    target.mkdir(parents=True, exist_ok=True)
    data = wine_data_frame()
    frames = {
        "wine_data.csv": data,
        "wine_raw.csv": wine_raw_frame(),
        "wine_part1.csv": data.iloc[0::2],
        "wine_part2.csv": data.iloc[1::2],
    }
    paths = []
    for name, frame in frames.items():
        path = target / name
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def run(job: dict[str, Any], report: Report) -> Outcome:
    """Worker entry point: write the demo datasets into ``writePath`` for upload."""
    try:
        write_path = require_path(job, "writePath", directory=True)
    except JobError as exc:
        return exc.outcome()
    paths = write_demo_data(write_path)
    return {"status": 200, "datasets": [dataset_entry(path) for path in paths]}


def _job_from_argv(argv: list[str]) -> dict[str, Any]:
    """``demo_data.py OUTDIR``: the output directory is created when missing."""
    if len(argv) != 1:
        raise JobError("argv", "Usage: python -m ml_scripts.demo_data OUTDIR")
    outdir = Path(argv[0]).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    return {"writePath": str(outdir)}


if __name__ == "__main__":
    sys.exit(run_cli(run, _job_from_argv, sys.argv[1:]))
