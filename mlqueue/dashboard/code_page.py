"""Code: the scripts the farm knows, each version by hash, an editor, save, diff, and "Run on…" a machine.

The editor is Ace, bundled in ``assets/ace`` (nothing from a CDN) and loaded by this page only;
``assets/mlqueue.js`` copies its text into the ``code-text`` store as you type. Saving is the use case
``service.save_script_version`` — the same hash-addressed bundles as ``mlqueue scripts push`` and
``POST /scripts/{name}/versions`` — so a version is never overwritten. Running submits an ordinary Job
pinned to the version shown (``scriptHash``) and, when a machine is chosen, to that machine (``worker``),
validated exactly as ``mlqueue submit`` does.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import dash
from dash import Input, Output, State, dcc, html

from mlqueue import script_versions, scripts, service
from mlqueue.dashboard.common import Ctx, message
from mlqueue.errors import MlqueueError
from mlqueue.store import workers as worker_store

ANY_MACHINE = ""
SWEEP_TEMPLATE = """name: {name}-sweep
base:
  scriptName: {name}
  scriptHash: {version}
space:                      # the fields to vary: {{float: [lo, hi]}}, {{int: [lo, hi]}}, {{choice: [a, b]}}
  lr: {{float: [0.001, 0.1], log: true}}
objective: loss
method: random
budget: {{maxTrials: 6, maxParallel: 2}}
earlyStopping: none
"""


def script_options(ctx: Ctx) -> list[dict[str, str]]:
    return [{"label": f"{s['name']} ({s['source']})", "value": s["name"]} for s in scripts.available(ctx.settings)]


def version_options(found: list[dict[str, Any]]) -> list[dict[str, str]]:
    options = []
    for index, version in enumerate(found):
        saved = version.get("savedDate")
        when = saved.strftime("%m-%d %H:%M:%S") if hasattr(saved, "strftime") else "built in"
        current = " · current" if index == 0 else ""
        options.append({"label": f"{version['sha256'][:12]} · {when}{current}", "value": version["sha256"]})
    return options


def machine_options(ctx: Ctx) -> list[dict[str, str]]:
    """"Any free machine", then every online worker (heartbeat fresh) by name."""
    online = worker_store.alive(ctx.settings)
    return [{"label": "any free machine", "value": ANY_MACHINE}] + [{"label": w["name"], "value": w["name"]}
                                                                    for w in online]


def diff_view(text: str) -> list[Any]:
    """A unified diff, its added, removed and hunk lines coloured."""
    if not text:
        return ["(no difference)"]
    spans = []
    for line in text.splitlines(keepends=True):
        kind = "add" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else "hunk" if line.startswith("@@") else None
        spans.append(html.Span(line, className=kind) if kind else line)
    return spans


def run_pin(name: str, version: str, ctx: Ctx) -> dict[str, str] | None:
    """How a Job names this version: ``scriptHash`` for a pushed one; nothing for the built-in file when
    no pushed version hides it (a built-in file has no bundle to pin); None when it cannot be run."""
    found = script_versions.versions(name, ctx.settings)
    chosen = next((v for v in found if v["sha256"] == version), None)
    if chosen is None or chosen["source"] == "pushed":
        return {"scriptHash": version}
    return {} if chosen is found[0] else None


def _job_for(job_text: str | None, name: str) -> bool:
    """Whether the Job JSON being edited is already one for script ``name``."""
    try:
        job = json.loads(job_text or "")
    except json.JSONDecodeError:
        return False
    return isinstance(job, dict) and job.get("scriptName") == name


def layout(ctx: Ctx, _arg: str | None, query: dict[str, str]) -> html.Div:
    script = query.get("script")
    return html.Div([
        html.H2("Code"),
        dcc.Store(id="code-name", data=script), dcc.Store(id="code-text"), dcc.Store(id="code-loaded"),
        dcc.Store(id="code-ack"),
        html.Div([
            html.Div([
                html.Div([html.Label("Script"),
                          dcc.Dropdown(id="code-script", options=script_options(ctx), value=script,
                                       placeholder="open a script…")], className="field"),
                html.Div([html.Label("Version (by SHA-256)"),
                          dcc.Dropdown(id="code-version", options=[], clearable=False)], className="field"),
                html.Div(id="code-files", className="hint"),
                html.Div([html.Label("New file"),
                          dcc.Input(id="code-new-name", type="text", placeholder="name, e.g. my_trainer",
                                    debounce=False, style={"width": "100%", "boxSizing": "border-box"}),
                          html.Button("New file", id="code-new", className="secondary",
                                      style={"marginTop": "6px"})], className="field"),
                html.P("Saving stores a new version (its hash); Jobs that ran an older one keep it.",
                       className="hint"),
            ], className="code-side card"),
            html.Div([
                html.Div(id="code-editor"),
                html.Div([html.Button("Save", id="code-save"), html.Span(id="code-save-message")],
                         className="toolbar", style={"marginTop": "8px", "alignItems": "center"}),
            ], className="card"),
        ], className="code-layout"),
        html.Div([
            html.Section([html.H3("Run"),
                          html.Label("Job (JSON), prefilled from the script's Params"),
                          dcc.Textarea(id="code-job", value="{}")], className="card"),
            html.Section([html.Label("Run on…"),
                          dcc.Dropdown(id="code-worker", options=machine_options(ctx),
                                       value=query.get("worker", ANY_MACHINE), clearable=False),
                          html.Button("Run", id="code-run", style={"marginTop": "10px"}),
                          html.Div(id="code-run-message")], className="card"),
        ], className="run-row"),
        html.Section([html.H3("Run as sweep"),
                      html.Label("Sweep file (YAML, as for `mlqueue sweep`): its base Job runs the version shown"),
                      dcc.Textarea(id="code-sweep", value="", style={"width": "100%", "height": "190px",
                                                                     "fontFamily": "monospace",
                                                                     "boxSizing": "border-box"}),
                      html.Button("Run as sweep", id="code-sweep-run", style={"marginTop": "8px"}),
                      html.Div(id="code-sweep-message")], className="card"),
        html.Section([html.H3("Changes from the previous version"), html.Pre(id="code-diff", className="diff")],
                     className="card"),
    ])


def register(ctx: Ctx) -> None:
    ctx.app.clientside_callback("function (loaded) { return window.mlqueueEditor.load(loaded); }",
                                Output("code-ack", "data"), Input("code-loaded", "data"))

    @ctx.app.callback(Output("code-name", "data"), Output("code-version", "options"),
                      Output("code-version", "value"), Output("code-save-message", "children"),
                      Input("code-script", "value"), Input("code-new", "n_clicks"),
                      State("code-new-name", "value"))
    def _pick(script: str | None, _new: int | None, new_name: str | None) -> tuple[Any, ...]:
        """Open a script (its versions, newest selected), or start a new file."""
        name = script
        if dash.ctx.triggered_id == "code-new":
            name = (new_name or "").strip().removesuffix(".py")
            if not scripts.NAME_RE.match(name):
                return dash.no_update, dash.no_update, dash.no_update, message(
                    "A script name is letters, digits, _ and - (e.g. my_trainer).", "error")
        if not name:
            return None, [], None, ""
        found = script_versions.versions(name, ctx.settings)  # [] for a new script (not an error here)
        note = "" if found else message(f"New script {name}: write it, then Save.", "info")
        if found and found[0]["source"] == "builtin":
            note = message(f"{name} is built in: saving stores a pushed version, which every Job naming {name} "
                           "runs from then on.", "info")
        return name, version_options(found), found[0]["sha256"] if found else None, note

    @ctx.app.callback(Output("code-loaded", "data"), Output("code-diff", "children"), Output("code-job", "value"),
                      Output("code-files", "children"),
                      Input("code-version", "value"), Input("code-name", "data"), State("code-job", "value"))
    def _load(version: str | None, name: str | None, job_text: str | None) -> tuple[Any, ...]:
        """Put a version's text in the editor, its diff below, and a Job template from its Params (unless
        the Job being edited is already for this script: a save must not throw the user's edits away)."""
        nonce = secrets.token_hex(4)
        if not name:
            return {"text": "", "nonce": nonce}, "", "{}", ""
        if not version:
            text = script_versions.NEW_SCRIPT.format(name=name)
            job = {"scriptName": name, "epochs": 3}
            return {"text": text, "nonce": nonce}, "(a new script: nothing saved yet)", json.dumps(job, indent=2), \
                f"files: {name}.py"
        shown = service.script_source(name, version, ctx.settings)
        changes = service.script_diff(name, version, None, ctx.settings)["diff"]
        keep = _job_for(job_text, name)
        job = service.script_template(name, version, ctx.settings)
        files = f"files: {', '.join(shown['files'])} (editing {shown['entry']})" if len(shown["files"]) > 1 \
            else f"files: {shown['entry']}"
        return {"text": shown["text"], "nonce": nonce}, diff_view(changes), \
            dash.no_update if keep else json.dumps(job, indent=2), files

    @ctx.app.callback(Output("code-sweep", "value"), Input("code-version", "value"), Input("code-name", "data"),
                      State("code-sweep", "value"))
    def _sweep_template(version: str | None, name: str | None, current: str | None) -> Any:
        """A sweep file over the version shown (kept when one for this script is being edited)."""
        if not name or not version:
            return ""
        pin = run_pin(name, version, ctx) or {}
        if current and f"scriptName: {name}\n" in current:
            return re.sub(r"scriptHash: \w+", f"scriptHash: {pin['scriptHash']}", current) if pin else current
        text = SWEEP_TEMPLATE.format(name=name, version=pin.get("scriptHash", ""))
        return text if pin else text.replace("  scriptHash: \n", "")

    @ctx.app.callback(Output("code-sweep-message", "children"), Input("code-sweep-run", "n_clicks"),
                      State("code-sweep", "value"), State("code-worker", "value"), prevent_initial_call=True)
    def _run_sweep(_clicks: int | None, text: str | None, worker: str | None) -> Any:
        """Check the sweep file as `mlqueue sweep` does and start it (the HQ's driver runs its trials)."""
        from mlqueue import sweeps
        from mlqueue.sweeps import driver as sweep_driver

        try:
            spec = sweeps.parse_text(text or "", "sweep", ctx.settings)
            if worker:
                spec.file.base["worker"] = worker
            sweep_id = sweep_driver.create(spec, text or "", "dashboard code page", by="dashboard",
                                           settings=ctx.settings)
        except (sweeps.SweepError, MlqueueError, ValueError) as exc:
            return html.Pre(str(exc), className="message error")
        return html.Div(["Sweep started: ", dcc.Link(f"sweep {sweep_id}", href=ctx.href(f"/sweep/{sweep_id}"),
                                                     id="code-sweep-link")], className="message ok")

    @ctx.app.callback(Output("code-version", "options", allow_duplicate=True),
                      Output("code-version", "value", allow_duplicate=True),
                      Output("code-save-message", "children", allow_duplicate=True),
                      Output("code-script", "options"),
                      Input("code-save", "n_clicks"), State("code-name", "data"), State("code-text", "data"),
                      State("code-version", "value"), prevent_initial_call=True)
    def _save(_clicks: int | None, name: str | None, text: str | None, base: str | None) -> tuple[Any, ...]:
        """Store the editor's text as a new version of the script (or say why not)."""
        if not name:
            return dash.no_update, dash.no_update, message("Open a script or start a new file first.", "error"), \
                dash.no_update
        try:
            saved = service.save_script_version(name, text or "", base, ctx.settings)
        except MlqueueError as exc:
            return dash.no_update, dash.no_update, message(str(exc), "error"), dash.no_update
        note = f"Saved {name} version {saved['sha256'][:12]}" if saved["created"] else \
            f"Unchanged: {name} is already version {saved['sha256'][:12]}"
        found = script_versions.versions(name, ctx.settings)
        return version_options(found), saved["sha256"], html.Span(note, id="code-saved",
                                                                  **{"data-sha": saved["sha256"]}), \
            script_options(ctx)

    @ctx.app.callback(Output("code-run-message", "children"), Input("code-run", "n_clicks"),
                      State("code-name", "data"), State("code-version", "value"), State("code-worker", "value"),
                      State("code-job", "value"), prevent_initial_call=True)
    def _run(_clicks: int | None, name: str | None, version: str | None, worker: str | None,
             job_text: str | None) -> Any:
        """Submit the Job for the version shown, on the chosen machine."""
        if not name or not version:
            return message("Save the script first: a Job runs a saved version.", "error")
        try:
            job = json.loads(job_text or "{}")
        except json.JSONDecodeError as exc:
            return message(f"The Job is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
                           "error")
        if not isinstance(job, dict):
            return message("The Job must be a JSON object.", "error")
        pin = run_pin(name, version, ctx)
        if pin is None:
            return message("This is the built-in version, which pushed versions now hide: open it, Save it as a "
                           "new version, and run that.", "error")
        job.update({"scriptName": name, **pin})
        if worker:
            job["worker"] = worker
        else:
            job.pop("worker", None)
        try:
            [job_id] = service.submit([job], "dashboard", ctx.settings, where=["Job"])
        except MlqueueError as exc:
            return message(f"Refused, nothing was submitted: {exc}", "error")
        where = worker or "the first free machine"
        return html.Div([f"Job {job_id} queued for {where}: ",
                         dcc.Link("watch it on Machines", href=ctx.href("/machines"), id="code-run-machines"),
                         " · ", dcc.Link("its page", href=ctx.href(f"/job/{job_id}"), id="code-run-job")],
                        className="message ok", id="code-run-queued", **{"data-job": job_id})
