"""Workers: each machine, what it offers, what it runs now, how alive and how busy it is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dash_ag_grid as dag
import plotly.graph_objects as go
from dash import Input, Output, dcc, html

from mlqueue import orders, store
from mlqueue.dashboard.common import Ctx, empty_figure, figure

POLL_MS = 3000
COLUMNS = ["name", "online", "host", "currentJob", "heartbeatAgeSeconds", "jobsDone", "busyPercent", "cpus", "ramGb",
           "gpus", "os", "python", "firstSeen"]


def worker_rows(ctx: Ctx) -> list[dict[str, Any]]:
    """One row per registered worker; busy share = time on Jobs / time since first seen.

    The Job counts and times come from the dashboard's jobs table rather than ``outcomes.workers``, whose
    pass over every Outcome takes seconds on a big store: this page asks every few seconds.
    """
    stats = ctx.table.worker_stats()
    now = orders.now()
    rows = []
    for worker in store.db(ctx.settings).workers.find({}, {"_id": 0}).sort("name", 1):
        caps = worker.get("capabilities") or {}
        first = worker.get("firstSeen") or worker.get("startedDate")
        beat = worker.get("lastHeartbeat")
        alive = (now - first).total_seconds() if isinstance(first, datetime) else 0.0
        mine = stats.get(worker["name"], {})
        spent = mine.get("busySeconds", 0.0)
        current = mine.get("currentJob")
        rows.append({
            "name": worker["name"], "online": bool(worker.get("online")), "host": worker.get("host"),
            "currentJob": f"[{current}]({ctx.href('/job/' + current)})" if current else "idle",
            "heartbeatAgeSeconds": round((now - beat).total_seconds(), 1) if isinstance(beat, datetime) else None,
            "jobsDone": mine.get("jobsDone", 0),
            "busySeconds": round(spent, 1), "aliveSeconds": round(alive, 1),
            "busyPercent": round(100 * min(1.0, spent / alive), 1) if alive > 0 else None,
            "cpus": caps.get("cpus"), "ramGb": caps.get("ramGb"), "gpus": ", ".join(caps.get("gpus") or []) or "none",
            "os": caps.get("os"), "python": caps.get("python"),
            "firstSeen": first.strftime("%Y-%m-%d %H:%M:%S") if isinstance(first, datetime) else None,
        })
    return rows


def share_figure(rows: list[dict[str, Any]]) -> go.Figure:
    if not rows:
        return empty_figure("Busy / idle time", "no worker has registered yet")
    names = [r["name"] for r in rows]
    busy = [(r["busyPercent"] or 0.0) / 100 for r in rows]
    fig = figure("Busy / idle share since first seen", barmode="stack", xaxis={"tickformat": ".0%", "range": [0, 1]},
                 height=max(220, 80 + 40 * len(rows)))
    fig.add_trace(go.Bar(y=names, x=busy, orientation="h", name="busy", marker={"color": "#2d7ff9"}))
    fig.add_trace(go.Bar(y=names, x=[1 - b for b in busy], orientation="h", name="idle", marker={"color": "#dee2e6"}))
    return fig


def layout(ctx: Ctx, _arg: str | None, _query: dict[str, str]) -> html.Div:
    defs = [{"field": c, "cellRenderer": "markdown"} if c == "currentJob" else {"field": c} for c in COLUMNS]
    return html.Div([
        html.H2("Workers"),
        dcc.Interval(id="workers-poll", interval=POLL_MS),
        dag.AgGrid(id="workers-grid", rowData=[], columnDefs=defs, getRowId="params.data.name",
                   defaultColDef={"sortable": True, "resizable": True, "filter": True},
                   style={"height": "300px"}, className="card"),
        dcc.Graph(id="workers-share", config={"displaylogo": False}, className="card"),
    ])


def register(ctx: Ctx) -> None:
    @ctx.app.callback(Output("workers-grid", "rowData"), Output("workers-share", "figure"),
                      Input("workers-poll", "n_intervals"))
    def _refresh(_n: int | None) -> tuple[list[dict[str, Any]], go.Figure]:
        rows = worker_rows(ctx)
        return rows, share_figure(rows)
