"""The HQ's HTTP API: everything the CLI does, for other machines, the dashboard and scripts.

``create_app(settings)`` builds the FastAPI app the HQ serves (``mlqueue hq``). It adds nothing to the
job lifecycle: every action goes through ``orders``, every read through ``outcomes``, every Job through
``jobs.validate``, so HTTP and the CLI can never disagree about what a Job or a state means.

Security, because the seeds ran open to the house: every route but ``/health`` and ``/login`` needs the
HQ's token, as ``Authorization: Bearer TOKEN`` or the ``mlqueue_token`` cookie that ``/login`` sets for
browsers. The check runs before routing, so a request without it does nothing at all. CORS is granted
only to the HQ's own origins, and request bodies are capped (413).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from html import escape
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, quote, urlencode

import redis
from bson import ObjectId
from bson.errors import InvalidId
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlqueue import __version__, code_api, house, jobs, logs_api, orders, outcomes, scripts, store, tables
from mlqueue.machines_api import router as machines_router
from mlqueue.settings import Settings

log = logging.getLogger(__name__)

COOKIE = "mlqueue_token"
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_JOBS_PER_REQUEST = 10_000
PAGE_DEFAULT, PAGE_MAX = 50, 1000
MAX_WAIT_SECONDS = 600.0
METRICS_DEFAULT = 1000
PUBLIC_PATHS = frozenset({"/health", "/login", "/machines/join"})  # join: the invite code is the key
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
ID_PATTERN = r"^[0-9a-fA-F]{4,24}$"

OrderState = Literal["unassigned", "assigned", "running", "succeeded", "failed", "cancelled", "pruned"]
FinalState = Literal["succeeded", "failed", "cancelled", "pruned"]


# --------------------------------------------------------------------------- response shapes


class Problem(BaseModel):
    """Every error: what went wrong and what to do about it."""

    error: str
    fields: list[str] | None = None


class Page(BaseModel):
    """A page of a listing; follow ``next`` (a path with its query) until it is null."""

    items: list[dict[str, Any]]
    offset: int
    limit: int
    next: str | None = None


class Submitted(BaseModel):
    jobIds: list[str]
    orders: list[str] = Field(description="paths of the new Orders, to poll")


class Requeued(BaseModel):
    jobId: str = Field(description="the Job that will run (a copy when the original had finished)")
    requeuedFrom: str
    order: str


class Health(BaseModel):
    ok: bool
    version: str
    redis: dict[str, Any]
    mongo: dict[str, Any]
    workers: dict[str, int]


class OutcomeFilter(NamedTuple):
    match: dict[str, Any]
    job_ids: list[str] | None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong token"},
    422: {"model": Problem, "description": "a parameter or field is not valid; the message names it"},
}


# --------------------------------------------------------------------------- helpers


def plain(value: Any) -> Any:
    """Store documents to JSON: ObjectIds and datetimes to strings, NaN/inf to null, bytes dropped."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if not isinstance(v, bytes)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def problem(status: int, message: str, fields: list[str] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def _next_link(request: Request, offset: int, limit: int, got: int) -> str | None:
    """The same query one page further on; None on the last page."""
    if got < limit:
        return None
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "offset"]
    return f"{request.url.path}?{urlencode([*kept, ('offset', str(offset + got))])}"


def _page(request: Request, items: list[dict[str, Any]], offset: int, limit: int) -> dict[str, Any]:
    return {"items": plain(items), "offset": offset, "limit": limit,
            "next": _next_link(request, offset, limit, len(items))}


def _token_from(scope: Scope) -> str | None:
    headers = Headers(scope=scope)
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison, so response timing tells nothing about the token."""
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


def _wants_html(scope: Scope) -> bool:
    return scope.get("method") == "GET" and "text/html" in Headers(scope=scope).get("accept", "")


def _safe_next(target: str | None) -> str:
    """Only redirect back into this site (never to another host after login)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


# --------------------------------------------------------------------------- middleware


class TokenGate:
    """Refuse every request without the HQ token before it reaches any route (so nothing is done).

    Browsers (a GET that accepts HTML) are sent to ``/login`` instead of getting a bare 401.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if token_matches(_token_from(scope), self.token):
            await self.app(scope, receive, send)
            return
        if _wants_html(scope):
            path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
            response: Response = RedirectResponse(f"/login?next={quote(path, safe='')}", status_code=303)
        else:
            given = _token_from(scope) is not None
            response = problem(401, "wrong token: use the token from the HQ's config.json (key \"token\")"
                               if given else
                               "authentication required: send 'Authorization: Bearer TOKEN' with the token "
                               "from the HQ's config.json (key \"token\"), or log in at /login",
                               headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not they declare their length."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = problem(413, f"request body too large: the limit is {self.limit // (1024 * 1024)} MB; "
                               "split the submission into several requests")
        declared = Headers(scope=scope).get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            await too_big(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await too_big(scope, receive, send)


class _TooLarge(Exception):
    pass


# --------------------------------------------------------------------------- the app


def allowed_origins(settings: Settings) -> list[str]:
    """The HQ's own origins (the dashboard is served from them): no other site may call the API."""
    from mlqueue.hq import lan_address

    hosts = {"127.0.0.1", "localhost", socket.gethostname()}
    if settings.bind not in ("0.0.0.0", "::", ""):
        hosts.add(settings.bind)
    else:
        hosts.add(lan_address())
    return sorted(f"http://{h}:{settings.http_port}" for h in hosts if settings.http_port)


def create_app(settings: Settings, dashboard: bool = True) -> FastAPI:
    """The API (and the dashboard at ``/ui`` when ``mlqueue.dashboard`` provides one) for ``settings``."""
    if not settings.token:
        raise RuntimeError("the API needs a token: start it from `mlqueue hq`, which writes one to "
                           "HOME/config.json, or set MLQUEUE_TOKEN")
    app = FastAPI(
        title="mlqueue HQ", version=__version__,
        description="Submit Jobs, watch Orders, read Outcomes. Every route but /health needs "
                    "`Authorization: Bearer TOKEN` (the `token` in the HQ's config.json).",
        dependencies=[Depends(HTTPBearer(auto_error=False)), Depends(APIKeyCookie(name=COOKIE, auto_error=False))],
        responses=ERRORS,
    )
    app.state.settings = settings
    _install_error_handlers(app)
    _add_routes(app, settings)
    app.include_router(__import__("mlqueue.seeds_api", fromlist=["router"]).router)  # the seeds' routes
    app.include_router(logs_api.router)
    app.include_router(machines_router)
    app.include_router(code_api.router)
    app.include_router(__import__("mlqueue.workers_api", fromlist=["router"]).router)  # pause/resume/drain
    if dashboard:
        mount_dashboard(app, settings)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(TokenGate, token=settings.token)
    app.add_middleware(CORSMiddleware, allow_origins=allowed_origins(settings), allow_credentials=True,
                       allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    return app


def mount_wsgi(app: FastAPI, wsgi_app: Callable[..., Any], path: str = "/ui") -> None:
    """Serve a WSGI app (the Dash dashboard's Flask server) under ``path``, behind the same token gate."""
    from a2wsgi import WSGIMiddleware

    app.mount(path, WSGIMiddleware(wsgi_app))


def mount_dashboard(app: FastAPI, settings: Settings) -> None:
    """Mount ``mlqueue.dashboard`` at /ui if it is installed; otherwise /ui says where things are."""
    try:
        from mlqueue import dashboard  # type: ignore[attr-defined]
    except ImportError as exc:  # Dash not installed: the API works without it
        log.warning("dashboard not mounted at /ui (%s)", exc)
        dashboard = None
    factory = getattr(dashboard, "create_dash_app", None)
    if factory is not None:
        mount_wsgi(app, factory(settings).server, "/ui")
        return

    @app.get("/ui", include_in_schema=False)
    @app.get("/ui/", include_in_schema=False)
    def no_dashboard() -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>mlqueue</title><p>The dashboard is not installed in this "
                            "version of mlqueue. The API and its documentation are at <a href='/docs'>/docs</a>.")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            return JSONResponse(exc.detail, status_code=exc.status_code, headers=getattr(exc, "headers", None))
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such resource: see /docs for the API's routes"
        elif exc.status_code == 405:
            message = "method not allowed on this resource: see /docs for what it accepts"
        return problem(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields, lines = [], []
        for err in exc.errors():
            name = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            fields.append(name)
            lines.append(f"field '{name}': {err.get('msg')}")
        return problem(422, "; ".join(lines) + ". Fix and send again; nothing was done.", fields)

    async def store_down(_: Request, exc: Exception) -> JSONResponse:
        return problem(503, f"the HQ's database is not answering ({type(exc).__name__}); "
                            "check that `mlqueue hq` is running and retry")

    for transient in store.TRANSIENT:
        app.add_exception_handler(transient, store_down)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        return problem(500, f"internal error ({type(exc).__name__}); the HQ's log has the details")


# --------------------------------------------------------------------------- routes


def _order_or_404(job_id: str, settings: Settings) -> dict[str, Any]:
    try:
        return orders.get(job_id, settings)
    except orders.OrderError as exc:
        raise HTTPException(404, str(exc)) from None


def _job_of(job_id: str, settings: Settings) -> dict[str, Any] | None:
    try:
        return store.db(settings).jobs.find_one({"_id": ObjectId(job_id)}, {"_id": 0})
    except InvalidId:
        return None


def _submit(documents: Any, by: str, settings: Settings) -> list[str]:
    """Validate every Job first (one bad Job refuses them all), then store and queue them."""
    many = isinstance(documents, list)
    items = documents if many else [documents]
    if not items:
        raise HTTPException(422, "the body is an empty list: send one Job object or a list of them")
    if len(items) > MAX_JOBS_PER_REQUEST:
        raise HTTPException(413, f"{len(items)} Jobs in one request; send at most {MAX_JOBS_PER_REQUEST}")
    try:
        valid = jobs.validate_all([(f"jobs[{i}]" if many else "job", d) for i, d in enumerate(items)], settings)
        return orders.submit(valid, by=by, settings=settings)
    except jobs.JobError as exc:  # a wrong field, or a dataset the store does not have
        message = str(exc)
        fields = list(dict.fromkeys(re.findall(r"field '([^']+)'", message)))
        raise HTTPException(422, {"error": message, "fields": fields}) from None


def _who(request: Request) -> str:
    return f"api@{request.client.host if request.client else '?'}"


JOB_SCHEMA = jobs.JobSpec.model_json_schema()
JOB_BODY_SCHEMA = {
    "oneOf": [JOB_SCHEMA, {"type": "array", "items": JOB_SCHEMA, "minItems": 1}],
    "example": {"scriptName": "toy", "projectName": "demo", "lr": 0.1, "epochs": 3},
}


def _add_routes(app: FastAPI, settings: Settings) -> None:  # noqa: C901 - one place lists every route
    def page_params(offset: int = Query(0, ge=0, le=10_000_000, description="rows to skip"),
                    limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description="rows per page")
                    ) -> tuple[int, int]:
        return offset, limit

    # ---------------------------------------------------------------- health, login

    @app.get("/health", response_model=Health, tags=["health"],
             responses={503: {"model": Health, "description": "Redis or the store is not answering"}})
    def health() -> JSONResponse:
        """Is the HQ able to take work? No token needed; says nothing secret."""
        report = {"ok": True, "version": __version__, "redis": _ping_redis(settings),
                  "mongo": _ping_mongo(settings), "workers": {"online": 0, "registered": 0}}
        if report["mongo"]["ok"]:
            try:
                report["workers"] = _worker_counts(settings)
            except store.TRANSIENT:
                report["mongo"] = {"ok": False, "error": "stopped answering"}
        report["ok"] = report["redis"]["ok"] and report["mongo"]["ok"]
        return JSONResponse(report, status_code=200 if report["ok"] else 503)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(next: str | None = None) -> HTMLResponse:
        return HTMLResponse(_login_page(_safe_next(next)))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        """Check a pasted token and keep it in an HttpOnly cookie for the dashboard."""
        raw = (await request.body()).decode("utf-8", "replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(raw or "{}")
            except json.JSONDecodeError:
                data = {}
            data = data if isinstance(data, dict) else {}
            given, target = str(data.get("token") or ""), str(data.get("next") or "")
        else:
            form = parse_qs(raw)
            given, target = (form.get("token") or [""])[0].strip(), (form.get("next") or [""])[0]
        target = _safe_next(target)
        if not token_matches(given or None, settings.token or ""):
            if "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(_login_page(target, "That is not this HQ's token."), status_code=401)
            return problem(401, "wrong token: use the token from the HQ's config.json (key \"token\")")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", max_age=30 * 86400, path="/")
        return response

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    # ---------------------------------------------------------------- jobs

    @app.post("/jobs", status_code=201, response_model=Submitted, tags=["jobs"],
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": JOB_BODY_SCHEMA}}}})
    async def submit_jobs(request: Request) -> dict[str, Any]:
        """Submit one Job (an object) or many (a list). All are validated before any is stored."""
        documents = await _json_body(request)
        ids = await run_in_threadpool(_submit, documents, _who(request), settings)
        return {"jobIds": ids, "orders": [f"/orders/{i}" for i in ids]}

    @app.get("/jobs", response_model=Page, tags=["jobs"])
    def list_jobs(request: Request, page: tuple[int, int] = Depends(page_params),
                  projectName: str | None = Query(None, max_length=200),
                  scriptName: str | None = Query(None, max_length=200),
                  sweepId: str | None = Query(None, max_length=200)) -> dict[str, Any]:
        """Jobs as submitted, newest first."""
        offset, limit = page
        where = {k: v for k, v in (("projectName", projectName), ("scriptName", scriptName),
                                   ("sweepId", sweepId)) if v is not None}
        docs = list(store.db(settings).jobs.find(where).sort("_id", -1).skip(offset).limit(limit))
        items = [{"jobId": str(d.pop("_id")), **d} for d in docs]
        return _page(request, items, offset, limit)

    @app.get("/jobs/{job_id}", tags=["jobs"], responses={404: {"model": Problem}})
    def get_job(job_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
        """One Job's fields and its Order's state."""
        order = _order_or_404(job_id, settings)
        job = _job_of(order["jobId"], settings) or {}
        return plain({"jobId": order["jobId"], "state": order["state"], "job": job,
                      "order": f"/orders/{order['jobId']}"})

    # ---------------------------------------------------------------- orders

    @app.get("/orders", response_model=Page, tags=["orders"])
    def list_orders(request: Request, page: tuple[int, int] = Depends(page_params),
                    state: list[OrderState] | None = Query(None, description="one or more states"),
                    projectName: str | None = Query(None, max_length=200),
                    scriptName: str | None = Query(None, max_length=200),
                    sweepId: str | None = Query(None, max_length=200),
                    worker: str | None = Query(None, max_length=200),
                    jobId: list[str] | None = Query(None, description="only these Jobs", max_length=1000)
                    ) -> dict[str, Any]:
        """Orders (without history and metrics) with their Jobs, newest first."""
        offset, limit = page
        where = _order_filter(state, projectName, scriptName, sweepId, worker, jobId)
        return _page(request, outcomes.order_page(settings, where, offset, limit), offset, limit)

    @app.get("/orders/{job_id}", tags=["orders"], responses={404: {"model": Problem}})
    def get_order(job_id: str = Path(pattern=ID_PATTERN),
                  metrics: int = Query(METRICS_DEFAULT, ge=0, le=orders.METRICS_KEPT,
                                       description="how many of the latest metric reports to include")
                  ) -> dict[str, Any]:
        """One Order: state, full history, latest metrics, Outcome, and the Job itself."""
        order = _order_or_404(job_id, settings)
        order.pop("_id", None)
        order["metrics"] = order.get("metrics", [])[-metrics:] if metrics else []
        order["job"] = _job_of(order["jobId"], settings)
        return plain(house.with_reason(order, settings))

    @app.post("/orders/{job_id}/cancel", tags=["orders"],
              responses={404: {"model": Problem}, 409: {"model": Problem}})
    def cancel_order(request: Request, job_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
        """Cancel a Job that has not finished; a running one is stopped by its worker within a heartbeat."""
        _order_or_404(job_id, settings)
        try:
            order = orders.cancel(job_id, by=_who(request), settings=settings)
        except orders.OrderError as exc:
            raise HTTPException(409, str(exc)) from None
        return plain({"jobId": order["jobId"], "state": order["state"], "outcome": order.get("outcome")})

    @app.post("/orders/{job_id}/requeue", response_model=Requeued, tags=["orders"],
              responses={404: {"model": Problem}, 409: {"model": Problem}})
    def requeue_order(request: Request, job_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
        """Run a Job again: a finished one is copied as a new Job, an unfinished one is re-sent."""
        order = _order_or_404(job_id, settings)
        try:
            new_id = orders.requeue(job_id, by=_who(request), settings=settings)
        except orders.OrderError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"jobId": new_id, "requeuedFrom": order["jobId"], "order": f"/orders/{new_id}"}

    @app.get("/status", tags=["orders"])
    def status() -> dict[str, Any]:
        """Orders counted by state, and the workers (what `mlqueue status` shows)."""
        workers = outcomes.workers(settings)
        return plain({"orders": outcomes.state_counts(settings), "workers": workers,
                      "waiting": house.waiting(settings, workers)})

    # ---------------------------------------------------------------- outcomes

    def outcome_filter(state: FinalState | None = Query(None),
                       status: int | None = Query(None, ge=0, le=999, description="the Outcome's status"),
                       reason: str | None = Query(None, max_length=100, description="e.g. error, timeout"),
                       worker: str | None = Query(None, max_length=200),
                       projectName: str | None = Query(None, max_length=200),
                       scriptName: str | None = Query(None, max_length=200),
                       sweepId: str | None = Query(None, max_length=200),
                       jobId: list[str] | None = Query(None, max_length=1000)) -> OutcomeFilter:
        match = {k: v for k, v in (("state", state), ("status", status), ("reason", reason), ("worker", worker))
                 if v is not None}
        ids = list(jobId) if jobId else None
        by_order = {k: v for k, v in (("projectName", projectName), ("scriptName", scriptName),
                                      ("sweepId", sweepId)) if v is not None}
        if by_order:
            of_orders = outcomes.job_ids(settings, by_order)
            ids = [i for i in ids if i in set(of_orders)] if ids is not None else of_orders
        return OutcomeFilter(match, ids)

    def outcome_sort(sort: str = Query("loss", pattern=FIELD_PATTERN, max_length=100,
                                       description="Outcome field to rank by: loss, metric, or any "
                                                   "metric the script returned"),
                     desc: bool = Query(False, description="higher is better")) -> tuple[str, bool]:
        return sort, desc

    @app.get("/outcomes", response_model=Page, tags=["outcomes"])
    def list_outcomes(request: Request, page: tuple[int, int] = Depends(page_params),
                      where: OutcomeFilter = Depends(outcome_filter),
                      order: tuple[str, bool] = Depends(outcome_sort)) -> dict[str, Any]:
        """Finished Jobs, best first: rows with the sort field in order, then the rest newest first.

        Each row: ``jobId``, ``state``, ``outcome``, ``job`` (its hyperparameters) and ``createdDate``.
        """
        offset, limit = page
        rows = outcomes.page(settings, sort=order[0], descending=order[1], match=where.match, job_ids=where.job_ids,
                             offset=offset, limit=limit)
        return _page(request, rows, offset, limit)

    @app.get("/outcomes.csv", tags=["outcomes"], response_class=PlainTextResponse,
             responses={200: {"content": {"text/csv": {}}, "description": "one flattened row per Outcome"}})
    def export_outcomes(where: OutcomeFilter = Depends(outcome_filter),
                        order: tuple[str, bool] = Depends(outcome_sort),
                        limit: int | None = Query(None, ge=1, le=1_000_000)) -> Response:
        """The same rows as /outcomes, all of them (or ``limit``), flattened to CSV."""
        rows = outcomes.page(settings, sort=order[0], descending=order[1], match=where.match, job_ids=where.job_ids,
                             offset=0, limit=limit or 1_000_000)
        public = [tables.flatten(plain({k: r.get(k) for k in ("jobId", "state", "outcome", "job")})) for r in rows]
        columns = list(dict.fromkeys(k for r in public for k in r)) or ["jobId", "state"]
        return Response(tables.to_csv(public, columns) + "\n", media_type="text/csv",
                        headers={"Content-Disposition": "attachment; filename=outcomes.csv"})

    # ---------------------------------------------------------------- workers, scripts, datasets

    @app.get("/workers", tags=["workers"])
    def list_workers() -> list[dict[str, Any]]:
        """Registered workers, their capabilities, what each runs and its heartbeat's age."""
        return plain(outcomes.workers(settings))

    @app.get("/scripts", tags=["scripts"])
    def list_scripts() -> list[dict[str, Any]]:
        """The scripts a Job may name (pushed bundles and built-ins), each callable at ``run``."""
        return plain([{**s, "run": f"/scripts/{s['name']}/run"} for s in scripts.available(settings)])

    @app.post("/scripts/{name}/run", tags=["scripts"],
              responses={202: {"description": "still running: poll the Order at `order`"},
                         404: {"model": Problem}},
              openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
                  "schema": {"type": "object", "additionalProperties": True,
                             "description": "the Job's fields (hyperparameters)"}}}}})
    async def run_script(request: Request, name: str = Path(pattern=scripts.NAME_RE.pattern, max_length=100),
                         wait: float = Query(30.0, ge=0, le=MAX_WAIT_SECONDS,
                                             description="seconds to wait for the Outcome")) -> Response:
        """Run a script on the farm as a micro-service: its Outcome if it ends within ``wait``, else 202."""
        fields = await _json_body(request, default={})
        if not isinstance(fields, dict):
            raise HTTPException(422, "the body must be a JSON object of the script's fields")
        try:
            await run_in_threadpool(scripts.resolve, name, settings)
        except scripts.ScriptNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        [job_id] = await run_in_threadpool(_submit, {**fields, "scriptName": name}, _who(request), settings)
        order = await _wait_final(job_id, wait, settings)
        if order is None:
            return JSONResponse({"jobId": job_id, "state": "running", "order": f"/orders/{job_id}"},
                                status_code=202, headers={"Location": f"/orders/{job_id}"})
        return JSONResponse(plain({"jobId": job_id, "state": order["state"], "outcome": order.get("outcome")}))

    @app.get("/datasets", response_model=Page, tags=["datasets"])
    def list_datasets(request: Request, page: tuple[int, int] = Depends(page_params),
                      project: str | None = Query(None, max_length=200)) -> dict[str, Any]:
        """Datasets stored in the HQ (read-only here: upload them with `mlqueue datasets push`)."""
        offset, limit = page
        return _page(request, _datasets(settings, project)[offset:offset + limit], offset, limit)


async def _json_body(request: Request, default: Any = ...) -> Any:
    raw = await request.body()
    if not raw.strip():
        if default is not ...:
            return default
        raise HTTPException(422, "the body is empty: send a JSON Job object, or a list of them")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise HTTPException(422, f"the body is not valid JSON{where}: send a JSON object") from None


def _order_filter(state: list[str] | None, project: str | None, script: str | None, sweep: str | None,
                  worker: str | None, ids: list[str] | None) -> dict[str, Any]:
    where: dict[str, Any] = {}
    if state:
        where["state"] = state[0] if len(state) == 1 else {"$in": state}
    for key, value in (("projectName", project), ("scriptName", script), ("sweepId", sweep), ("worker", worker)):
        if value is not None:
            where[key] = value
    if ids:
        where["jobId"] = {"$in": ids}
    return where


async def _wait_final(job_id: str, wait: float, settings: Settings) -> dict[str, Any] | None:
    """Poll the Order until it is final or ``wait`` seconds have passed (None)."""
    deadline = time.monotonic() + wait
    while True:
        order = await run_in_threadpool(
            store.db(settings).orders.find_one, {"jobId": job_id, "state": {"$in": list(orders.FINAL)}},
            {"metrics": 0, "history": 0})
        if order is not None:
            return order
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _ping_redis(settings: Settings) -> dict[str, Any]:
    if not settings.broker_url:
        return {"ok": False, "error": "no broker configured"}
    try:
        with redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2) as r:
            r.ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "error": type(exc).__name__}


def _ping_mongo(settings: Settings) -> dict[str, Any]:
    try:
        store.client(settings).admin.command("ping")
        return {"ok": True}
    except (store.TRANSIENT, SystemExit) as exc:
        return {"ok": False, "error": type(exc).__name__}


def _worker_counts(settings: Settings) -> dict[str, int]:
    """Workers registered, and those online with a fresh heartbeat (straight from ``workers``: cheap)."""
    fresh_since = orders.now() - timedelta(seconds=settings.lost_after)
    d = store.db(settings)
    return {"online": d.workers.count_documents({"online": True, "lastHeartbeat": {"$gte": fresh_since}}),
            "registered": d.workers.count_documents({})}


def _datasets(settings: Settings, project: str | None) -> list[dict[str, Any]]:
    from mlqueue import datasets

    return datasets.listing(project, settings=settings)


def _login_page(target: str, message: str = "") -> str:
    note = f"<p class=err>{escape(message)}</p>" if message else ""
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>mlqueue — log in</title>
<meta name=viewport content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:30em;margin:4em auto;padding:0 1em}}
input[type=password]{{width:100%;padding:.5em;font-family:monospace}}button{{margin-top:1em;padding:.5em 1.5em}}
.err{{color:#b00}}code{{background:#eee;padding:0 .2em}}</style></head>
<body><h1>mlqueue HQ</h1>{note}
<form method=post action="/login">
<label for=token>Paste this HQ's token (the <code>token</code> in <code>config.json</code> in the HQ's home,
e.g. <code>~/.mlqueue/config.json</code>):</label>
<input type=password id=token name=token autofocus required autocomplete=current-password>
<input type=hidden name=next value="{escape(target, quote=True)}">
<button type=submit>Log in</button></form></body></html>"""
