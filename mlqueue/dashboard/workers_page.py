"""Machines (the old Workers page, at /machines and /workers): each machine as a card with what it
offers, its state, the Job it runs and that Job's live output, side by side; below, the table of all
workers and how busy each has been.

The live output panes are filled in the browser by ``assets/mlqueue.js`` from the API's stream
(``GET /orders/{id}/log?follow=true``); this module only says which Job each pane follows. Cards are
re-rendered only when what they show changes, so a pane keeps its stream while its Job runs.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import dash
import dash_ag_grid as dag
import flask
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, dcc, html

from mlqueue import orders, service, speed
from mlqueue.capabilities import gpu_label
from mlqueue.dashboard.common import Ctx, empty_figure, figure, message, state_badge
from mlqueue.dashboard.job_page import curves
from mlqueue.errors import MlqueueError
from mlqueue.store import orders as order_store
from mlqueue.store import workers as worker_store

ML_SHOWN = ("tensorflow", "torch", "scikit-learn", "xgboost")
QUEUED_EVERY = 10.0
_queued_cache: dict[tuple[Any, ...], tuple[float, dict[str, int]]] = {}
_last_cache: dict[str, Any] = {}

POLL_MS = 3000
CARDS_POLL_MS = 1500
CHART_POLL_MS = 2000
CHART_POINTS = 500
MACHINE_STATE_COLORS = {"online": "#2f9e44", "offline": "#868e96", "paused": "#b58900", "draining": "#ae3ec9"}
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
    for worker in worker_store.listing(ctx.settings):
        caps = worker.get("capabilities") or {}
        first = worker.get("firstSeen") or worker.get("startedDate")
        beat = worker.get("lastHeartbeat")
        alive = (now - first).total_seconds() if isinstance(first, datetime) else 0.0
        mine = stats.get(worker["name"], {})
        spent = mine.get("busySeconds", 0.0)
        current = mine.get("currentJob")
        rows.append({
            "name": worker["name"], "online": worker_store.is_online(worker, ctx.settings, now),
            "host": worker.get("host"),
            "currentJob": f"[{current}]({ctx.href('/job/' + current)})" if current else "idle",
            "heartbeatAgeSeconds": round((now - beat).total_seconds(), 1) if isinstance(beat, datetime) else None,
            "jobsDone": mine.get("jobsDone", 0),
            "busySeconds": round(spent, 1), "aliveSeconds": round(alive, 1),
            "busyPercent": round(100 * min(1.0, spent / alive), 1) if alive > 0 else None,
            "cpus": caps.get("cpus"), "ramGb": caps.get("ramGb"),
            "gpus": ", ".join(map(gpu_label, caps.get("gpus") or [])) or "none",
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


def machines(ctx: Ctx) -> list[dict[str, Any]]:
    """Each registered worker with its state, capabilities and the Job its output pane follows: the one it
    holds now, else the last one it ran (so output stays readable after the Job ends).

    Polled every few seconds, so every read is cheap on a store of 100,000 Orders: the held Orders by the
    ``state`` index (a handful), the last Job of an idle machine from the dashboard's in-memory jobs table,
    and one pass over the queued Orders pinned to a machine.
    """
    now = orders.now()
    held = {o["worker"]: o for o in order_store.in_states(orders.HELD, ctx.settings,
                                                           {"worker": 1, "jobId": 1, "scriptName": 1, "state": 1})}
    queued = queued_here(ctx)
    last = last_jobs(ctx)
    figures = speed.figures(ctx.settings)
    out = []
    for worker in worker_store.listing(ctx.settings):
        name = worker["name"]
        alive = worker_store.is_online(worker, ctx.settings, now)
        job = held.get(name) or last.get(name)
        out.append({"name": name, "state": machine_state(worker, alive), "host": worker.get("host"),
                    "capabilities": worker.get("capabilities") or {}, "current": name in held,
                    "job": {k: job.get(k) for k in ("jobId", "scriptName", "state")} if job else None,
                    "speed": speed_text(figures.get(name) or {}, job),
                    "queued": queued.get(name, 0) + queued.get(name.split("@")[0], 0) * ("@" in name)})
    return out


def queued_here(ctx: Ctx) -> dict[str, int]:
    """Queued Orders pinned to each machine (by the name the Job gave). One pass over the queue, so it is
    counted again at most every ``QUEUED_EVERY`` seconds."""
    key = (ctx.settings.mongo_url, ctx.settings.mongo_db)
    at, counts = _queued_cache.get(key, (-QUEUED_EVERY, {}))
    if time.monotonic() - at >= QUEUED_EVERY:
        counts = order_store.count_by("pinnedWorker", {"state": orders.UNASSIGNED, "pinnedWorker": {"$type": "string"}},
                                      ctx.settings)
        _queued_cache[key] = (time.monotonic(), counts)
    return counts


def last_jobs(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Each worker's most recent Job (jobId, scriptName, state), from the in-memory jobs table (worked
    out once per version of the table)."""
    frame = ctx.table.frame()
    if _last_cache.get("frame") is not frame:
        mine = frame.dropna(subset=["worker"])
        newest = mine.sort_values("updatedDate", na_position="first").groupby(mine["worker"].astype(str)).tail(1)
        _last_cache.update(frame=frame, jobs={
            str(r["worker"]): {"jobId": r["jobId"], "scriptName": r["scriptName"], "state": r["state"]}
            for r in newest[["worker", "jobId", "scriptName", "state"]].to_dict("records")})
    return _last_cache["jobs"]


def machine_state(worker: dict[str, Any], alive: bool) -> str:
    """offline, paused, draining (asked by its owner or from here), or online."""
    if not alive:
        return "offline"
    if worker.get("state") not in (None, "idle", "busy", "online"):
        return str(worker["state"])
    action = (worker.get("control") or {}).get("action")
    return {"pause": "paused", "drain": "draining"}.get(action, "online")


def action_buttons(name: str, state: str) -> list[Any]:
    """Pause / resume / drain (``service.worker_command``, as ``POST /workers/NAME/ACTION``); the action a
    machine is already in is not offered again."""
    if state == "offline":
        return []
    offered = ["resume"] if state in ("paused", "draining") else ["pause", "drain"]
    return [html.Button(action.capitalize(), className="secondary",
                        id={"type": "machine-action", "worker": name, "action": action}) for action in offered]


def capability_text(caps: dict[str, Any]) -> str:
    """One line of what a machine offers: CPUs, RAM, GPUs, OS, power, Python and the ML packages it has."""
    gpus = caps.get("gpus") or []
    gpu_text = ", ".join(g if isinstance(g, str) else str(g.get("model") or g.get("name") or g) for g in gpus)
    packages = {**(caps.get("versions") or {}), **(caps.get("packages") or {})}
    ml = [f"{p} {packages[p]}" for p in ML_SHOWN if packages.get(p)]
    power = caps.get("battery")
    parts = [f"{caps['cpus']} CPUs" if caps.get("cpus") else None,
             f"{caps.get('memoryGB') or caps.get('ramGb')} GB RAM" if caps.get("ramGb") else None,
             f"GPU: {gpu_text}" if gpu_text else "no GPU", caps.get("os"),
             (("on mains" if power.get("pluggedIn") else f"on battery {power.get('percent')}%")
              if isinstance(power, dict) else None),
             f"Python {caps['python']}" if caps.get("python") else None, *ml]
    return " · ".join(str(p) for p in parts if p)


def speed_text(figures: dict[str, Any], current: dict[str, Any] | None) -> str | None:
    """How fast this machine ran each script (``speed.figures``), the current Job's script first."""
    if not figures:
        return None
    first = (current or {}).get("scriptName")
    names = sorted(figures, key=lambda n: (n != first, n))[:3]
    return "measured: " + ", ".join(f"{n} {figures[n]['secondsPerJob']:g} s/job" for n in names)


def machine_card(ctx: Ctx, machine: dict[str, Any]) -> html.Section:
    name, job = machine["name"], machine["job"]
    if job:
        label = "running" if machine["current"] else "last job"
        job_line: list[Any] = [f"{label}: ", dcc.Link(job["jobId"][:10], href=ctx.href(f"/job/{job['jobId']}")),
                               f" {job.get('scriptName') or ''} ", state_badge(job.get("state"))]
    else:
        job_line = ["idle: no Job yet"]
    color = MACHINE_STATE_COLORS.get(machine["state"], "#555")
    return html.Section([
        html.Div([html.H3(name), html.Span(machine["state"], className="badge machine-state",
                                           style={"background": color})], className="head"),
        html.Div(capability_text(machine["capabilities"]), className="caps"),
        html.Div(job_line, className="job"),
        html.Div(" · ".join(filter(None, [machine.get("speed"), f"{machine['queued']} Job(s) queued for this "
                                          "machine" if machine.get("queued") else None])), className="caps"),
        html.Div([dcc.Link("Run here", href=ctx.href(f"/code?worker={name}"), className="button run-here"),
                  *action_buttons(name, machine["state"])], className="actions"),
        html.Div(className="live-log", id={"type": "machine-log", "worker": name},
                 **{"data-job": job["jobId"] if job else ""}),
        dcc.Graph(id={"type": "machine-chart", "worker": name}, config={"displayModeBar": False},
                  figure=machine_chart(ctx, job["jobId"] if job else None), style={"height": "190px"}),
    ], className="card machine", id={"type": "machine", "worker": name})


def machine_chart(ctx: Ctx, job_id: str | None) -> go.Figure:
    """The followed Job's metric points (``report()`` or printed metric lines), drawn small."""
    order = order_store.by_job(job_id, ctx.settings, {"metrics": {"$slice": -CHART_POINTS}}) if job_id else None
    if not order or not order.get("metrics"):
        return empty_figure("", "no metrics printed or reported yet").update_layout(
            height=190, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    fig = curves(order)
    fig.update_layout(title=None, height=190, margin={"l": 40, "r": 10, "t": 10, "b": 30},
                      legend={"orientation": "h", "y": -0.25}, xaxis_title=None)
    return fig


def layout(ctx: Ctx, _arg: str | None, _query: dict[str, str]) -> html.Div:
    defs = [{"field": c, "cellRenderer": "markdown"} if c == "currentJob" else {"field": c} for c in COLUMNS]
    return html.Div([
        html.Div([html.H2("Machines", style={"flex": "1"}),
                  html.Button("Invite a machine", id="machines-invite", className="secondary")],
                 style={"display": "flex", "alignItems": "center", "gap": "10px"}),
        html.Div(id="machines-invite-code"), html.Div(id="machines-action-message"),
        dcc.Interval(id="machines-poll", interval=CARDS_POLL_MS), dcc.Store(id="machines-shown"),
        dcc.Interval(id="machines-charts-poll", interval=CHART_POLL_MS),
        html.Div(id="machines", className="machines"),
        html.H3("All workers", style={"marginTop": "16px"}),
        dcc.Interval(id="workers-poll", interval=POLL_MS),
        dag.AgGrid(id="workers-grid", rowData=[], columnDefs=defs, getRowId="params.data.name",
                   defaultColDef={"sortable": True, "resizable": True, "filter": True},
                   style={"height": "300px", "boxSizing": "border-box"}, className="card"),
        dcc.Graph(id="workers-share", config={"displaylogo": False}, className="card"),
    ])


def invite_note(settings: Any) -> html.Div:
    """A one-time invite code (``service.create_invite``, as ``mlqueue invite`` and ``POST /invites``) and
    the command to type on the new machine, addressed to the host this browser reached the HQ by."""
    made = service.create_invite("dashboard", settings)
    host = flask.request.host if flask.has_request_context() else "HQ"
    return html.Div([f"Invite code {made['code']} (valid once, until {made['expires']:%H:%M} UTC). "
                     "On the other machine: ", html.Code(f"mlqueue join {host} --code {made['code']}",
                                                         id="machines-invite-command")],
                    className="message ok")


def register(ctx: Ctx) -> None:
    @ctx.app.callback(Output("machines-action-message", "children"),
                      Input({"type": "machine-action", "worker": ALL, "action": ALL}, "n_clicks"),
                      prevent_initial_call=True)
    def _act(clicks: list[int | None]) -> Any:
        """Pause, resume or drain the machine whose button was clicked."""
        target = dash.ctx.triggered_id
        if not isinstance(target, dict) or not any(clicks):
            return dash.no_update
        try:
            done = service.worker_command(target["worker"], target["action"], "dashboard", ctx.settings)
        except (LookupError, MlqueueError) as exc:
            return message(str(exc), "error")
        return message(done.get("message") or f"{target['worker']}: {target['action']} requested", "ok")

    @ctx.app.callback(Output({"type": "machine-chart", "worker": ALL}, "figure"),
                      Input("machines-charts-poll", "n_intervals"), State("machines-shown", "data"),
                      State({"type": "machine-chart", "worker": ALL}, "id"), prevent_initial_call=True)
    def _charts(_n: int | None, shown: str | None, ids: list[dict[str, str]]) -> list[Any]:
        """Redraw the charts of machines whose Job is running (a finished Job's chart no longer changes)."""
        following = {m["name"]: m for m in json.loads(shown or "[]")}
        figures: list[Any] = []
        for ident in ids:
            machine = following.get(ident["worker"])
            running = machine and machine["current"] and machine["job"]
            figures.append(machine_chart(ctx, machine["job"]["jobId"]) if running else dash.no_update)
        return figures

    @ctx.app.callback(Output("machines-invite-code", "children"), Input("machines-invite", "n_clicks"),
                      prevent_initial_call=True)
    def _invite(_clicks: int | None) -> Any:
        try:
            return invite_note(ctx.settings)
        except MlqueueError as exc:  # e.g. a read-only token
            return message(str(exc), "error")

    @ctx.app.callback(Output("machines", "children"), Output("machines-shown", "data"),
                      Input("machines-poll", "n_intervals"), State("machines-shown", "data"))
    def _cards(_n: int | None, shown: str | None) -> tuple[Any, Any]:
        """Redraw the cards only when what they show changed (a redraw would restart the output streams)."""
        found = machines(ctx)
        signature = json.dumps(found, sort_keys=True, default=str)
        if signature == shown:
            return dash.no_update, dash.no_update
        if not found:
            return html.P("No machine has joined yet: start a worker (`mlqueue worker`)."), signature
        return [machine_card(ctx, m) for m in found], signature

    @ctx.app.callback(Output("workers-grid", "rowData"), Output("workers-share", "figure"),
                      Input("workers-poll", "n_intervals"))
    def _refresh(_n: int | None) -> tuple[list[dict[str, Any]], go.Figure]:
        rows = worker_rows(ctx)
        return rows, share_figure(rows)
