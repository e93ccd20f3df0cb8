"""The Jobs page's first rows drawn by the HQ into the HTML page itself, before any script has run.

A fresh browser needs ~1.5 s before AG Grid draws its first rows: 3.4 MB of JavaScript to run, three
Dash requests in a row (layout, dependencies, the page), then the grid's own row request and start. The
HTML index, though, is on screen at ~0.3 s. So for the Jobs page's URL (``/``, ``/jobs``, with its quick
filters in the query) the index carries a plain HTML copy of the page's first view — the rows the grid's
own first request gets (``jobs_page.rows_response``), in the columns the page shows
(``jobs_page.first_view``) — laid over the page until the grid has drawn its rows; ``assets/first_paint.js``
then removes it. Other pages get the index unchanged.

The copy never delays the page: the view computed last for the same URL (if recent) is served at once
while the next one is computed in the background (on a busy HQ at 100,000 Jobs a view takes more than
the bound below whenever the table has changed); with none at hand, the index waits at most ``WAIT``
seconds for one, then is served without it. Right after an HQ
restart the table is not read yet (its saved copy takes seconds at 100,000 Jobs), so the default view's
first rows are also saved, small, in the HQ's home (at most every ``SAVE_EVERY`` seconds) and served from
there, marked with their time, while the table is being read: the grid's own first rows then come from
the table's saved copy, about as old (kept rows older than it by more than its save interval are not
used). Every value is escaped: a Job's fields are whatever its submitter wrote.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import flask

from mlqueue.dashboard import jobs_page
from mlqueue.dashboard.common import Ctx
from mlqueue.dashboard.table import SAVE_EVERY as TABLE_SAVED_EVERY
from mlqueue.dashboard.table import snapshot_path
from mlqueue.settings import Settings

log = logging.getLogger(__name__)

WAIT = 0.3  # seconds the index may wait for the first rows (the index alone is served in ~0.3 s)
PREVIEW_ID = "jobs-preview"
SAVE_EVERY = 30.0  # seconds between two saves of the default view's first rows
RECENT = 60.0  # a view computed this recently is served at once, while the next one is computed
AGED = 5.0  # a view older than this says when it was computed
JOBS_PAGES = ("", "jobs")  # the first path segments that show the Jobs page (see app.route)
LINKS = {"jobId": "/job/", "sweepId": "/sweep/"}  # as the grid's markdown links (jobs_page.LINKED)
# Laid over the page (same navigation bar, title and grid position) until the grid has drawn its rows.
STYLE = """
#jobs-preview { position: absolute; top: 0; left: 0; right: 0; min-height: 100vh; z-index: 1000;
  background: #f5f6f8; }
#jobs-preview .preview-toolbar { height: 45px; margin-bottom: 10px; }
#jobs-preview .preview-grid { height: 640px; overflow: hidden; background: #fff; border: 1px solid #dde2eb;
  border-radius: 8px; font-size: 14px; }
#jobs-preview table { border-collapse: collapse; table-layout: fixed; }
#jobs-preview th, #jobs-preview td { width: 135px; max-width: 135px; padding: 0 15px; box-sizing: border-box;
  overflow: hidden; white-space: nowrap; text-overflow: ellipsis; text-align: left; }
#jobs-preview th { height: 48px; font-weight: 500; color: #181d1f; background: #f8f8f8; cursor: progress;
  border-bottom: 1px solid #dde2eb; }
#jobs-preview td { height: 42px; border-bottom: 1px solid #eef0f3; }
#jobs-preview td.number, #jobs-preview th.number { text-align: right; }
#jobs-preview td.link, #jobs-preview th.link { width: 120px; max-width: 120px; }
#jobs-preview thead tr + tr th { cursor: default; }
"""


@dataclass
class View:
    """The Jobs page's first view for one URL query: columns shown (id, header, kind), rows, summary."""

    columns: list[tuple[str, str, str]]
    rows: list[dict[str, Any]]
    count: int | None
    summary: str
    saved_at: str | None = None  # when a view read back from the HQ's home was computed (UTC)


def first_view(ctx: Ctx, query: dict[str, str]) -> View:
    """The page's first view, computed by the very functions the page and its grid use."""
    columns, shown, filter_model = jobs_page.first_view(ctx, query)
    kinds = dict(columns)
    defs = {d["colId"]: d["headerName"] for d in jobs_page.column_defs(columns, shown)}
    response = jobs_page.rows_response(ctx, {"startRow": 0, "endRow": jobs_page.PAGE_SIZE, "sortModel": [],
                                             "filterModel": filter_model})
    return View(columns=[(c, defs.get(c, c), kinds.get(c, "text")) for c in shown if c in kinds],
                rows=response["rowData"], count=response.get("rowCount"), summary=jobs_page.summary(ctx))


def saved_path(settings: Settings) -> Path:
    """Where the default view's first rows are kept between HQ runs: beside the saved table, same key."""
    table = snapshot_path(settings)
    return table.with_name(table.name.replace("jobs-table-", "first-rows-")).with_suffix(".json")


def save(settings: Settings, view: View) -> None:
    """Keep the default view's first rows in the HQ's home (replaced whole: a reader never sees half)."""
    path = saved_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    stamped = asdict(view) | {"saved_at": datetime.now(UTC).strftime("%H:%M:%S UTC")}
    partial.write_text(json.dumps(stamped, default=str))
    os.replace(partial, path)


def saved(settings: Settings) -> View | None:
    """The first rows an earlier HQ run kept, if they are no older than the saved table the grid starts
    from (by more than the table's own save interval); else None."""
    path, table = saved_path(settings), snapshot_path(settings)
    try:
        if not table.is_file() or path.stat().st_mtime < table.stat().st_mtime - TABLE_SAVED_EVERY:
            return None
        return View(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _key(query: dict[str, str]) -> str:
    return json.dumps(query, sort_keys=True)


def cell_text(value: Any) -> str:
    """A value as the grid writes it (JavaScript's way: ``3`` not ``3.0``, ``true``, nothing for null)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render(ctx: Ctx, view: View, nav: list[tuple[str, str]]) -> str:
    """The view as escaped HTML: navigation bar, title, summary and the rows in a grid-like table."""
    links = [f'<a class="brand" href="{escape(ctx.href("/"))}">mlqueue</a>']
    links += [f'<a href="{escape(href)}">{escape(label)}</a>' for href, label in nav]
    head = "".join(f'<th class="{"link" if c in LINKS else kind}" title="{escape(c)}">{escape(header)}</th>'
                   for c, header, kind in view.columns)
    filters = "<th></th>" * len(view.columns)  # the grid's row of floating filters, so rows line up
    body = "".join("<tr>" + "".join(_cell(ctx, row, column, kind) for column, _, kind in view.columns) + "</tr>"
                   for row in view.rows)
    shown = f"1 to {len(view.rows)}" + (f" of {view.count:,}" if view.count is not None else "")
    summary = view.summary + (f" — as of {view.saved_at}, updating…" if view.saved_at else "")
    return (f'<div id="{PREVIEW_ID}" aria-busy="true"><style>{STYLE}</style><nav>{"".join(links)}</nav>'
            f'<main><h2>Jobs</h2><div class="summary">{escape(summary)}</div>'
            f'<div class="preview-toolbar"></div><div class="preview-grid"><table>'
            f'<thead><tr>{head}</tr><tr>{filters}</tr></thead><tbody>{body}</tbody></table></div>'
            f'<div class="summary">{escape(shown)}</div></main></div>')


def _cell(ctx: Ctx, row: dict[str, Any], column: str, kind: str) -> str:
    value = row.get(column)
    if column in LINKS and value not in (None, ""):
        text = cell_text(value)
        href = ctx.href(LINKS[column] + text)
        return f'<td class="link"><a href="{escape(href)}" title="{escape(text)}">{escape(text[:10])}…</a></td>'
    text = cell_text(value)
    return f'<td class="{kind}" title="{escape(text)}">{escape(text)}</td>'


class FirstPaint:
    """Puts the Jobs page's first rows into the index the HQ serves for the Jobs page's URL."""

    def __init__(self, ctx: Ctx, nav: list[tuple[str, str]], wait: float = WAIT) -> None:
        self.ctx, self.nav, self.wait = ctx, nav, wait
        self._lock = threading.Lock()
        self._pending: tuple[dict[str, str], Future[View]] | None = None
        self._saved_at = 0.0
        self._last: dict[str, tuple[float, str, View]] = {}  # query -> when computed (monotonic, UTC), view

    def html(self, pathname: str, query: dict[str, str]) -> str:
        """The preview for this URL, or "" (another page, no rows, or the rows not at hand in time)."""
        path = self.ctx.app.strip_relative_path(pathname) or ""
        if path.partition("/")[0] not in JOBS_PAGES:
            return ""
        ready = self.ctx.table.ready
        future = self._view(query)
        last = self._last.get(_key(query))
        if last is not None and time.monotonic() - last[0] < RECENT:
            view: View | None = self._aged(last)
            return render(self.ctx, view, self.nav) if view.rows else ""
        view = saved(self.ctx.settings) if not ready and not query else None  # right after a start: at once
        if view is None and future is not None:
            try:
                view = future.result(timeout=self.wait)
            except FutureTimeout:
                pass
            except Exception:  # noqa: BLE001 - the page itself will show the error; the index must not fail
                log.warning("dashboard: no first rows in the index", exc_info=True)
        if view is None and last is not None:
            view = self._aged(last)
        if view is None and ready and not query:  # the table just read, its first view not computed in time
            view = saved(self.ctx.settings)
        return render(self.ctx, view, self.nav) if view is not None and view.rows else ""

    @staticmethod
    def _aged(last: tuple[float, str, View]) -> View:
        """A view computed earlier, saying when if it is not a matter of seconds."""
        computed, at, view = last
        return replace(view, saved_at=at) if time.monotonic() - computed > AGED else view

    def _computed(self, query: dict[str, str], view: View, from_table: bool) -> None:
        """Keep the view for the next visitors and, now and then, the default view's first rows for the
        next HQ run (from the table only: rows read from the store before it was read carry no count)."""
        if len(self._last) > 32:
            self._last.clear()
        self._last[_key(query)] = (time.monotonic(), datetime.now(UTC).strftime("%H:%M:%S UTC"), view)
        if query or not from_table or time.monotonic() - self._saved_at < SAVE_EVERY:
            return
        self._saved_at = time.monotonic()
        try:
            save(self.ctx.settings, view)
        except OSError:
            log.warning("dashboard: could not keep the first rows in %s", saved_path(self.ctx.settings),
                        exc_info=True)

    def _view(self, query: dict[str, str]) -> Future[View] | None:
        """The view, computed in a thread of its own, one at a time: while one is slow (the table still
        being read), a request for the same view waits on it and one for another view gets none."""
        with self._lock:
            if self._pending is not None and not self._pending[1].done():
                return self._pending[1] if self._pending[0] == query else None
            future: Future[View] = Future()
            self._pending = (query, future)

        def compute() -> None:
            try:
                from_table = self.ctx.table.ready
                view = first_view(self.ctx, query)
                future.set_result(view)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
                return
            self._computed(query, view, from_table)

        threading.Thread(target=compute, name="mlqueue-dashboard-first-paint", daemon=True).start()
        return future

    def install(self) -> None:
        """Serve the preview with the index: before Dash's entry point, so it shows before any script runs."""
        app = self.ctx.app
        interpolate = app.interpolate_index

        def interpolate_index(**parts: Any) -> str:
            if flask.has_request_context():
                request = flask.request
                query = {k: v[-1] for k, v in request.args.lists()}
                parts["app_entry"] = self.html(request.script_root + request.path, query) + parts["app_entry"]
            return interpolate(**parts)

        app.interpolate_index = interpolate_index  # type: ignore[method-assign]
