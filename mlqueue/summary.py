"""``mlqueue show ID`` as a person reads it: one screen about one Job, the rest behind ``--full``.

A Job's documents are big (an nn Job's Outcome holds hundreds of predictions, a failed one's error
repeats its message in three places), so the summary states what happened first, then the
hyperparameters, the Outcome's scalar fields, the error with its traceback once, and a labelled tail
of the script's log. ``--full`` prints everything, still with the traceback once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

LOG_TAIL = 10
HISTORY_TAIL = 8
LIST_SHOWN = 4
VALUE_WIDTH = 70
HIDDEN_JOB_FIELDS = {"scriptName", "projectName", "createdDate"}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value or "-")


def short(value: Any) -> str:
    """One value on one line: numbers rounded, dates plain, long lists and objects abbreviated."""
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > LIST_SHOWN and all(not isinstance(v, dict | list) for v in value):
        return f"[{', '.join(short(v) for v in value[:LIST_SHOWN])}, ... {len(value)} values]"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"{len(value)} × " + "; ".join(short(v) for v in value[:LIST_SHOWN]) + (
            " ..." if len(value) > LIST_SHOWN else "")
    if isinstance(value, dict):
        text = " ".join(f"{k}={short(v)}" for k, v in value.items())
        return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + "..."
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + "..."


def _fields(doc: dict[str, Any], skip: set[str]) -> list[str]:
    keys = [k for k in doc if k not in skip]
    width = max((len(k) for k in keys), default=0)
    return [f"  {k.ljust(width)}  {short(doc[k])}" for k in keys]


def _headline(order: dict[str, Any], job: dict[str, Any]) -> list[str]:
    outcome = order.get("outcome") or {}
    took = outcome.get("durationSeconds")
    line = (f"Job {order['jobId']}  {job.get('scriptName', order.get('scriptName'))}  "
            f"project {job.get('projectName', order.get('projectName', 'default'))}")
    state = f"  {order['state'].upper()}"
    state += f" (reason: {outcome['reason']})" if outcome.get("reason") else ""
    state += f" after {order.get('attempts', 0)} attempt(s)"
    state += f" on {order['worker']}" if order.get("worker") else ""
    state += f", {took:.1f} s" if isinstance(took, int | float) else ""
    dates = f"  submitted {_when(order.get('createdDate'))}, last change {_when(order.get('updatedDate'))}"
    return [line, state, dates]


def _error(outcome: dict[str, Any]) -> list[str]:
    error = outcome.get("error")
    if not isinstance(error, dict) and not (outcome.get("status", 200) or 200) >= 400:
        return []
    message = outcome.get("message") or (error or {}).get("message") or ""
    lines = ["Error:", f"  {message}"]
    traceback = (error or {}).get("traceback")
    if traceback:
        lines += ["  traceback (last lines):", *(f"    {ln}" for ln in str(traceback).splitlines())]
    return lines


def _outcome(outcome: dict[str, Any], full: bool) -> list[str]:
    if not outcome:
        return []
    has_error = isinstance(outcome.get("error"), dict)
    shown = {k: v for k, v in outcome.items() if not (has_error and k in ("error", "message"))}
    if full:
        return ["Outcome:", *(f"  {line}" for line in json.dumps(shown, indent=2, default=str).splitlines())]
    scalars = {k: v for k, v in shown.items() if not isinstance(v, dict)}
    rest = [k for k in shown if k not in scalars]
    lines = ["Outcome:", *_fields(scalars, {"script", "startedDate"})]
    if rest:
        lines.append(f"  (+ {', '.join(rest)}: see --full)")
    return lines


def _log(order: dict[str, Any], full: bool) -> list[str]:
    log = order.get("log") or []
    if not log:
        final = order.get("state") in ("succeeded", "failed", "cancelled", "pruned")
        return [f"Log: {'the script printed nothing' if final else 'no output yet'}"]
    shown = log if full else log[-LOG_TAIL:]
    label = "all" if len(shown) == len(log) else f"last {len(shown)} of {len(log)}"
    return [f"Log ({label} lines):", *(f"  | {line.get('line', '')}" for line in shown)]


def _history(order: dict[str, Any], full: bool) -> list[str]:
    events = order.get("history") or []
    shown = events if full else events[-HISTORY_TAIL:]
    lines = ["History:" + ("" if len(shown) == len(events) else f" (last {len(shown)} of {len(events)})")]
    lines += [f"  {_when(e.get('at'))}  {(e.get('to') or ''):10} {e.get('by')}: {e.get('why')}" for e in shown]
    return lines


def render(order: dict[str, Any], job: dict[str, Any] | None, full: bool = False) -> str:
    """The text ``mlqueue show`` prints for one Order and its Job."""
    job = job or {}
    outcome = order.get("outcome") or {}
    parts = [_headline(order, job)]
    if full:
        parts.append(["Job:", *(f"  {ln}" for ln in json.dumps(job, indent=2, default=str).splitlines())])
    else:
        parts.append(["Hyperparameters:", *_fields(job, HIDDEN_JOB_FIELDS)])
    parts += [_outcome(outcome, full), _error(outcome)]
    if order.get("latestMetrics") and (full or not outcome):
        parts.append(["Latest metrics:", *_fields(order["latestMetrics"], set())])
    parts += [_history(order, full), _log(order, full)]
    if not full:
        parts.append([f"(mlqueue show {order['jobId'][:8]} --full: every field, the whole log and history)"])
    return "\n\n".join("\n".join(p) for p in parts if p)
