"""``ml_scripts._json_safe.json_safe``: numpy and pandas values become plain JSON without importing either."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ml_scripts._json_safe import json_safe


def test_numpy_and_pandas_values_become_plain_json_and_non_finite_numbers_none() -> None:
    value = {"a": np.int64(3), "b": np.float32(0.5), "c": np.bool_(True), "d": np.array([1.0, np.nan]),
             "e": pd.Series([1, 2]), "f": pd.Index(["x"]), "g": pd.NaT, "h": float("inf"), 4: Path("/p"),
             "i": (np.uint8(7), {np.float64(2.5)})}
    safe = json_safe(value)
    assert safe == {"a": 3, "b": 0.5, "c": True, "d": [1.0, None], "e": [1, 2], "f": ["x"], "g": None, "h": None,
                    "4": "/p", "i": [7, [2.5]]}
    assert [type(safe[k]) for k in "abc"] == [int, float, bool]
    json.dumps(safe, allow_nan=False)


def test_dates_are_kept_only_when_asked_and_nat_is_always_none() -> None:
    now = datetime.now(UTC)
    assert json_safe([now, pd.NaT], dates=True) == [now, None]
    assert json_safe(now) == str(now)
