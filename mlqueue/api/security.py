"""Who may call the HQ: the token gate, the login page, and the cap on request bodies.

Every route but ``/health`` and ``/login`` needs the HQ's token, as ``Authorization: Bearer TOKEN`` or
the ``mlqueue_token`` cookie that ``/login`` sets for browsers. ``TokenGate`` checks it before routing,
so a request without it does nothing at all. ``BodyLimit`` refuses bodies over the cap with 413.
The gate also knows the read-only token (its requests may look, not change: see ``mlqueue.access``)
and brakes guessing: too many wrong tokens from one address and it answers 429 for a while.
"""

from __future__ import annotations

import json
import secrets
from html import escape
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlqueue import access
from mlqueue.api.deps import SettingsDep
from mlqueue.api.problems import problem

COOKIE = "mlqueue_token"
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 4 * 1024 * 1024 * 1024  # datasets and script bundles are files, streamed to disk
UPLOAD_PATHS = frozenset({"/datasets", "/scripts"})  # POST: an upload (see api/datasets.py, api/scripts.py)
PUBLIC_PATHS = frozenset({"/health", "/login", "/machines/join"})  # join: the invite code is the key

router = APIRouter()


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


class TokenGate:
    """Refuse every request without the HQ token before it reaches any route (so nothing is done).

    Browsers (a GET that accepts HTML) are sent to ``/login`` instead of getting a bare 401.
    """

    def __init__(self, app: ASGIApp, token: str, read_token: str | None = None,
                 limiter: access.FailureLimiter | None = None) -> None:
        self.app = app
        self.token = token
        self.read_token = read_token
        self.limiter = limiter or access.FailureLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        client = client_of(scope)
        wait = self.limiter.retry_after(client)
        if wait is not None:
            await too_many(wait)(scope, receive, send)
            return
        given = _token_from(scope)
        role = access.role_for(given, self.token, self.read_token)
        if role == access.READ and not access.read_may(scope["method"], scope["path"]):
            await problem(403, access.read_only_message(f"{scope['method']} {scope['path']}"))(scope, receive, send)
            return
        if role is not None:
            reset = access.current_role.set(role)  # the dashboard's use cases check it (access.require_write)
            try:
                await self.app(scope, receive, send)
            finally:
                access.current_role.reset(reset)
            return
        if given is not None:
            self.limiter.failed(client)
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


def client_of(scope: Scope) -> str:
    """The caller's address, which wrong tokens are counted against."""
    client = scope.get("client")
    return str(client[0]) if client else "?"


def too_many(wait: float) -> Response:
    return problem(429, f"too many wrong tokens from this address: wait {wait:.0f} s before trying again",
                   headers={"Retry-After": str(int(wait + 0.999))})


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not they declare their length.

    Uploads (a POST to one of ``UPLOAD_PATHS``) may be up to ``upload_limit``: they go to disk, not memory.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, upload_limit: int = MAX_UPLOAD_BYTES) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope.get("method") == "POST" and scope["path"] in UPLOAD_PATHS
        limit = self.upload_limit if upload else self.limit
        too_big = problem(413, f"request body too large: the limit is {limit // (1024 * 1024)} MB; "
                               "split the submission into several requests")
        declared = Headers(scope=scope).get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await too_big(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
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


# --------------------------------------------------------------------------- login


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form(next: str | None = None) -> HTMLResponse:
    return HTMLResponse(_login_page(_safe_next(next)))

@router.post("/login", include_in_schema=False)
async def login(request: Request, settings: SettingsDep) -> Response:
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
    limiter: access.FailureLimiter | None = getattr(request.app.state, "limiter", None)
    client = client_of(request.scope)
    wait = limiter.retry_after(client) if limiter else None
    if wait is not None:
        return too_many(wait)
    if access.role_for(given or None, settings.token or "", settings.read_token) is None:
        if limiter:
            limiter.failed(client)
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(_login_page(target, "That is not this HQ's token."), status_code=401)
        return problem(401, "wrong token: use the token from the HQ's config.json (key \"token\")")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, given, httponly=True, samesite="strict", max_age=30 * 86400, path="/")
    return response


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


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
