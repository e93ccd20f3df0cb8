"""Model quality: for trainer Outcomes with ``predictions``, predicted vs actual (linearity) and the
residuals (variance), with the usual summary numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, dcc, html

from mlqueue.dashboard.common import Ctx, empty_figure, figure, fmt, kv_table, message, section
from mlqueue.store import outcomes as outcome_store


def predictions_of(job_id: str, settings: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(actual, predicted) of a Job's Outcome, pairs with a missing side dropped; None if it has none."""
    outcome = outcome_store.of_job(job_id, settings, {"predictions": 1})
    predictions = (outcome or {}).get("predictions") or {}
    actual, predicted = predictions.get("actual") or [], predictions.get("predicted") or []
    pairs = [(a, p) for a, p in zip(actual, predicted, strict=False)
             if isinstance(a, int | float) and isinstance(p, int | float) and math.isfinite(a) and math.isfinite(p)]
    if not pairs:
        return None
    both = np.array(pairs, dtype=float)
    return both[:, 0], both[:, 1]


def stats(actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    residual = predicted - actual
    total = float(np.sum((actual - actual.mean()) ** 2))
    return {"pairs": len(actual), "R²": 1 - float(np.sum(residual ** 2)) / total if total else None,
            "RMSE": float(np.sqrt(np.mean(residual ** 2))), "MAE": float(np.mean(np.abs(residual))),
            "mean residual (bias)": float(residual.mean()), "residual std": float(residual.std())}


def linearity(actual: np.ndarray, predicted: np.ndarray) -> go.Figure:
    fig = figure("Predicted vs actual", xaxis_title="actual", yaxis_title="predicted", height=420)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    fig.add_trace(go.Scattergl(x=actual, y=predicted, mode="markers", name="prediction",
                               marker={"size": 5, "opacity": 0.6, "color": "#2d7ff9"}))
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="perfect (y = x)",
                             line={"dash": "dash", "color": "#e03131"}))
    return fig


def residuals(actual: np.ndarray, predicted: np.ndarray) -> go.Figure:
    fig = figure("Residuals (predicted − actual) vs predicted", xaxis_title="predicted", yaxis_title="residual",
                 height=420)
    fig.add_trace(go.Scattergl(x=predicted, y=predicted - actual, mode="markers", name="residual",
                               marker={"size": 5, "opacity": 0.6, "color": "#ae3ec9"}))
    fig.add_hline(y=0, line_dash="dash", line_color="#868e96")
    return fig


def residual_histogram(actual: np.ndarray, predicted: np.ndarray) -> go.Figure:
    fig = figure("Distribution of residuals", xaxis_title="residual", yaxis_title="count", height=320)
    fig.add_trace(go.Histogram(x=predicted - actual, nbinsx=40, marker={"color": "#ae3ec9"}))
    return fig


def choices(ctx: Ctx) -> list[dict[str, str]]:
    options = []
    for row in ctx.table.with_predictions().to_dict("records"):
        loss = row.get("outcome.loss")
        label = f"{row['jobId']} · {row.get('scriptName')} · {row.get('projectName')} · loss {fmt(loss)}"
        options.append({"label": label, "value": row["jobId"]})
    return options


def layout(ctx: Ctx, job_id: str | None, _query: dict[str, str]) -> html.Div:
    options = choices(ctx)
    if job_id and job_id not in {o["value"] for o in options}:
        options.insert(0, {"label": job_id, "value": job_id})
    if not options:
        return html.Div([html.H2("Model quality"),
                         message("No Outcome with predictions yet: trainer scripts such as nn.py report them.")])
    graph = {"config": {"displaylogo": False}}
    return html.Div([
        html.H2("Model quality"),
        html.Div([html.Label("Job"), dcc.Dropdown(id="quality-job", options=options,
                                                  value=job_id or options[0]["value"], clearable=False)],
                 className="card"),
        html.Div(id="quality-stats", className="card"),
        html.Div([section("Linearity", dcc.Graph(id="quality-linearity", **graph)),
                  section("Variance", dcc.Graph(id="quality-residuals", **graph))], className="row"),
        section("Residual distribution", dcc.Graph(id="quality-histogram", **graph)),
    ])


def register(ctx: Ctx) -> None:
    @ctx.app.callback(Output("quality-linearity", "figure"), Output("quality-residuals", "figure"),
                      Output("quality-histogram", "figure"), Output("quality-stats", "children"),
                      Input("quality-job", "value"))
    def _charts(job_id: str | None) -> tuple[Any, ...]:
        pairs = predictions_of(job_id, ctx.settings) if job_id else None
        if pairs is None:
            nothing = empty_figure("", "this Job's Outcome has no predictions")
            return nothing, nothing, nothing, message("No predictions in this Job's Outcome.", "error")
        actual, predicted = pairs
        link = dcc.Link("open the Job", href=ctx.href(f"/job/{job_id}"))
        return (linearity(actual, predicted), residuals(actual, predicted), residual_histogram(actual, predicted),
                [kv_table(stats(actual, predicted), "quality-numbers"), link])
