"""Metrics a script prints: the seeds' way to draw live graphs, for scripts that never call ``report()``.

A script (module or command-line, in any language) prints a line in one of two forms, and the worker
stores it as one metric point on the Order, exactly as ``report(**fields)`` would:

    metric: loss=0.31 epoch=4             (also "metrics:"; pairs separated by spaces or commas)
    {"metric": {"loss": 0.31, "epoch": 4}}   (one JSON object whose only key is "metric" or "metrics")

Values that read as numbers become numbers, ``true``/``false`` booleans, anything else stays text.
A command-line script's last line (its Outcome, e.g. ``{"status": 200, "metric": 0.9}``) is never taken
for a point: ``metric`` there is a number, not an object. The line itself stays in the log too.

Printed points feed the live curves and a sweep's pruner like reported ones, but only ``report()`` can
stop a script the pruner gives up on (it raises inside the script); a printing script runs to its end.
"""

from __future__ import annotations

import json
import re
from typing import Any

PREFIX = re.compile(r"^\s*metrics?\s*:\s*(?P<pairs>.*)$", re.IGNORECASE)
PAIR = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(?P<value>[^\s,]+)")
MAX_FIELDS = 100


def parse(line: str) -> dict[str, Any] | None:
    """The metric point a printed line carries, or None for an ordinary line."""
    text = line.strip()
    if text.startswith("{"):
        return _from_json(text)
    found = PREFIX.match(text)
    if not found:
        return None
    pairs = {m["key"]: _value(m["value"]) for m in PAIR.finditer(found["pairs"])}
    return dict(list(pairs.items())[:MAX_FIELDS]) or None


def _from_json(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or len(data) != 1:
        return None
    (key, point), = data.items()
    if key not in ("metric", "metrics") or not isinstance(point, dict) or not point:
        return None
    return {str(k): v for k, v in list(point.items())[:MAX_FIELDS]}


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and abs(number) != float("inf") else None
