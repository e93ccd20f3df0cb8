"""Job: one Job's hyperparameters, Outcome, history, log, artifacts and live per-epoch curves."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import plotly.graph_objects as go
from bson import ObjectId
from dash import Input, Output, State, dcc, html

from mlqueue import orders, outcomes
from mlqueue.dashboard.common import Ctx, empty_figure, figure, fmt, kv_table, message, section, state_badge
from mlqueue.values import is_number

POLL_MS = 1000
NOT_CURVES = {"at", "epoch", "fold", "step"}
OUTCOME_HIDDEN = {"predictions", "history", "artifacts", "error", "jobId", "orderId"}
ARTIFACT_ID_KEYS = ("fileId", "gridfsId", "id", "_id")


def curves(order: dict[str, Any]) -> go.Figure:
    """Every numeric metric the script reported, per epoch (one line per fold when it cross-validates)."""
    points = order.get("metrics") or []
    if not points:
        return empty_figure("Metrics per epoch", "no per-epoch metrics reported yet")
    fig = figure("Metrics per epoch", xaxis_title="epoch", height=380, showlegend=True)
    series: dict[str, tuple[list[Any], list[Any]]] = {}
    for index, point in enumerate(points, start=1):
        x = point.get("epoch", point.get("step", index))
        fold = point.get("fold")
        for key, value in point.items():
            if key in NOT_CURVES or not is_number(value):
                continue
            name = f"{key} (fold {fold})" if fold is not None else key
            xs, ys = series.setdefault(name, ([], []))
            xs.append(x)
            ys.append(value)
    for name, (xs, ys) in series.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name))
    return fig


def history_table(order: dict[str, Any]) -> html.Table:
    rows = [html.Tr([html.Td(fmt(e.get("at"))), html.Td(e.get("to") or "·"), html.Td(e.get("by") or ""),
                     html.Td(e.get("why") or "")]) for e in order.get("history") or []]
    head = html.Thead(html.Tr([html.Th("at"), html.Th("to"), html.Th("by"), html.Th("why")]))
    return html.Table([head, html.Tbody(rows)], className="list")


def order_summary(order: dict[str, Any], outcome: dict[str, Any] | None) -> dict[str, Any]:
    outcome = outcome or {}
    return {"state": order.get("state"), "worker": order.get("worker"), "host": order.get("host"),
            "attempts": f"{order.get('attempts', 0)} of {order.get('maxAttempts')}",
            "created": order.get("createdDate"), "started": order.get("startedDate"),
            "finished": order.get("finishedDate"), "duration (s)": outcome.get("durationSeconds"),
            "time limit (s)": order.get("timeLimit"), "script sha256": (order.get("script") or {}).get("sha256"),
            **({"waiting": order["waiting"]} if order.get("waiting") else {})}


def outcome_view(ctx: Ctx, job_id: str, outcome: dict[str, Any] | None) -> list[Any]:
    if not outcome:
        return [message("No Outcome yet: the Job has not finished.")]
    shown = {k: v for k, v in outcome.items() if k not in OUTCOME_HIDDEN}
    children: list[Any] = [kv_table(shown, "job-outcome-table")]
    predictions = outcome.get("predictions") or {}
    if predictions.get("actual"):
        children.append(html.P(dcc.Link(f"{len(predictions['actual'])} predictions: see Model quality",
                                        href=ctx.href(f"/quality/{job_id}"), id="job-quality-link")))
    error = outcome.get("error") or {}
    if error.get("traceback"):
        children += [html.H4("Traceback"), html.Pre(error["traceback"], id="job-traceback")]
    return children


def artifact_id(artifact: dict[str, Any]) -> str | None:
    """The GridFS id of an artifact, if it was stored in GridFS (otherwise it is a path on a worker)."""
    for key in ARTIFACT_ID_KEYS:
        value = artifact.get(key)
        if isinstance(value, ObjectId) or (isinstance(value, str) and ObjectId.is_valid(value)):
            return str(value)
    return None


def artifacts_view(ctx: Ctx, outcome: dict[str, Any] | None) -> list[Any]:
    items = []
    for artifact in (outcome or {}).get("artifacts") or []:
        artifact = artifact if isinstance(artifact, dict) else {"name": str(artifact)}
        name = str(artifact.get("name") or artifact.get("filename") or artifact.get("path") or "artifact")
        file_id = artifact_id(artifact)
        if file_id:
            href = ctx.href(f"/artifacts/{file_id}") + f"?name={quote(name)}"
            size = f"  {artifact['size']:,} bytes" if isinstance(artifact.get("size"), int) else ""
            items.append(html.Li([html.A(name, href=href, className="artifact", download=name),
                                  html.Span(size, className="hint")]))
        else:
            where = artifact.get("error") or f"on the worker: {artifact.get('path') or '?'}"
            items.append(html.Li([html.Span(name), html.Span(f"  (not stored: {where})", className="hint")]))
    return [html.Ul(items)] if items else [html.P("No artifacts.")]


def log_line(entry: Any) -> str:
    """One captured output line (``{"at", "stream", "line"}`` as the worker stores it)."""
    if not isinstance(entry, dict):
        return str(entry)
    at = entry.get("at")
    stamp = at.strftime("%H:%M:%S") if hasattr(at, "strftime") else ""
    marker = " !" if entry.get("stream") == "stderr" else "  "
    return f"{stamp}{marker} {entry.get('line', '')}"


def log_text(order: dict[str, Any]) -> str | None:
    """The Job's stdout/stderr as text; None when the Order keeps no log at all."""
    value = order.get("log")
    if value is None:
        return None
    return "\n".join(map(log_line, value)) if isinstance(value, list) else str(value)


def no_output(order: dict[str, Any]) -> str:
    """What the log box says when the script printed nothing: a finished Job will not print any more."""
    return "(the script printed nothing)" if order.get("state") in orders.FINAL else "(no output yet)"


def layout(ctx: Ctx, job_id: str | None, _query: dict[str, str]) -> html.Div:
    if not job_id:
        return message("Which Job? Open one from the Jobs table.", "error")
    try:
        detail = outcomes.job_detail(job_id, ctx.settings)
    except orders.OrderError as exc:
        return message(str(exc), "error")
    order, outcome, job_id = detail["order"], detail["outcome"], detail["jobId"]
    links = [dcc.Link("Clone and edit", href=ctx.href(f"/new?from={job_id}"), id="job-clone")]
    if order.get("sweepId"):
        links += [" · ", dcc.Link(f"Sweep {order['sweepId']}", href=ctx.href(f"/sweep/{order['sweepId']}"))]
    log = log_text(order)
    return html.Div([
        html.H2(["Job ", html.Code(job_id), " ", state_badge(order.get("state"), "job-state")]),
        html.P([html.Span(f"{order.get('scriptName')} · project {order.get('projectName')} · "), *links]),
        dcc.Store(id="job-id", data=job_id),
        dcc.Interval(id="job-poll", interval=POLL_MS, disabled=order.get("state") in orders.FINAL),
        section("Metrics", dcc.Graph(id="job-curves", figure=curves(order), config={"displaylogo": False})),
        html.Div([section("Hyperparameters", kv_table(detail["job"], "job-params")),
                  section("Order", html.Div(kv_table(order_summary(order, outcome)), id="job-order"))],
                 className="row"),
        section("Outcome", html.Div(outcome_view(ctx, job_id, outcome), id="job-outcome")),
        section("Artifacts", html.Div(artifacts_view(ctx, outcome), id="job-artifacts")),
        section("History", html.Div(history_table(order), id="job-history")),
        section("Log (stdout, stderr marked !)", html.Pre(log or no_output(order), id="job-log"),
                style={} if log is not None else {"display": "none"}),
    ])


def register(ctx: Ctx) -> None:
    @ctx.app.callback(
        Output("job-curves", "figure"), Output("job-state", "children"), Output("job-state", "style"),
        Output("job-order", "children"), Output("job-outcome", "children"), Output("job-artifacts", "children"),
        Output("job-history", "children"), Output("job-log", "children"), Output("job-poll", "disabled"),
        Input("job-poll", "n_intervals"), State("job-id", "data"), prevent_initial_call=True,
    )
    def _poll(_n: int | None, job_id: str) -> tuple[Any, ...]:
        """While the Job runs: redraw its curves and status from the Order, until it is final."""
        detail = outcomes.job_detail(job_id, ctx.settings)
        order, outcome = detail["order"], detail["outcome"]
        badge = state_badge(order.get("state"))
        return (curves(order), order.get("state"), badge.style, kv_table(order_summary(order, outcome)),
                outcome_view(ctx, job_id, outcome), artifacts_view(ctx, outcome), history_table(order),
                log_text(order) or no_output(order), order.get("state") in orders.FINAL)
