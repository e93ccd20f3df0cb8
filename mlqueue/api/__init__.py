"""The HQ's HTTP API: everything the CLI does, for other machines, the dashboard and scripts.

``create_app(settings)`` builds the FastAPI app the HQ serves (``mlqueue hq``). Routes add nothing to
the job lifecycle: each calls one use case in ``mlqueue.service``, which the CLI's ``LocalClient`` and
the dashboard call too, so HTTP and the CLI can never disagree about what a Job or a state means.

Layout: one router module per resource (``jobs``, ``orders``, ``outcomes``, ``workers``, ``scripts``,
``datasets``, ``artifacts``, ``sweeps``, ``health``), plus ``deps`` (settings dependency, paging, JSON),
``security`` (token gate, login, body cap) and ``problems`` (every error as ``{"error", "fields"}``).
To add a resource: write ``mlqueue/api/<resource>.py`` with ``router = APIRouter(tags=[...])`` whose
routes call ``service``, and add it to ``ROUTERS`` below (one line).

Security, because the seeds ran open to the house: see ``security``. CORS is granted only to the HQ's
own origins.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.security import APIKeyCookie, HTTPBearer

from mlqueue import __version__, access
from mlqueue.api import (
    artifacts,
    datasets,
    health,
    jobs,
    logs,
    machines,
    orders,
    outcomes,
    problems,
    script_versions,
    scripts,
    security,
    seeds,
    sweeps,
    workers,
)
from mlqueue.api.deps import plain
from mlqueue.api.problems import ERRORS, Problem, problem
from mlqueue.api.security import COOKIE, MAX_BODY_BYTES, BodyLimit, TokenGate, token_matches
from mlqueue.servers import lan_address
from mlqueue.settings import Settings

__all__ = ["COOKIE", "MAX_BODY_BYTES", "BodyLimit", "Problem", "TokenGate", "allowed_origins", "create_app",
           "mount_dashboard", "mount_wsgi", "plain", "problem", "token_matches"]

log = logging.getLogger(__name__)

ROUTERS: list[APIRouter] = [
    health.router, security.router, jobs.router, orders.router, outcomes.router, workers.router,
    scripts.router, datasets.router, artifacts.router, sweeps.router,
    seeds.router,  # the seeds' compatibility routes
    logs.router,  # live output
    machines.router,
    script_versions.router,  # the Code page's versions, source, diff, template
]


def allowed_origins(settings: Settings) -> list[str]:
    """The HQ's own origins (the dashboard is served from them): no other site may call the API."""
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
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    if dashboard:
        mount_dashboard(app, settings)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.state.limiter = access.FailureLimiter(settings.wrong_token_limit)  # shared by the gate and /login
    app.add_middleware(TokenGate, token=settings.token, read_token=settings.read_token, limiter=app.state.limiter)
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
