"""What every page of the dashboard shares: its context, formatting, and small building blocks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dash
import plotly.graph_objects as go
from dash import html

from mlqueue.dashboard.table import DATE_FORMAT, JobTable
from mlqueue.settings import Settings

STATE_COLORS = {"unassigned": "#8a8f98", "assigned": "#b58900", "running": "#2d7ff9", "succeeded": "#2f9e44",
                "failed": "#e03131", "cancelled": "#868e96", "pruned": "#ae3ec9"}


@dataclass
class Ctx:
    """One dashboard: its Dash app, the settings of the HQ it shows, and its jobs table."""

    app: dash.Dash
    settings: Settings
    table: JobTable

    def href(self, path: str) -> str:
        """A link inside the dashboard, wherever it is mounted (``/job/x`` -> ``/ui/job/x``)."""
        return self.app.get_relative_path(path if path.startswith("/") else f"/{path}")


def fmt(value: Any) -> str:
    """A value as a person reads it: short floats, plain dates, JSON for structures."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.strftime(DATE_FORMAT)
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def rounded(value: Any, digits: int = 4) -> Any:
    """A fraction to ``digits`` significant digits for a table cell (sorting and CSV keep the full value)."""
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        return float(f"{value:.{digits}g}")
    return value


def kv_table(values: dict[str, Any], table_id: str | None = None) -> html.Table:
    """A two-column table of fields and values."""
    rows = [html.Tr([html.Th(key), html.Td(fmt(value))]) for key, value in values.items()]
    props = {"id": table_id} if table_id else {}
    return html.Table([html.Tbody(rows or [html.Tr(html.Td("(none)"))])], className="kv", **props)


def state_badge(state: str | None, badge_id: str | None = None) -> html.Span:
    props = {"id": badge_id} if badge_id else {}
    return html.Span(state or "?", className="badge", style={"background": STATE_COLORS.get(state or "", "#555")},
                     **props)


def section(title: str, *children: Any, **props: Any) -> html.Section:
    return html.Section([html.H3(title), *children], className="card", **props)


def figure(title: str, **layout: Any) -> go.Figure:
    """An empty plotly figure in the dashboard's style."""
    fig = go.Figure()
    fig.update_layout(title=title, template="plotly_white", margin={"l": 50, "r": 20, "t": 50, "b": 40},
                      height=layout.pop("height", 360), **layout)
    return fig


def empty_figure(title: str, message: str) -> go.Figure:
    """A figure that says why it has nothing to show, instead of empty axes."""
    fig = figure(title)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14, "color": "#666"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def message(text: str, kind: str = "info") -> html.Div:
    return html.Div(text, className=f"message {kind}")
