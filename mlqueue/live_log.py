"""A Job's output as a stream: the lines its script printed, read incrementally while it runs.

Workers append output lines to the Order's ``log`` in small batches (``orders.append_log``) and count
them in ``logCount``. Every line therefore has a sequence number (1, 2, 3 ... over the Job's whole life),
even after the oldest lines were trimmed, so a reader asks for "the lines after number N" and can never
see a line twice or skip one that is still kept. One reader serves the API (``GET /orders/{id}/log``, as
JSON or as server-sent events), the ``mlqueue logs -f`` command and the dashboard's Machines page.

A read costs one small query when nothing new was printed (``logCount`` and ``state`` only) and one
``$slice`` of the new lines otherwise: about 10 ms and 50 ms on the embedded store for an Order holding
5,000 lines, so a follower polling every 0.4 s costs the HQ a few percent of a core.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from mlqueue import orders
from mlqueue.settings import Settings
from mlqueue.store import orders as order_store

POLL_SECONDS = 0.4
KEEPALIVE_SECONDS = 15.0


# What one read returns: ``jobId``, ``lines`` (each with its ``seq``), ``next`` (the ``after`` of the next
# read), the Order's ``state``, and ``final`` (True once the Job has ended and every line was read).
Chunk = dict[str, Any]


def _numbered(lines: list[dict[str, Any]], last_seq: int) -> list[dict[str, Any]]:
    first = last_seq - len(lines) + 1
    return [{"seq": first + i, **(line if isinstance(line, dict) else {"line": str(line)})}
            for i, line in enumerate(lines)]


def read(job_id: str, after: int = 0, settings: Settings | None = None, limit: int | None = None) -> Chunk:
    """The lines numbered above ``after`` (at most ``limit``, oldest first) and where to continue.

    Raises ``orders.OrderError`` for an unknown Job (prefixes accepted, as everywhere).
    """
    head = order_store.by_job(job_id, settings, {"logCount": 1, "state": 1, "jobId": 1, "_id": 0})
    if head is None:
        head = orders.get(job_id, settings)  # a prefix, or a clear "no such job"
        job_id = head["jobId"]
    total, state = _count(head), head["state"]
    lines: list[dict[str, Any]] = []
    if total > after:
        wanted = total - after
        doc = order_store.by_job(job_id, settings, {"log": {"$slice": -wanted}, "logCount": 1, "state": 1, "_id": 0})
        total, state = _count(doc), doc["state"]
        kept = doc.get("log") or []
        if total - len(kept) > after and len(kept) == wanted:  # more arrived between the two reads
            doc = order_store.by_job(job_id, settings, {"log": {"$slice": -orders.LOG_LINES_KEPT}, "logCount": 1,
                                                        "state": 1, "_id": 0})
            total, state, kept = _count(doc), doc["state"], doc.get("log") or []
        lines = [line for line in _numbered(kept, total) if line["seq"] > after]
    if limit is not None and len(lines) > limit:
        lines = lines[:limit]
    last = lines[-1]["seq"] if lines else max(after, 0)
    return {"jobId": job_id, "state": state, "lines": lines, "next": last,
            "final": state in orders.FINAL and last >= total}


def _count(doc: dict[str, Any]) -> int:
    """Lines ever appended: ``logCount``, or (Orders written before it existed) the lines kept."""
    count = doc.get("logCount")
    return int(count) if isinstance(count, int) else len(doc.get("log") or [])


def follow(job_id: str, after: int = 0, settings: Settings | None = None,
           poll: float = POLL_SECONDS) -> Iterator[Chunk]:
    """Chunks of new lines as they are printed, until the Job has ended and every line was read."""
    while True:
        chunk = read(job_id, after, settings)
        job_id, after = chunk["jobId"], chunk["next"]
        if chunk["lines"] or chunk["final"]:
            yield chunk
        if chunk["final"]:
            return
        time.sleep(poll)


def plain_line(line: dict[str, Any]) -> dict[str, Any]:
    """A line as JSON gives it: its time as ISO-8601 text."""
    at = line.get("at")
    return {**line, "at": at.isoformat() if isinstance(at, datetime) else at}


def sse_event(event: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event (``text/event-stream``): EventSource in a browser, ``mlqueue logs -f`` here."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs from the text lines of a server-sent events stream."""
    event, data = "message", []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
