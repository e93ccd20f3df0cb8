"""Jobs: every Job in one AG Grid, paged, sorted and filtered on the server (see ``table.JobTable``)."""

from __future__ import annotations

import json
from typing import Any

import dash_ag_grid as dag
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from mlqueue import orders
from mlqueue.dashboard.common import Ctx, rounded

PAGE_SIZE = 50
QUICK_FILTERS = {"state": "State", "scriptName": "Script", "projectName": "Project", "sweepId": "Sweep"}
# What a user compares comes first: the result, then the hyperparameters that differ, then the rest.
SHOWN_FIRST = ["jobId", "state", "outcome.loss", "outcome.metric"]
SHOWN_LAST = ["scriptName", "durationSeconds", "createdDate"]
HYPERPARAMETERS_SHOWN = 6
VARYING_SAMPLE = 2000  # newest rows looked at to find the hyperparameters that vary
FILTERS = {"number": "agNumberColumnFilter", "date": "agTextColumnFilter", "bool": "agTextColumnFilter",
           "text": "agTextColumnFilter"}
# Columns shown as links: the row carries a markdown link next to the raw value the server sorts and filters.
LINKED = {"jobId": "jobLink", "sweepId": "sweepLink"}
REFRESH = """function(n_clicks, n_intervals) {
    const api = dash_ag_grid.getApi('jobs-grid');
    if (api) { api.refreshInfiniteCache(); }
    return window.dash_clientside.no_update;
}"""


def default_columns(columns: list[tuple[str, str]], varying: list[str] | None = None) -> list[str]:
    """The result columns first, then the hyperparameters that vary (else the most used ones), then the rest."""
    job_columns = [c for c, _ in columns if c.startswith("job.")]
    hyper = [c for c in (varying if varying is not None else job_columns) if c in job_columns][:HYPERPARAMETERS_SHOWN]
    present = {c for c, _ in columns}
    return [c for c in SHOWN_FIRST if c in present] + hyper + [c for c in SHOWN_LAST if c in present]


def _comparable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value


def varying_hyperparameters(ctx: Ctx, columns: list[tuple[str, str]], query: dict[str, str]) -> list[str] | None:
    """``job.*`` columns whose values differ among the newest Jobs (those the page's filters show)."""
    if not ctx.table.ready:
        return None
    filters = _quick_filter_model({}, {c: query.get(c) for c in QUICK_FILTERS})  # the rows the grid will show

    def varying(_frame: Any) -> list[str]:
        recent = ctx.table.newest(filters, VARYING_SAMPLE)
        distinct = {c: recent[c].dropna().map(_comparable).nunique() for c, _ in columns
                    if c.startswith("job.") and c in recent}
        # most values first: a search's parameters before a field one odd Job set differently
        return sorted((c for c, n in distinct.items() if n > 1), key=lambda c: -distinct[c])

    return ctx.table.memo("varying:" + json.dumps([filters, [c for c, _ in columns]], sort_keys=True), varying)


def column_defs(columns: list[tuple[str, str]], shown: list[str]) -> list[dict[str, Any]]:
    """AG Grid column definitions: filter by kind, raw ids as ``colId`` so sort and filter models name them."""
    defs = []
    rank = {column: i for i, column in enumerate(shown)}
    for column, kind in sorted(columns, key=lambda ck: rank.get(ck[0], len(rank))):  # in the order shown
        header = column.removeprefix("job.").removeprefix("outcome.") if "." in column else column
        spec: dict[str, Any] = {"colId": column, "field": LINKED.get(column, column), "headerName": header,
                                "headerTooltip": column, "filter": FILTERS[kind], "hide": column not in shown,
                                "tooltipField": LINKED.get(column, column)}
        if column in LINKED:
            spec.update(cellRenderer="markdown", width=120, pinned="left" if column == "jobId" else None,
                        tooltipField=column)  # the whole id on hover
        if kind == "number":
            spec["type"] = "rightAligned"
        defs.append(spec)
    return defs


def summary(ctx: Ctx) -> str:
    if not ctx.table.ready:
        return "Reading the jobs table: the newest Jobs are shown; sorting and filtering follow in a moment."
    def text(frame: Any) -> str:
        counts = frame["state"].value_counts()
        parts = [f"{counts.get(s, 0)} {s}" for s in orders.STATES if counts.get(s, 0)]
        return f"{len(frame)} jobs" + (": " + ", ".join(parts) if parts else "")

    return ctx.table.memo("summary", text)


def first_view(ctx: Ctx, query: dict[str, str]) -> tuple[list[tuple[str, str]], list[str], dict[str, Any]]:
    """What the page opens on for a URL's query: every column, those shown, and the grid's filter model.

    The layout and the index's first rows (``first_paint``) both start from it, so they show the same view.
    """
    columns = ctx.table.columns()
    shown = default_columns(columns, varying_hyperparameters(ctx, columns, query))
    return columns, shown, _quick_filter_model({}, {c: query.get(c) for c in QUICK_FILTERS})


def rows_response(ctx: Ctx, request: dict[str, Any]) -> dict[str, Any]:
    """The grid's answer to one of its row requests (AG Grid's infinite model): rows as shown, and the count."""
    rows, count = ctx.table.page(int(request.get("startRow", 0)), int(request.get("endRow", PAGE_SIZE)),
                                 request.get("sortModel"), request.get("filterModel"))
    response: dict[str, Any] = {"rowData": _with_links(ctx, rows)}
    if count is not None:
        response["rowCount"] = count
    return response


def layout(ctx: Ctx, _arg: str | None, query: dict[str, str]) -> html.Div:
    columns, shown, filter_model = first_view(ctx, query)
    filters = [html.Div([html.Label(label), dcc.Dropdown(id=f"jobs-f-{column}",
                                                        options=filter_choices(ctx, column, query.get(column)),
                                                        value=query.get(column), placeholder="any")],
                        className="filter") for column, label in QUICK_FILTERS.items()]
    toolbar = html.Div([
        *filters,
        html.Div([html.Label("Columns"), dcc.Dropdown(id="jobs-columns", options=[c for c, _ in columns],
                                                      value=shown, multi=True)], className="columns"),
        html.Button("Refresh", id="jobs-refresh", className="secondary"),
        html.Button("Export CSV", id="jobs-export"),
        dcc.Download(id="jobs-csv"),
    ], className="toolbar")
    grid = dag.AgGrid(
        id="jobs-grid", rowModelType="infinite", columnDefs=column_defs(columns, shown),
        filterModel=filter_model,
        defaultColDef={"sortable": True, "resizable": True, "floatingFilter": True,
                       "filterParams": {"debounceMs": 300, "maxNumConditions": 2}, "width": 135},
        dashGridOptions={"pagination": True, "paginationPageSize": PAGE_SIZE, "cacheBlockSize": PAGE_SIZE,
                         "maxBlocksInCache": 20, "infiniteInitialRowCount": 1, "rowBuffer": 0,
                         "suppressFieldDotNotation": True, "tooltipShowDelay": 300,
                         "suppressColumnVirtualisation": True},
        getRowId="params.data.jobId", style={"height": "640px"}, className="ag-theme-quartz",
    )
    return html.Div([
        html.H2("Jobs"), html.Div(summary(ctx), id="jobs-summary", className="summary"), toolbar, grid,
        dcc.Interval(id="jobs-tick", interval=5000),
    ])


def filter_choices(ctx: Ctx, column: str, chosen: Any = None) -> list[Any]:
    """A quick filter's choices: the values in the table, every Order state, and always the one chosen.

    A dropdown clears a value that is not among its choices, and clearing it drops the grid's filter: a
    view of ``state=unassigned`` showed every Job once the queue ran empty (or while the table was still
    being read, when it has no values yet).
    """
    values = list(ctx.table.values(column))
    extra = list(orders.STATES) if column == "state" else []
    if chosen not in (None, ""):
        extra.append(chosen)
    return values + sorted({v for v in extra if v not in values}, key=str)


def _quick_filter_model(model: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    model = dict(model or {})
    for column, value in values.items():
        if value in (None, ""):
            model.pop(column, None)
        else:
            model[column] = {"filterType": "text", "type": "equals", "filter": str(value)}
    return model


def _compact(value: Any) -> Any:
    """A cell as a person scans it: fractions rounded; a list of objects (nn's hiddenLayers) as its values,
    one group per element (``relu 1.757 0.05; elu 0.649 0.2``). Sorting and filtering use the stored value."""
    if isinstance(value, float):
        return rounded(value)
    if isinstance(value, str) and value.startswith("[{"):  # the table keeps lists as compact JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "; ".join(" ".join(str(rounded(x)) for x in item.values()) for item in value)
    return value


def _with_links(ctx: Ctx, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the grid shows them: ids as links, values compacted (see ``_compact``)."""
    for row in rows:
        row.update({k: _compact(v) for k, v in row.items() if isinstance(v, float | list | str)})
        row["jobLink"] = f"[{row['jobId'][:10]}…]({ctx.href('/job/' + row['jobId'])})"
        if row.get("sweepId"):
            row["sweepLink"] = f"[{str(row['sweepId'])[:10]}…]({ctx.href('/sweep/' + str(row['sweepId']))})"
    return rows


def register(ctx: Ctx) -> None:
    app = ctx.app

    @app.callback(Output("jobs-grid", "getRowsResponse"), Input("jobs-grid", "getRowsRequest"),
                  prevent_initial_call=True)
    def _rows(request: dict[str, Any] | None) -> dict[str, Any]:
        if not request:
            raise PreventUpdate
        return rows_response(ctx, request)

    @app.callback(Output("jobs-grid", "filterModel"),
                  [Input(f"jobs-f-{column}", "value") for column in QUICK_FILTERS],
                  State("jobs-grid", "filterModel"), prevent_initial_call=True)
    def _quick_filters(*values_and_model: Any) -> dict[str, Any]:
        *values, model = values_and_model
        return _quick_filter_model(model, dict(zip(QUICK_FILTERS, values, strict=True)))

    @app.callback(Output("jobs-grid", "columnDefs"), Input("jobs-columns", "value"), prevent_initial_call=True)
    def _choose_columns(shown: list[str] | None) -> list[dict[str, Any]]:
        return column_defs(ctx.table.columns(), shown or ["jobId"])

    @app.callback(Output("jobs-csv", "data"), Input("jobs-export", "n_clicks"),
                  State("jobs-grid", "getRowsRequest"), State("jobs-grid", "filterModel"),
                  State("jobs-columns", "value"), prevent_initial_call=True)
    def _export(_clicks: int | None, request: dict[str, Any] | None, filter_model: dict[str, Any] | None,
                shown: list[str] | None) -> dict[str, Any]:
        request = request or {}
        text = ctx.table.to_csv(shown or ["jobId"], request.get("sortModel"),
                                request.get("filterModel", filter_model))
        return {"content": text, "filename": "mlqueue-jobs.csv", "type": "text/csv", "base64": False}

    @app.callback(Output("jobs-summary", "children"), [Output(f"jobs-f-{c}", "options") for c in QUICK_FILTERS],
                  Input("jobs-tick", "n_intervals"), [State(f"jobs-f-{c}", "value") for c in QUICK_FILTERS],
                  prevent_initial_call=True)
    def _summary(_n: int | None, *chosen: Any) -> tuple[Any, ...]:
        """Counts, and the quick filters' choices (new projects, scripts, sweeps), every few seconds."""
        return summary(ctx), *(filter_choices(ctx, column, value)
                               for column, value in zip(QUICK_FILTERS, chosen, strict=True))

    app.clientside_callback(REFRESH, Output("jobs-refresh", "title"), Input("jobs-refresh", "n_clicks"),
                            Input("jobs-tick", "n_intervals"), prevent_initial_call=True)
