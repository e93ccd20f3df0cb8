"""``json_safe``: any value a script returns or reports, as plain JSON types. Imports nothing heavy.

The worker stores every Outcome and metric point through it, and imports it at start-up: importing
numpy and pandas there (to test ``isinstance`` against their types) cost every worker their import
time even when it never runs a script that uses them. Their values are recognised by what they can do
instead: an array, a Series or an Index has ``tolist``, a numpy scalar ``item``/``tolist``, pandas'
missing time ``NaT`` is a ``datetime`` that is not equal to itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any


def json_safe(value: Any, dates: bool = False) -> Any:
    """Convert numpy/pandas values to plain JSON types; NaN and infinities become None.

    ``json.dumps`` would otherwise emit ``NaN`` (invalid JSON) or fail on numpy scalars. The one
    conversion for scripts and the worker (which stores Outcomes and metric points with it):
    ``dates=True`` keeps ``datetime`` values, which the store keeps as dates; array-likes (numpy,
    pandas, a tensor) and numpy scalars go through their ``tolist``/``item``; anything else becomes its ``str``.
    """
    if isinstance(value, Mapping):
        return {str(key): json_safe(item, dates) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(item, dates) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # numpy's float64 is a float too
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value != value:  # pandas' NaT, the one datetime unequal to itself
            return None
        if dates:
            return value
    for convert in ("tolist", "item"):
        if callable(getattr(value, convert, None)):
            return json_safe(getattr(value, convert)(), dates)
    return str(value)
