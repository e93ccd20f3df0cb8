"""``GET /orders/{id}/log``: a Job's output, read once (JSON) or followed live (server-sent events).

The stream is what the dashboard's Machines page shows as a machine's live output and what
``mlqueue logs -f`` prints (the use cases ``service.order_log``/``follow_order_log``). The token is
checked before the route is reached, and an unknown Job is a 404 with a message, as everywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from mlqueue import live_log, service
from mlqueue.api.deps import ID_PATTERN, SettingsDep
from mlqueue.api.problems import NOT_FOUND
from mlqueue.settings import Settings

LINES_MAX = 5000

router = APIRouter(tags=["orders"])


def _plain(chunk: live_log.Chunk) -> dict[str, Any]:
    return {**chunk, "lines": [live_log.plain_line(line) for line in chunk["lines"]]}


@router.get("/orders/{job_id}/log",
            responses={200: {"description": "JSON ``{jobId, state, lines, next, final}``; with "
                                            "``follow=true`` a ``text/event-stream`` of ``line`` events "
                                            "(data: ``{seq, at, stream, line}``) and one closing ``end`` "
                                            "event (data: ``{jobId, state}``)",
                             "content": {"text/event-stream": {}}}, **NOT_FOUND})
async def order_log(request: Request, settings: SettingsDep, job_id: str = Path(pattern=ID_PATTERN),
                    follow: bool = Query(False, description="stream new lines as server-sent events until "
                                                            "the Job ends"),
                    after: int = Query(0, ge=0, description="only lines numbered above this (each line's "
                                                            "``seq``; the ``next`` of a previous read)"),
                    limit: int = Query(LINES_MAX, ge=1, le=LINES_MAX, description="at most this many lines "
                                                                                  "(JSON reads)"),
                    last_event_id: str | None = Header(None, description="set by EventSource when it "
                                                                         "reconnects: continue after it")
                    ) -> Any:
    """The lines a Job's script printed (stdout, and stderr marked ``"stream": "stderr"``), numbered.

    Read once, or ``follow=true`` to receive each line as the script prints it (within about half a
    second) and an ``end`` event when the Job has ended.
    """
    if follow and last_event_id and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    first = await run_in_threadpool(service.order_log, job_id, after, settings, None if follow else limit)
    if not follow:
        return _plain(first)
    return StreamingResponse(_events(request, first, settings), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, chunk: live_log.Chunk, settings: Settings) -> AsyncIterator[str]:
    """Line events as they come, an ``end`` event once the Job has ended and all its lines went out."""
    quiet_since = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        for line in chunk["lines"]:
            yield live_log.sse_event("line", live_log.plain_line(line), line["seq"])
        if chunk["final"]:
            yield live_log.sse_event("end", {"jobId": chunk["jobId"], "state": chunk["state"]})
            return
        if chunk["lines"]:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > live_log.KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": still running\n\n"
        await asyncio.sleep(live_log.POLL_SECONDS)
        if await request.is_disconnected():
            return
        chunk = await run_in_threadpool(service.order_log, chunk["jobId"], chunk["next"], settings)
