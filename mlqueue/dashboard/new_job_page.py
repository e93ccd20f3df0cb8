"""New job: pick a script, fill its fields, submit through ``service.submit``, as the CLI and the API do.

The form comes from the script's pydantic ``Params`` model when it has one (plus the Job fields mlqueue
itself reads); everything else, or everything for a script without ``Params``, is a JSON object editor.
It can be pre-filled from a past Job (``?from=<jobId>``, "clone and edit") or from an uploaded Job file.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from dash import ALL, Input, Output, State, dcc, html, no_update

from mlqueue import jobs, orders, outcomes, scripts, service
from mlqueue.dashboard import job_form
from mlqueue.dashboard.common import Ctx, message
from mlqueue.errors import MlqueueError

COMMON_FIELDS = ("projectName", "timeLimit", "maxAttempts")
NOT_CLONED = {"scriptName", "sweepId", "trialNumber", "requeuedFrom"}  # a variant is not a sweep's trial
FIELD_ERROR = re.compile(r"field '([^']+)': (.+)")
SIMPLE_KINDS = ("integer", "number", "boolean", "string")


@dataclass(frozen=True)
class FormField:
    name: str
    kind: str  # integer, number, boolean, string, enum or json
    default: Any = None
    required: bool = False
    description: str = ""
    choices: tuple[Any, ...] = ()
    schema: dict[str, Any] = field(default_factory=dict, compare=False)  # the property, for ranges and sweeps
    columns: list[dict[str, Any]] | None = field(default=None, compare=False)  # kind "rows": a list of objects


def _field(name: str, prop: dict[str, Any], required: bool, defs: dict[str, Any] | None = None) -> FormField:
    """A form field from one JSON-schema property (pydantic's ``model_json_schema``)."""
    prop = job_form.resolve(prop, defs or {})
    columns = job_form.item_columns(prop, defs or {})
    variants = [prop, *prop.get("anyOf", [])]
    choices = next((tuple(v["enum"]) for v in variants if v.get("enum")), ())
    types = [v.get("type") for v in variants if v.get("type") not in (None, "null")]
    kind = "rows" if columns else "enum" if choices else (types[0] if types and types[0] in SIMPLE_KINDS else "json")
    return FormField(name, kind, prop.get("default"), required, prop.get("description") or "", choices, prop, columns)


def fields_from_schema(schema: dict[str, Any], only: tuple[str, ...] | None = None) -> list[FormField]:
    required = set(schema.get("required", []))
    defs = schema.get("$defs", {})
    return [_field(name, prop, name in required, defs) for name, prop in schema.get("properties", {}).items()
            if only is None or name in only]


def form_fields(script_name: str | None, settings: Any) -> tuple[list[FormField], str | None]:
    """The script's fields and, when there is no ``Params`` model to build them from, why."""
    common = fields_from_schema(jobs.JobSpec.model_json_schema(), COMMON_FIELDS)
    if not script_name:
        return [], None
    try:
        module = scripts.load(scripts.resolve(script_name, settings))
    except Exception as exc:  # noqa: BLE001 - the form still works as a JSON editor
        return common, f"{script_name} cannot be loaded ({type(exc).__name__}: {exc}); write its fields as JSON."
    params = getattr(module, "Params", None)
    if params is None or not hasattr(params, "model_json_schema"):
        return common, f"{script_name} declares no Params model: write its fields as a JSON object below."
    return common + [f for f in fields_from_schema(params.model_json_schema()) if f.name not in COMMON_FIELDS], None


def _input(spec: FormField, value: Any) -> Any:
    ident = {"type": "new-field", "name": spec.name}
    if spec.kind == "rows":
        return job_form.rows_input(spec.name, spec.columns or [], value if value is not None else spec.default)
    if spec.kind in ("integer", "number"):
        return dcc.Input(id=ident, type="number", value=value, step="any", debounce=False)
    if spec.kind == "boolean":
        return dcc.Checklist(id=ident, options=[{"label": " yes", "value": "yes"}], value=["yes"] if value else [],
                             inline=True)
    if spec.kind == "enum":
        return dcc.Dropdown(id=ident, options=list(spec.choices), value=value, style={"width": "100%"})
    if spec.kind == "string":
        return dcc.Input(id=ident, type="text", value=value or "")
    return dcc.Textarea(id=ident, value="" if value is None else json.dumps(value), rows=2)


def render_field(spec: FormField, value: Any) -> html.Div:
    kind = "list of rows" if spec.kind == "rows" else spec.kind
    default = "required" if spec.required else (f"default {json.dumps(spec.default)}" if spec.kind != "rows" else "")
    hint = " · ".join(p for p in (spec.description, job_form.range_text(spec.schema), kind, default) if p)
    label = [html.Label(spec.name, style={"display": "inline"}), job_form.sweep_toggle(spec.name, spec.kind)]
    return html.Div([html.Div(label), _input(spec, value), html.Div(hint, className="hint"),
                     html.Div(id={"type": "new-error", "name": spec.name}, className="field-error")],
                    className="field", id=f"field-{spec.name}",
                    style={"gridColumn": "1 / -1"} if spec.kind == "rows" else {})


def split_prefill(fields: list[FormField], doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A past Job's fields: those the form has, and the rest (for the JSON editor)."""
    names = {f.name for f in fields}
    shown = {k: v for k, v in doc.items() if k in names}
    extra = {k: v for k, v in doc.items() if k not in names and k not in NOT_CLONED}
    return shown, extra


def read_field(spec: FormField, raw: Any) -> tuple[bool, Any]:
    """(present, value) of one form input; raises ValueError with a message for a bad value."""
    if spec.kind == "boolean":
        value = "yes" in (raw or [])
        return value != bool(spec.default) or spec.required, value
    if raw is None or raw == "":
        return False, None
    if spec.kind in ("integer", "number"):
        value = raw
        if spec.kind == "integer" and isinstance(raw, float) and raw.is_integer():
            value = int(raw)
    elif spec.kind == "json":
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    else:
        value = raw
    return value != spec.default or spec.required, value


def assign_errors(text: str, names: set[str], extra_names: set[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Split a ``JobError`` message into errors per form field, per JSON-editor field, and the rest."""
    by_field: dict[str, str] = {}
    extra, general = [], []
    for line in text.splitlines():
        found = FIELD_ERROR.search(line)
        if not found:
            continue
        top = found.group(1).split(".")[0]
        if top == "(document)":  # a whole-Job check: mark the first form field its message names
            top = next((n for n in re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", found.group(2)) if n in names), top)
        if top in names:
            by_field[top] = (by_field.get(top, "") + " " + found.group(2)).strip()
        elif top in extra_names:
            extra.append(f"{found.group(1)}: {found.group(2)}")
        else:
            general.append(f"{found.group(1)}: {found.group(2)}")
    if not (by_field or extra or general):
        general.append(text)
    return by_field, extra, general


def collect_document(script: str | None, values: list[Any], ids: list[dict[str, str]], kinds: dict[str, Any],
                     extra_text: str | None) -> tuple[dict[str, Any] | None, dict[str, str], str]:
    """The Job the form describes (None when a field cannot be read), errors per field, and the JSON editor's."""
    names = [i["name"] for i in ids]
    errors = {name: "" for name in names}
    specs = {n: FormField(n, k[0], k[1], k[2], "", tuple(k[3])) for n, k in (kinds or {}).items()}
    try:
        doc = json.loads(extra_text or "{}")
    except json.JSONDecodeError as exc:
        return None, errors, f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    if not isinstance(doc, dict):
        return None, errors, "must be a JSON object, like {\"lr\": 0.1}"
    for name, raw in zip(names, values, strict=True):
        if name not in specs:
            continue
        try:
            present, value = read_field(specs[name], raw)
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        if present:
            doc[name] = value
    if any(errors.values()):
        return None, errors, ""
    return {"scriptName": script or doc.get("scriptName"), **{k: v for k, v in doc.items() if k != "scriptName"}}, \
        errors, ""


def past_job(job_id: str, settings: Any) -> tuple[dict[str, Any], str]:
    """A past Job's own fields, and its full id (``job_id`` may be a prefix)."""
    detail = outcomes.job_detail(job_id, settings)
    return detail["job"], detail["jobId"]


def decode_upload(contents: str, filename: str | None) -> dict[str, Any]:
    """The first Job of an uploaded JSON file (one object, or a list of them)."""
    _, _, data = contents.partition(",")
    text = base64.b64decode(data).decode("utf-8", errors="replace")
    docs = jobs.parse_text(text, filename or "upload")
    if not docs or not isinstance(docs[0], dict):
        raise jobs.JobError(f"{filename}: holds no Job object")
    return docs[0]


def _script_of(doc: dict[str, Any]) -> str | None:
    name = doc.get("scriptName")
    return str(name).removesuffix(".py") if name else None


def layout(ctx: Ctx, _arg: str | None, query: dict[str, str]) -> html.Div:
    prefill: dict[str, Any] = {}
    note: Any = ""
    if query.get("from"):
        try:
            prefill, full_id = past_job(query["from"], ctx.settings)
            note = message(f"Pre-filled from job {full_id}: edit and submit a variant.", "info")
        except orders.OrderError as exc:
            note = message(str(exc), "error")
    options = [{"label": f"{s['name']} ({s.get('source', 'builtin')}, {s.get('kind', 'module')})", "value": s["name"]}
               for s in scripts.available(ctx.settings)]
    available = [o["value"] for o in options]
    script = _script_of(prefill) or (query.get("script") if query.get("script") in available else None) or \
        ("toy" if "toy" in available else (available[0] if available else None))
    return html.Div([
        html.H2("New job"),
        html.Div([
            html.Div([html.Label("Script"), dcc.Dropdown(id="new-script", options=options, value=script,
                                                         clearable=False)], style={"width": "300px"}),
            html.Div([html.Label("Pre-fill from job id"), dcc.Input(id="new-from", type="text", placeholder="job id")]),
            html.Button("Load", id="new-load", className="secondary"),
            dcc.Upload(id="new-upload", children=html.Div(["or drop a Job file here / ", html.A("choose a file")]),
                       style={"border": "1px dashed #adb5bd", "padding": "8px 14px", "borderRadius": "6px"}),
        ], className="toolbar card"),
        html.Div(note, id="new-prefill-msg"),
        dcc.Store(id="new-prefill", data=prefill), dcc.Store(id="new-kinds"),
        html.Div(id="new-form", className="card"),
        html.Button("Submit job", id="new-submit"),
        html.Div(id="new-result"),
        job_form.preview_layout(),
    ])


def register(ctx: Ctx) -> None:
    app = ctx.app

    @app.callback(Output("new-prefill", "data"), Output("new-script", "value"), Output("new-prefill-msg", "children"),
                  Input("new-load", "n_clicks"), Input("new-upload", "contents"),
                  State("new-from", "value"), State("new-upload", "filename"), prevent_initial_call=True)
    def _prefill(_clicks: int | None, contents: str | None, job_id: str | None, filename: str | None) -> tuple:
        from dash import ctx as callback_ctx

        try:
            if callback_ctx.triggered_id == "new-upload" and contents:
                doc, origin = decode_upload(contents, filename), f"file {filename}"
            elif job_id:
                doc, full_id = past_job(job_id.strip(), ctx.settings)
                origin = f"job {full_id}"
            else:
                return no_update, no_update, message("Give a job id to pre-fill from.", "error")
        except (jobs.JobError, orders.OrderError) as exc:
            return no_update, no_update, message(str(exc), "error")
        return doc, _script_of(doc) or no_update, message(f"Pre-filled from {origin}.", "info")

    @app.callback(Output("new-form", "children"), Output("new-kinds", "data"),
                  Input("new-script", "value"), Input("new-prefill", "data"))
    def _form(script: str | None, prefill: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
        fields, note = form_fields(script, ctx.settings)
        shown, extra = split_prefill(fields, prefill or {})
        children: list[Any] = [message(note, "info")] if note else []
        children.append(html.Div([render_field(f, shown.get(f.name, f.default)) for f in fields],
                                 className="form-grid"))
        children.append(html.Div([
            html.Label("Other fields (JSON object)" if fields else "Job fields (JSON object)"),
            dcc.Textarea(id="new-extra", value=json.dumps(extra, indent=2), rows=8, style={"width": "480px"}),
            html.Div("hyperparameters the form does not list, e.g. {\"lr\": 0.1}", className="hint"),
            html.Div(id="new-extra-error", className="field-error"),
        ], className="field"))
        kinds = {f.name: ["json" if f.kind == "rows" else f.kind, f.default, f.required, list(f.choices)]
                 for f in fields}
        return children, kinds

    @app.callback(Output({"type": "new-error", "name": ALL}, "children"), Output("new-extra-error", "children"),
                  Output("new-result", "children"),
                  Input("new-submit", "n_clicks"), State("new-script", "value"),
                  State({"type": "new-field", "name": ALL}, "value"), State({"type": "new-field", "name": ALL}, "id"),
                  State("new-kinds", "data"), State("new-extra", "value"), prevent_initial_call=True)
    def _submit(_clicks: int | None, script: str | None, values: list[Any], ids: list[dict[str, str]],
                kinds: dict[str, Any], extra_text: str | None) -> tuple[list[str], str, Any]:
        names = [i["name"] for i in ids]
        found, errors, extra_error = collect_document(script, values, ids, kinds, extra_text)

        def answer(extra_error: str = "", result: Any = "") -> tuple[list[str], str, Any]:
            return [errors.get(n, "") for n in names], extra_error, result

        if extra_error:
            return answer(extra_error)
        if found is None:
            return answer(result=message("Fix the fields marked in red; nothing was submitted.", "error"))
        doc = found
        try:
            [job_id] = service.submit([doc], "dashboard", ctx.settings, where=["form"])
        except jobs.JobError as exc:
            by_field, extra, general = assign_errors(str(exc), set(names), set(doc) - set(names))
            errors.update(by_field)
            note = message("The Job was refused; nothing was submitted. " + " ".join(general), "error")
            return answer("; ".join(extra), note)
        except MlqueueError as exc:  # e.g. a read-only token: say so instead of failing the callback
            return answer(result=message(f"{exc} Nothing was submitted.", "error"))
        link = dcc.Link(job_id, href=ctx.href(f"/job/{job_id}"), id="new-job-link")
        return answer(result=html.Div(["Submitted job ", link], className="message ok"))

    def preview_document(script: str | None, values: list[Any], ids: list[dict[str, str]], kinds: dict[str, Any],
                         extra_text: str | None) -> tuple[dict[str, Any] | None, list[str]]:
        doc, errors, extra_error = collect_document(script, values, ids, kinds, extra_text)
        return doc, [f"{k}: {v}" for k, v in errors.items() if v] + ([extra_error] if extra_error else [])

    job_form.register(ctx, preview_document)
