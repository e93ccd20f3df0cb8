"""The New job form's richer parts: list fields as rows, ranges, a live Job preview, a sweep draft.

``new_job_page`` draws one input per field of a script's ``Params`` model. This module adds what makes
a trainer's form usable without reading its source: a list of objects (nn.py's ``hiddenLayers``) is a
table of rows to add, remove and reorder, each cell a menu or a number; every number says its allowed
range; the Job as it will be submitted is shown while it is edited; and any field can be ticked "sweep"
to turn the form into a sweep file over those fields (a range around the value, every choice of a
menu), editable before it is started.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from dash import ALL, MATCH, Input, Output, State, dcc, html, no_update
from dash import ctx as callback_ctx

from mlqueue.dashboard.common import Ctx, message
from mlqueue.errors import MlqueueError

NOT_SWEPT_KINDS = {"string", "json"}
NOT_SWEPT = {"projectName", "timeLimit", "maxAttempts", "seed"}
ROW_INPUT_WIDTH = "130px"


# --------------------------------------------------------------------------- schema helpers


def resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A property with ``$ref`` followed and ``anyOf [X, null]`` reduced to X (keeping its own description)."""
    if "$ref" in prop:
        prop = {**defs.get(prop["$ref"].rsplit("/", 1)[-1], {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    variants = [v for v in prop.get("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1:
        prop = {**resolve(variants[0], defs), **{k: v for k, v in prop.items() if k != "anyOf"}}
    return prop


def item_columns(prop: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """For a list of objects with simple fields: one column spec per field; else None."""
    if prop.get("type") != "array":
        return None
    items = resolve(prop.get("items") or {}, defs)
    if items.get("type") != "object" or not items.get("properties"):
        return None
    columns = []
    for name, sub in items["properties"].items():
        sub = resolve(sub, defs)
        kind = "enum" if sub.get("enum") else sub.get("type")
        if kind not in ("enum", "number", "integer", "boolean", "string"):
            return None
        columns.append({"name": name, "kind": kind, "choices": sub.get("enum") or [], "default": sub.get("default"),
                        "range": range_text(sub), "description": sub.get("description") or "", "schema": sub})
    return columns


def range_text(prop: dict[str, Any]) -> str:
    """The allowed range of a number as a person writes it: ``0 < x ≤ 10``, ``≥ 1``."""
    low = ("<", prop["exclusiveMinimum"]) if "exclusiveMinimum" in prop else (("≤", prop["minimum"])
                                                                           if "minimum" in prop else None)
    high = ("<", prop["exclusiveMaximum"]) if "exclusiveMaximum" in prop else (("≤", prop["maximum"])
                                                                            if "maximum" in prop else None)
    if low and high:
        return f"{low[1]:g} {low[0]} x {high[0]} {high[1]:g}"
    if low:
        return f"{'>' if low[0] == '<' else '≥'} {low[1]:g}"
    if high:
        return f"{high[0]} {high[1]:g}"
    return ""


# --------------------------------------------------------------------------- rows editor


def _cell(name: str, row: int, column: dict[str, Any], value: Any) -> Any:
    ident = {"type": "rows-cell", "name": name, "row": row, "col": column["name"]}
    if column["kind"] == "enum":
        return dcc.Dropdown(id=ident, options=column["choices"], value=value, clearable=False,
                            style={"width": ROW_INPUT_WIDTH})
    if column["kind"] == "boolean":
        return dcc.Checklist(id=ident, options=[{"label": "", "value": "yes"}], value=["yes"] if value else [])
    kind = "number" if column["kind"] in ("number", "integer") else "text"
    return dcc.Input(id=ident, type=kind, value=value, step="any", style={"width": ROW_INPUT_WIDTH})


def _row(name: str, index: int, count: int, columns: list[dict[str, Any]], item: dict[str, Any]) -> html.Tr:
    def op(label: str, action: str, disabled: bool, title: str) -> html.Button:
        return html.Button(label, id={"type": "rows-op", "name": name, "row": index, "op": action},
                           className="secondary", disabled=disabled, title=title, style={"padding": "3px 8px"})

    cells = [html.Td(_cell(name, index, c, item.get(c["name"], c["default"]))) for c in columns]
    return html.Tr([html.Td(f"{index + 1}", className="hint"), *cells,
                    html.Td([op("↑", "up", index == 0, "move up"), op("↓", "down", index == count - 1, "move down"),
                             op("✕", "remove", False, "remove this row")], style={"whiteSpace": "nowrap"})],
                   className="rows-row")


def rows_body(name: str, columns: list[dict[str, Any]], items: list[dict[str, Any]]) -> list[Any]:
    head = html.Tr([html.Th("#"), *[html.Th(c["name"], title=f"{c['description']} {c['range']}".strip())
                                    for c in columns], html.Th("")])
    hints = html.Tr([html.Td(""), *[html.Td(c["range"] or c["description"][:40], className="hint")
                                    for c in columns], html.Td("")])
    return [html.Table([html.Thead([head, hints]),
                        html.Tbody([_row(name, i, len(items), columns, item) for i, item in enumerate(items)])],
                       className="list")]


def rows_input(name: str, columns: list[dict[str, Any]], value: Any) -> html.Div:
    """The rows editor; the list itself lives in a hidden text field the form reads like any JSON field."""
    items = [dict(item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    items = items or [{c["name"]: c["default"] for c in columns}]  # one row to start from
    return html.Div([
        html.Div(rows_body(name, columns, items), id={"type": "rows-body", "name": name}),
        html.Button("+ add a row", id={"type": "rows-add", "name": name}, className="secondary"),
        dcc.Store(id={"type": "rows-columns", "name": name}, data=columns),
        dcc.Textarea(id={"type": "new-field", "name": name}, value=json.dumps(items), style={"display": "none"}),
    ])


def _typed(column: dict[str, Any], raw: Any) -> Any:
    if column["kind"] == "boolean":
        return "yes" in (raw or [])
    if column["kind"] == "integer" and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


def items_from_cells(values: list[Any], ids: list[dict[str, Any]], columns: list[dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    by_name = {c["name"]: c for c in columns}
    rows: dict[int, dict[str, Any]] = {}
    for value, ident in zip(values, ids, strict=True):
        rows.setdefault(ident["row"], {})[ident["col"]] = _typed(by_name[ident["col"]], value)
    return [rows[i] for i in sorted(rows)]


def apply_op(items: list[dict[str, Any]], op: str, row: int, columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add (a copy of the last row, else the defaults), remove, or move a row."""
    items = list(items)
    if op == "add":
        items.append(dict(items[-1]) if items else {c["name"]: c["default"] for c in columns})
    elif op == "remove" and 0 <= row < len(items):
        items.pop(row)
    elif op in ("up", "down"):
        other = row - 1 if op == "up" else row + 1
        if 0 <= row < len(items) and 0 <= other < len(items):
            items[row], items[other] = items[other], items[row]
    return items


# --------------------------------------------------------------------------- sweep draft


def sweep_toggle(name: str, kind: str) -> Any:
    if kind in NOT_SWEPT_KINDS or name in NOT_SWEPT:
        return None
    return dcc.Checklist(id={"type": "sweep-pick", "name": name}, options=[{"label": " sweep", "value": "on"}],
                         value=[], inline=True, className="hint", style={"float": "right"})


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] * (0.99 if schema["exclusiveMaximum"] > 0 else 1.01)
    return low, high


def _clip(value: float, low: float | None, high: float | None) -> float:
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value


def space_for(kind: str, schema: dict[str, Any], value: Any, columns: list[dict[str, Any]] | None = None) -> Any:
    """A search range for one field, around its current value and inside its allowed range."""
    if columns is not None:
        items = value if isinstance(value, list) and value else [{}]
        each = {c["name"]: space_for(c["kind"], c["schema"], items[0].get(c["name"], c["default"])) for c in columns}
        return {"repeat": {"int": [1, max(3, len(items))]}, "each": {k: v for k, v in each.items() if v}}
    if kind == "enum":
        return {"choice": list(schema.get("enum") or [])}
    if kind == "boolean":
        return {"choice": [True, False]}
    low, high = _bounds(schema)
    if kind == "integer":
        v = int(value) if isinstance(value, int | float) else int(low or 1)
        lo, hi = (max(1, v // 2), max(v * 2, 2)) if v > 0 else (int(low or 0), int(low or 0) + 10)
        return {"int": [int(_clip(lo, low, high)), int(_clip(hi, low, high))]}
    if kind == "number":
        v = float(value) if isinstance(value, int | float) else 0.0
        if v > 0:
            lo, hi = _clip(v / 4, low, high), _clip(v * 4, low, high)
            spec: dict[str, Any] = {"float": [float(f"{lo:.3g}"), float(f"{hi:.3g}")]}
            if lo > 0 and hi / lo >= 10:
                spec["log"] = True
            return spec
        lo = float(low or 0.0)
        hi = float(high) * 0.5 if high is not None and math.isfinite(high) else lo + 1.0
        if "exclusiveMinimum" in schema:  # the bound itself is not allowed: start a little above it
            return {"float": [float(f"{lo + (hi - lo) / 1000:.3g}"), float(f"{hi:.3g}")], "log": lo == 0}
        return {"float": [lo, float(f"{hi:.3g}")]}
    return None


def sweep_text(script: str | None, doc: dict[str, Any], picked: list[str], specs: dict[str, Any]) -> str:
    """A sweep file over the picked fields, with the form's Job as its base."""
    if not picked:
        return ""
    space = {}
    for name in picked:
        spec = specs.get(name) or {}
        schema = spec.get("schema") or {}
        found = space_for(spec.get("kind", ""), schema, doc.get(name, schema.get("default")), spec.get("columns"))
        if found:
            space[name] = found
    sweep = {"name": f"{script}-sweep", "base": doc, "space": space, "objective": "loss", "method": "tpe",
             "budget": {"maxTrials": 20, "maxParallel": 2}}
    return yaml.safe_dump(sweep, sort_keys=False, default_flow_style=None, width=100)


def specs_for(script: str | None, settings: Any) -> dict[str, Any]:
    """What the sweep draft needs of each field: kind, schema, and for rows their columns."""
    from mlqueue.dashboard import new_job_page

    fields, _ = new_job_page.form_fields(script, settings)
    return {f.name: {"kind": f.kind, "schema": f.schema, "columns": f.columns} for f in fields}


def preview_layout() -> html.Div:
    return html.Div([
        html.Div([html.H3("The Job as it will be submitted"), html.Pre(id="new-preview")], className="card"),
        html.Div([
            html.H3("Sweep over the fields ticked \"sweep\""),
            html.Div("Tick \"sweep\" beside any field: a range around its value (every choice of a menu) is "
                     "added here. Edit the file if you like, then start it; trials run as ordinary Jobs.",
                     className="hint"),
            dcc.Textarea(id="new-sweep-text", value="", rows=10, style={"width": "100%", "fontFamily": "monospace"}),
            html.Button("Start sweep", id="new-sweep-start"), html.Div(id="new-sweep-result"),
            dcc.Store(id="new-specs"),
        ], className="card", id="new-sweep"),
    ])


# --------------------------------------------------------------------------- callbacks


def register(ctx: Ctx, collect: Any) -> None:
    """``collect(script, values, ids, kinds, extra_text)`` -> (document or None, errors) builds the Job."""
    app = ctx.app

    @app.callback(Output({"type": "rows-body", "name": MATCH}, "children"),
                  Output({"type": "new-field", "name": MATCH}, "value"),
                  Input({"type": "rows-cell", "name": MATCH, "row": ALL, "col": ALL}, "value"),
                  Input({"type": "rows-op", "name": MATCH, "row": ALL, "op": ALL}, "n_clicks"),
                  Input({"type": "rows-add", "name": MATCH}, "n_clicks"),
                  State({"type": "rows-cell", "name": MATCH, "row": ALL, "col": ALL}, "id"),
                  State({"type": "rows-columns", "name": MATCH}, "data"), prevent_initial_call=True)
    def _rows(values: list[Any], _ops: list[Any], _add: Any, ids: list[dict[str, Any]],
              columns: list[dict[str, Any]]) -> tuple[Any, str]:
        items = items_from_cells(values, ids, columns)
        trigger = callback_ctx.triggered_id or {}
        if trigger.get("type") == "rows-cell":
            return no_update, json.dumps(items)
        if trigger.get("type") == "rows-op" and not any(t["value"] for t in callback_ctx.triggered):
            return no_update, no_update  # a button drawn anew, not clicked
        op = "add" if trigger.get("type") == "rows-add" else trigger.get("op", "")
        items = apply_op(items, op, int(trigger.get("row", -1)), columns)
        return rows_body(trigger["name"], columns, items), json.dumps(items)

    @app.callback(Output("new-specs", "data"), Input("new-script", "value"))
    def _specs(script: str | None) -> dict[str, Any]:
        return specs_for(script, ctx.settings)

    @app.callback(Output("new-preview", "children"), Output("new-sweep-text", "value"),
                  Input({"type": "new-field", "name": ALL}, "value"), Input("new-extra", "value"),
                  Input({"type": "sweep-pick", "name": ALL}, "value"),
                  State({"type": "new-field", "name": ALL}, "id"), State({"type": "sweep-pick", "name": ALL}, "id"),
                  State("new-kinds", "data"), State("new-script", "value"), State("new-specs", "data"))
    def _preview(values: list[Any], extra_text: str | None, picks: list[Any], ids: list[dict[str, str]],
                 pick_ids: list[dict[str, str]], kinds: dict[str, Any] | None, script: str | None,
                 specs: dict[str, Any] | None) -> tuple[str, Any]:
        doc, errors = collect(script, values, ids, kinds or {}, extra_text)
        if doc is None:
            return "(fix the fields marked in red to see the Job)\n" + "\n".join(errors), no_update
        picked = [i["name"] for i, v in zip(pick_ids, picks, strict=True) if v]
        return json.dumps(doc, indent=2), sweep_text(script, doc, picked, specs or {})

    @app.callback(Output("new-sweep-result", "children"), Input("new-sweep-start", "n_clicks"),
                  State("new-sweep-text", "value"), prevent_initial_call=True)
    def _start(_clicks: int | None, text: str | None) -> Any:
        from mlqueue import jobs, sweeps
        from mlqueue.sweeps import driver as sweep_driver

        if not (text or "").strip():
            return message("Tick \"sweep\" beside a field first: the sweep file is empty.", "error")
        try:
            spec = sweeps.parse_text(text or "", "sweep from the form", ctx.settings)
            sweep_id = sweep_driver.create(spec, text or "", "dashboard form", by="dashboard", settings=ctx.settings)
        except (sweeps.SweepError, jobs.JobError, MlqueueError) as exc:  # a bad file, or a read-only token
            return html.Pre(str(exc), className="message error")
        link = dcc.Link(sweep_id, href=ctx.href(f"/sweep/{sweep_id}"), id="new-sweep-link")
        return html.Div(["Started sweep ", link, " (trials run as ordinary Jobs)."], className="message ok")
