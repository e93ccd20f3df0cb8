"""Sweeps: every sweep, and for one sweep its progress, the objective against each hyperparameter,
parallel coordinates, parameter importance and its trials' states.

A sweep is asked of ``mlqueue.sweeps.driver`` (its document: objective, direction, Optuna study; its
trial records; its space) and its trials are the Jobs whose ``sweepId`` names it, with the values Optuna
chose. Jobs may also carry a ``sweepId`` no document names (sweeps made by hand):
then the objective is ``loss`` (minimised) and the hyperparameters are the Job fields that vary.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import dash_ag_grid as dag
import pandas as pd
import plotly.graph_objects as go
from bson import ObjectId
from dash import Input, Output, State, dcc, html
from plotly.subplots import make_subplots

from mlqueue import orders, outcomes, sweeps
from mlqueue.dashboard.common import STATE_COLORS, Ctx, empty_figure, figure, message, rounded, section
from mlqueue.sweeps import driver as sweep_driver
from mlqueue.values import number_or_none

log = logging.getLogger(__name__)
_importance_cache: dict[tuple[Any, ...], tuple[dict[str, float], str]] = {}
NOT_HYPERPARAMETERS = {"scriptName", "projectName", "sweepId", "trialNumber", "jobId", "timeLimit", "maxAttempts"}
POLL_MS = 3000
PLOTTED_BY_DEFAULT = 12   # the most important parameters; the picker above the charts shows any others
SCATTERS_PER_ROW = 4
LABEL_MAX = 16


def find_sweep(sweep_id: str, settings: Any) -> dict[str, Any] | None:
    """The sweep's document as ``sweep_driver`` keeps it, or None (a ``sweepId`` no sweep document has)."""
    if not ObjectId.is_valid(sweep_id):
        return None
    try:
        return sweep_driver.get(sweep_id, settings)
    except sweep_driver.SweepNotFound:
        return None


def objective_of(sweep: dict[str, Any] | None) -> tuple[str, str]:
    """(Outcome field, "minimize" | "maximize") the sweep optimises; loss, minimised, without a document."""
    objective = (sweep or {}).get("objective") or {}
    field = str(objective.get("field") or "loss")
    direction = str(objective.get("direction") or ("maximize" if field == "metric" else "minimize"))
    return field, "maximize" if direction.startswith("max") else "minimize"


def chosen_values(sweep_id: str, settings: Any) -> dict[str, dict[str, Any]]:
    """jobId -> the values Optuna chose for that trial, by parameter name (the driver's trial records)."""
    return {record["jobId"]: {p["name"]: p["value"] for p in record.get("params") or [] if "name" in p}
            for record in sweep_driver.trials(sweep_id, settings) if record.get("jobId")}


def space_names(sweep: dict[str, Any] | None) -> list[str]:
    """The parameter names of the sweep's search space (as Optuna names them), [] without a document."""
    if not sweep:
        return []
    try:
        return [entry.name for entry in sweeps.iter_entries(sweep_driver.spec_of(sweep).space)]
    except Exception:  # noqa: BLE001 - a spec this version cannot read: fall back to what varies
        log.info("sweep %s: stored spec not readable", sweep.get("_id"), exc_info=True)
        return []


def trials_frame(sweep_id: str, objective: str, settings: Any) -> tuple[pd.DataFrame, list[str]]:
    """One row per trial (state, objective, finish time, Job fields, chosen values) and the chosen names."""
    chosen = chosen_values(sweep_id, settings)
    names = list(dict.fromkeys(name for values in chosen.values() for name in values))
    rows = []
    for row in outcomes.results(settings, sort=objective, query={"sweepId": sweep_id}):
        outcome = row.get("outcome") or {}
        value = outcome.get(objective)
        rows.append({**{k: v for k, v in row["job"].items() if k != "sweepId"}, **chosen.get(row["jobId"], {}),
                     "jobId": row["jobId"], "state": row["state"],
                     "objective": number_or_none(value),
                     "finishedDate": outcome.get("finishedDate"), "createdDate": row.get("createdDate")})
    return pd.DataFrame(rows), names


def hyperparameters(sweep: dict[str, Any] | None, trials: pd.DataFrame, chosen: list[str]) -> list[str]:
    """Optuna's parameter names when the trials were recorded, else the search space's, else what varies."""
    if chosen:
        return [name for name in chosen if name in trials]
    space = [name for name in space_names(sweep) if name in trials]
    if space:
        return space
    varying = []
    for column in trials.columns:
        if column in NOT_HYPERPARAMETERS or column in ("state", "objective", "finishedDate", "createdDate"):
            continue
        values = trials[column].dropna().map(repr)
        if values.nunique() > 1:
            varying.append(column)
    return varying


def _numeric(series: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """Numbers as they are; categories as codes, with their labels (for axes and correlations)."""
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.notna().sum() == series.notna().sum():
        return numbers, None
    labels = sorted(series.dropna().map(str).unique())
    return series.map(lambda v: labels.index(str(v)) if v is not None and str(v) in labels else math.nan), labels


def _initials(word: str) -> str:
    """``hiddenLayers`` -> ``hL``: the first letter and every capital."""
    return word[:1] + "".join(c for c in word[1:] if c.isupper())


def abbreviate(name: str) -> str:
    """A short axis label for a long nested parameter name: ``hiddenLayers[1].widthModifier`` ->
    ``hL[1].widthModifier``; the full name is on hover and in the legend under the charts."""
    *parents, last = name.split(".")
    short_parents = []
    for part in parents:
        base, bracket, rest = part.partition("[")
        short_parents.append(_initials(base) + bracket + rest)
    if last.startswith("len(") and last.endswith(")"):
        return f"len({abbreviate(last[4:-1])})"
    if len(last) > LABEL_MAX:
        last = last[:LABEL_MAX - 1] + "…"
    return ".".join([*short_parents, last])


def labels_for(params: list[str]) -> dict[str, str]:
    """Short labels for every parameter, unique (a label two names would share stays the full name)."""
    short = {name: abbreviate(name) for name in params}
    taken = pd.Series(list(short.values())).value_counts()
    return {name: (label if taken[label] == 1 else name) for name, label in short.items()}


def legend(labels: dict[str, str]) -> str:
    """The abbreviations used on the charts, spelled out."""
    spelled = [f"{label} = {name}" for name, label in labels.items() if label != name]
    return ("Abbreviated: " + "; ".join(spelled) + ".") if spelled else ""


def plotted(params: list[str], scores: dict[str, float], picked: list[str] | None) -> list[str]:
    """The user's pick, else the most important parameters first (all of them up to the default count)."""
    if picked:
        return [p for p in picked if p in params]
    ranked = sorted(params, key=lambda p: -scores.get(p, 0.0))
    return ranked[:PLOTTED_BY_DEFAULT]


def best_so_far(trials: pd.DataFrame, direction: str, objective: str) -> go.Figure:
    done = trials.dropna(subset=["objective", "finishedDate"]).sort_values("finishedDate")
    if done.empty:
        return empty_figure("Best so far", "no finished trial with an objective yet")
    best = done["objective"].cummax() if direction == "maximize" else done["objective"].cummin()
    fig = figure("Best so far", xaxis_title="finished", yaxis_title=objective)
    fig.add_trace(go.Scatter(x=done["finishedDate"], y=done["objective"], mode="markers", name="trial",
                             text=done["jobId"], marker={"color": "#adb5bd"}))
    fig.add_trace(go.Scatter(x=done["finishedDate"], y=best, mode="lines", line_shape="hv", name="best so far",
                             line={"color": "#2d7ff9", "width": 3}))
    return fig


def scatters(trials: pd.DataFrame, params: list[str], objective: str, labels: dict[str, str]) -> go.Figure:
    done = trials.dropna(subset=["objective"])
    if done.empty or not params:
        return empty_figure("Objective vs hyperparameters", "no finished trials or no varying hyperparameters")
    rows = math.ceil(len(params) / SCATTERS_PER_ROW)
    cols = min(len(params), SCATTERS_PER_ROW)
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, subplot_titles=[labels[p] for p in params],
                        horizontal_spacing=0.04, vertical_spacing=0.5 / rows)
    for index, name in enumerate(params):
        row, col = index // SCATTERS_PER_ROW + 1, index % SCATTERS_PER_ROW + 1
        x, ticks = _numeric(done[name])
        fig.add_trace(go.Scatter(x=x, y=done["objective"], mode="markers", name=name, text=done["jobId"],
                                 showlegend=False, hovertemplate=f"{name}: %{{x}}<br>{objective}: %{{y}}"
                                                                 "<br>job %{text}<extra></extra>"),
                      row=row, col=col)
        if ticks:
            fig.update_xaxes(tickvals=list(range(len(ticks))), ticktext=ticks, row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=objective, row=row, col=col)
    fig.update_annotations(font_size=12)
    fig.update_layout(title="Objective vs each hyperparameter", template="plotly_white", height=80 + 230 * rows,
                      margin={"l": 60, "r": 20, "t": 70, "b": 40})
    return fig


def parallel(trials: pd.DataFrame, params: list[str], objective: str, labels: dict[str, str]) -> go.Figure:
    done = trials.dropna(subset=["objective"])
    if done.empty or not params:
        return empty_figure("Parallel coordinates", "no finished trials or no varying hyperparameters")
    dimensions = []
    for name in params:
        values, ticks = _numeric(done[name])
        low, high = values.min(), values.max()
        missing = (low - 0.1 * (high - low or 1)) if values.notna().any() else 0.0  # below the axis' values
        dimension: dict[str, Any] = {"label": labels[name], "values": values.fillna(missing).tolist()}
        if ticks:
            dimension.update(tickvals=list(range(len(ticks))), ticktext=ticks)
        dimensions.append(dimension)
    dimensions.append({"label": objective, "values": done["objective"].tolist()})
    fig = figure("", height=420)
    fig.update_layout(margin={"l": 50, "r": 50, "t": 110, "b": 30})
    fig.add_trace(go.Parcoords(line={"color": done["objective"], "colorscale": "Viridis", "showscale": True},
                               dimensions=dimensions, labelangle=-30, labelside="top",
                               labelfont={"size": 11}, tickfont={"size": 10}))
    return fig


def _optuna_study(sweep: dict[str, Any] | None, settings: Any) -> Any:
    """The sweep's Optuna study (journal storage on the HQ's Redis) when it can be opened, else None."""
    if not (sweep or {}).get("studyName"):
        return None
    try:
        import optuna

        from mlqueue.sweeps import driver as sweep_driver

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=str(sweep["studyName"]), storage=sweep_driver.study_storage(settings))
    except Exception:  # noqa: BLE001 - no optuna, no driver, broker down: use the fallback, and say so
        log.info("optuna study of sweep %s not reachable", sweep.get("_id"), exc_info=True)
        return None


def importance(sweep_id: str, sweep: dict[str, Any] | None, trials: pd.DataFrame, params: list[str],
               settings: Any) -> tuple[dict[str, float], str]:
    """Parameter importances and how they were computed; computed again only when a trial has finished.

    Optuna's evaluator fits a forest (seconds), and the page polls every few seconds while a sweep runs.
    """
    key = (sweep_id, settings.mongo_db, int(trials["objective"].notna().sum()), tuple(params))
    if key not in _importance_cache:
        if len(_importance_cache) > 64:
            _importance_cache.clear()
        _importance_cache[key] = _importance(sweep, trials, params, settings)
    return _importance_cache[key]


def _importance(sweep: dict[str, Any] | None, trials: pd.DataFrame, params: list[str],
                settings: Any) -> tuple[dict[str, float], str]:
    study = _optuna_study(sweep, settings)
    if study is not None:
        try:
            import optuna

            found = optuna.importance.get_param_importances(study)
            return dict(found), f"Optuna get_param_importances on study {study.study_name!r}"
        except Exception as exc:  # noqa: BLE001 - e.g. too few complete trials
            reason = f"Optuna could not compute them ({type(exc).__name__}: {exc})"
    else:
        reason = "no Optuna study reachable for this sweep"
    done = trials.dropna(subset=["objective"])
    scores = {}
    for name in params:
        values, _ = _numeric(done[name])
        rho = values.corr(done["objective"], method="spearman") if values.nunique() > 1 else math.nan
        scores[name] = 0.0 if pd.isna(rho) else abs(float(rho))
    total = sum(scores.values())
    scores = {k: (v / total if total else 0.0) for k, v in sorted(scores.items(), key=lambda kv: -kv[1])}
    return scores, f"fallback: |Spearman correlation| with the objective, normalised ({reason})"


def importance_figure(scores: dict[str, float], labels: dict[str, str] | None = None) -> go.Figure:
    if not scores:
        return empty_figure("Parameter importance", "not enough finished trials")
    names = list(scores)[::-1]
    fig = figure("Parameter importance", xaxis_title="importance", height=max(260, 60 + 30 * len(names)))
    fig.add_trace(go.Bar(x=[scores[n] for n in names], y=[(labels or {}).get(n, n) for n in names],
                         orientation="h", marker={"color": "#2d7ff9"}, customdata=names,
                         hovertemplate="%{customdata}: %{x:.3f}<extra></extra>"))
    return fig


def states_figure(trials: pd.DataFrame) -> go.Figure:
    counts = trials["state"].value_counts() if not trials.empty else pd.Series(dtype=int)
    states = [s for s in orders.STATES if counts.get(s, 0)]
    fig = figure("Trial states", height=260)
    fig.add_trace(go.Bar(x=states, y=[int(counts[s]) for s in states],
                         marker={"color": [STATE_COLORS[s] for s in states]}))
    return fig


def trial_rows(ctx: Ctx, trials: pd.DataFrame, params: list[str]) -> list[dict[str, Any]]:
    rows = []
    for record in trials.to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()
               if k in ("jobId", "trialNumber", "state", "objective", *params)}
        row = {k: (str(v) if isinstance(v, dict | list) else rounded(v)) for k, v in row.items()}
        row["job"] = f"[{record['jobId']}]({ctx.href('/job/' + record['jobId'])})"
        rows.append(row)
    return rows


def layout(ctx: Ctx, sweep_id: str | None, _query: dict[str, str]) -> html.Div:
    if not sweep_id:
        return index_layout(ctx)
    sweep = find_sweep(sweep_id, ctx.settings)
    objective, direction = objective_of(sweep)
    info = f"objective: {objective} ({direction})"
    if sweep is None:
        info += " · no document in the sweeps collection: the defaults are used"
    graph = {"config": {"displaylogo": False}}
    return html.Div([
        html.H2(["Sweep ", html.Code(sweep_id)]),
        html.P(info, className="summary", id="sweep-info"),
        dcc.Store(id="sweep-id", data=sweep_id), dcc.Interval(id="sweep-poll", interval=POLL_MS),
        html.Div([section("Progress", dcc.Graph(id="sweep-best", **graph)),
                  section("Trial states", dcc.Graph(id="sweep-states", **graph))], className="row"),
        section("Hyperparameters plotted",
                dcc.Dropdown(id="sweep-params", multi=True, placeholder="the most important ones"),
                html.P(id="sweep-params-note", className="summary")),
        section("Objective vs hyperparameters", dcc.Graph(id="sweep-scatter", **graph)),
        section("Parallel coordinates", dcc.Graph(id="sweep-parallel", **graph)),
        section("Parameter importance", html.P(id="sweep-importance-method", className="summary"),
                dcc.Graph(id="sweep-importance", **graph)),
        section("Trials", dag.AgGrid(id="sweep-trials", rowData=[], columnDefs=[], style={"height": "360px"},
                                     defaultColDef={"sortable": True, "filter": True, "resizable": True},
                                     dashGridOptions={"suppressFieldDotNotation": True})),
    ])


def index_layout(ctx: Ctx) -> html.Div:
    """Every sweep: those with a document, and any sweepId the Jobs mention."""
    ids: dict[str, dict[str, Any]] = {row["sweepId"]: row for row in sweep_driver.listing(ctx.settings)[:500]}
    for sweep_id in ctx.table.values("sweepId"):
        ids.setdefault(str(sweep_id), {})
    counts = ctx.table.frame().groupby("sweepId")["state"].value_counts().unstack(fill_value=0)
    rows = []
    for sweep_id, doc in ids.items():
        objective, direction = objective_of(doc)
        row = {"sweep": f"[{sweep_id}]({ctx.href('/sweep/' + sweep_id)})", "name": doc.get("name"),
               "objective": f"{objective} ({direction})", "state": doc.get("state")}
        if sweep_id in counts.index:
            row.update({state: int(n) for state, n in counts.loc[sweep_id].items()})
            row["trials"] = int(counts.loc[sweep_id].sum())
        rows.append(row)
    columns = ["sweep", "name", "objective", "state", "trials", *[s for s in orders.STATES if s in counts.columns]]
    defs = [{"field": c, "cellRenderer": "markdown"} if c == "sweep" else {"field": c} for c in columns]
    body = dag.AgGrid(id="sweeps-grid", rowData=rows, columnDefs=defs, style={"height": "420px"},
                      defaultColDef={"sortable": True, "filter": True, "resizable": True})
    return html.Div([html.H2("Sweeps"), body if rows else message("No sweeps yet.")])


def register(ctx: Ctx) -> None:
    @ctx.app.callback(
        Output("sweep-best", "figure"), Output("sweep-states", "figure"), Output("sweep-scatter", "figure"),
        Output("sweep-parallel", "figure"), Output("sweep-importance", "figure"),
        Output("sweep-importance-method", "children"), Output("sweep-trials", "rowData"),
        Output("sweep-trials", "columnDefs"), Output("sweep-poll", "disabled"),
        Output("sweep-params", "options"), Output("sweep-params-note", "children"),
        Input("sweep-poll", "n_intervals"), Input("sweep-params", "value"), State("sweep-id", "data"),
    )
    def _charts(_n: int | None, picked: list[str] | None, sweep_id: str) -> tuple[Any, ...]:
        sweep = find_sweep(sweep_id, ctx.settings)
        objective, direction = objective_of(sweep)
        trials, chosen = trials_frame(sweep_id, objective, ctx.settings)
        if trials.empty:
            nothing = empty_figure("", "no trials yet")
            return (nothing,) * 5 + ("", [], [], False, [], "")
        params = hyperparameters(sweep, trials, chosen)
        scores, method = importance(sweep_id, sweep, trials, params, ctx.settings)
        shown = plotted(params, scores, picked)
        labels = labels_for(params)
        note = f"{len(shown)} of {len(params)} hyperparameters plotted"
        note += " (your pick)." if picked else " (the most important first; pick others above)."
        note += " " + legend({p: labels[p] for p in shown})
        columns = [{"field": "job", "cellRenderer": "markdown", "width": 130}] + [
            {"field": c, "headerName": labels.get(c, c), "headerTooltip": c}
            for c in ("trialNumber", "state", "objective", *params) if c in trials]
        finished = trials["state"].isin(orders.FINAL).all() and (sweep or {}).get("state", "done") in sweep_driver.FINAL
        options = [{"label": p, "value": p} for p in sorted(params, key=lambda p: -scores.get(p, 0.0))]
        return (best_so_far(trials, direction, objective), states_figure(trials),
                scatters(trials, shown, objective, labels), parallel(trials, shown, objective, labels),
                importance_figure(scores, labels), method, trial_rows(ctx, trials, params), columns, bool(finished),
                options, note)
