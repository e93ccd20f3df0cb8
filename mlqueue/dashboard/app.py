"""The Dash app: one router over the pages, a navigation bar, artifact downloads.

It is a plain Dash (Flask) app meant to be mounted by the HQ's API under ``/ui`` through WSGI middleware,
which also checks the token: the dashboard itself does no authentication.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import dash
import flask
from bson.errors import InvalidId
from dash import Input, Output, dcc, html
from gridfs.errors import NoFile

from mlqueue import artifacts
from mlqueue.dashboard import code_page, job_page, jobs_page, new_job_page, quality_page, sweep_page, workers_page
from mlqueue.dashboard.common import Ctx, message
from mlqueue.dashboard.first_paint import FirstPaint
from mlqueue.dashboard.table import JobTable
from mlqueue.settings import Settings, get_settings, read_json_file

log = logging.getLogger(__name__)
ASSETS = Path(__file__).with_name("assets")  # the Code page's editor (Ace) and the live output panes' script
# Dash puts every .js under assets/ on every page; Ace (0.5 MB) is for the Code page only, which loads it
# itself (assets/mlqueue.js, ``mlqueueEditor.load``): the other pages, the Jobs page first, start sooner.
LOADED_ON_DEMAND = ["ace"]
# The chunks Dash's components fetch only once the page they draw is rendered, after three requests in a
# row (layout, dependencies, the page): fetched at once with the page's scripts, the Jobs grid (the first
# page) starts that much sooner. The paths are the ones the components ask for (no version in the name).
PRELOADED = ["dash_ag_grid/async-community.js", "dash/dcc/async-dropdown.js"]

# First path segment -> (page module, navigation label or None for pages reached by links only).
PAGES: dict[str, tuple[Any, str | None]] = {
    "jobs": (jobs_page, "Jobs"), "job": (job_page, None), "sweeps": (sweep_page, "Sweeps"),
    "sweep": (sweep_page, None), "quality": (quality_page, "Model quality"), "machines": (workers_page, "Machines"),
    "workers": (workers_page, None), "code": (code_page, "Code"), "new": (new_job_page, "New job"),
}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
nav { display: flex; gap: 18px; align-items: center; padding: 10px 24px; background: #1d2330; }
nav a { color: #e8ebf0; text-decoration: none; font-size: 15px; }
nav a.brand { font-weight: 700; margin-right: 12px; }
nav a.active { color: #fff; border-bottom: 2px solid #4dabf7; }
nav .spacer { flex: 1; }
main { padding: 16px 24px; }
h2 { margin: 6px 0 12px; font-size: 22px; }
h3 { margin: 0 0 8px; font-size: 16px; }
.card { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 12px 16px; margin-bottom: 14px; }
.row { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
.row > * { flex: 1 1 380px; min-width: 0; }
.toolbar { display: flex; gap: 10px; flex-wrap: wrap; align-items: end; margin-bottom: 10px; }
.toolbar label { font-size: 12px; color: #555; display: block; }
.toolbar .filter { width: 170px; }
.toolbar .columns { flex: 1; min-width: 300px; }
button { background: #2d7ff9; color: #fff; border: 0; border-radius: 6px; padding: 7px 14px; cursor: pointer; }
button.secondary { background: #e9ecef; color: #1d2330; }
.badge { color: #fff; border-radius: 10px; padding: 2px 10px; font-size: 13px; }
table.kv { border-collapse: collapse; font-size: 13px; width: 100%; }
table.kv th { text-align: left; color: #555; font-weight: 500; padding: 3px 10px 3px 0; width: 35%;
  vertical-align: top; }
table.kv td { padding: 3px 0; word-break: break-all; }
table.list { border-collapse: collapse; font-size: 13px; width: 100%; }
table.list th, table.list td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; }
pre { background: #1d2330; color: #e8ebf0; padding: 10px; border-radius: 6px; max-height: 360px; overflow: auto;
  font-size: 12px; }
.message { padding: 8px 12px; border-radius: 6px; margin: 8px 0; }
.message.info { background: #e7f5ff; } .message.error { background: #ffe3e3; color: #a61e1e; }
.message.ok { background: #ebfbee; }
.field { margin-bottom: 10px; }
.field label { display: block; font-weight: 600; font-size: 13px; }
.field .hint { color: #666; font-size: 12px; }
.form-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 4px 28px; }
.field input[type=text] { width: 100%; box-sizing: border-box; padding: 5px; }
.field-error { color: #c92a2a; font-size: 13px; }
.summary { color: #555; font-size: 14px; margin-bottom: 8px; }
"""


class MountedAt:
    """WSGI wrapper: serve the same routes whether or not the server in front strips the mount prefix.

    Starlette's and a2wsgi's middleware move ``/ui`` into ``SCRIPT_NAME``; a server that does not (or a
    bare Flask run behind a proxy) hands ``/ui/...`` in ``PATH_INFO``, which is moved here.
    """

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], prefix: str) -> None:
        self.wsgi_app, self.prefix = wsgi_app, prefix

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if self.prefix and (path == self.prefix or path.startswith(self.prefix + "/")):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + self.prefix
            environ["PATH_INFO"] = path[len(self.prefix):] or "/"
        return self.wsgi_app(environ, start_response)


def flower_url(settings: Settings) -> str | None:
    """Where Flower is: ``flower_url``, or ``flower_port`` on the host the browser reached us by."""
    config = read_json_file(settings.home_config_path)
    url = getattr(settings, "flower_url", None) or config.get("flower_url")
    port = getattr(settings, "flower_port", None) or config.get("flower_port")
    if url:
        return str(url)
    if not port:
        return None
    host = flask.request.host.rsplit(":", 1)[0] if flask.has_request_context() else "127.0.0.1"
    return f"http://{host}:{port}/"


def navbar(ctx: Ctx) -> html.Nav:
    links: list[Any] = [dcc.Link("mlqueue", href=ctx.href("/"), className="brand")]
    links += [dcc.Link(label, href=ctx.href(f"/{key}"), id=f"nav-{key}") for key, (_, label) in PAGES.items() if label]
    links.append(html.Span(className="spacer"))
    url = flower_url(ctx.settings)
    if url:
        links.append(html.A("Flower ↗", href=url, target="_blank", id="nav-flower"))
    return html.Nav(links)


def route(ctx: Ctx, pathname: str | None, search: str | None) -> Any:
    """The page for a URL: ``/`` and ``/jobs`` the table, ``/job/<id>``, ``/sweep/<id>``, ``/new?from=<id>``..."""
    path = ctx.app.strip_relative_path(pathname or "/") or ""
    head, _, rest = path.partition("/")
    query = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items()}
    module, _ = PAGES.get(head or "jobs", (None, None))
    if module is None:
        return message(f"No page {pathname!r}. Pick one above.", "error")
    try:
        return module.layout(ctx, rest or None, query)
    except Exception as exc:  # noqa: BLE001 - one broken document must not take the whole dashboard down
        log.exception("dashboard page %s failed", pathname)
        return message(f"This page failed: {type(exc).__name__}: {exc}", "error")


def register_artifacts(ctx: Ctx) -> None:
    """``/artifacts/<fileId>``: stream an Outcome's artifact (see ``mlqueue.artifacts``) as a download."""

    def download(file_id: str) -> flask.Response:
        try:
            stream = artifacts.open_stream(file_id, ctx.settings)
        except (InvalidId, NoFile):
            flask.abort(404)
        name = flask.request.args.get("name") or (stream.metadata or {}).get("name") or file_id
        headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
                   "Content-Length": str(stream.length)}
        return flask.Response(iter(lambda: stream.readchunk() or None, None), headers=headers,
                              mimetype="application/octet-stream")

    ctx.app.server.add_url_rule("/artifacts/<file_id>", "mlqueue_artifact", download)


def create_dash_app(settings: Settings | None = None, prefix: str = "/ui/") -> dash.Dash:
    """The dashboard for the HQ these settings point at, to be mounted at ``prefix``.

    Starts reading the jobs table in the background at once, so the first visitor does not wait for it.
    """
    settings = settings or get_settings()
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    app = dash.Dash(__name__, requests_pathname_prefix=prefix, routes_pathname_prefix="/", title="mlqueue",
                    update_title=None, suppress_callback_exceptions=True, assets_folder=str(ASSETS),
                    assets_path_ignore=LOADED_ON_DEMAND, serve_locally=True)
    app.server.wsgi_app = MountedAt(app.server.wsgi_app, prefix.rstrip("/"))
    preload = "".join(f'<link rel="preload" as="script" href="{prefix}_dash-component-suites/{chunk}">'
                      for chunk in PRELOADED)
    app.index_string = app.index_string.replace("{%css%}", "{%css%}" + preload + "<style>" + STYLE + "</style>")
    ctx = Ctx(app=app, settings=settings, table=JobTable(settings))
    app.layout = lambda: html.Div([dcc.Location(id="url"), navbar(ctx), html.Main(id="page")])
    FirstPaint(ctx, [(ctx.href(f"/{key}"), label) for key, (_, label) in PAGES.items() if label]).install()

    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"))
    def _render(pathname: str | None, search: str | None) -> Any:
        return route(ctx, pathname, search)

    for module in {id(m): m for m, _ in PAGES.values()}.values():
        module.register(ctx)
    register_artifacts(ctx)
    ctx.table.start_loading()
    return app
