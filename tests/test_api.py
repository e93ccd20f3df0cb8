"""The HQ's HTTP API against real stores, a real worker and a real `mlqueue hq` process."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from api_helpers import Served, insert_finished, serve
from conftest import Farm, start_hq, wait_for
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from mlqueue import api as api_module


@pytest.fixture
def api(farm: Farm) -> Iterator[Served]:
    """This test's farm served over HTTP by the real app."""
    served = serve(farm.settings)
    yield served
    served.stop()

# --------------------------------------------------------------------------- jobs and orders


def test_jobs_submitted_listed_and_found_one_or_many(api: Served, farm: Farm) -> None:
    http = api.http()
    one = http.post("/jobs", json={"scriptName": "toy", "projectName": "p1", "lr": 0.1})
    assert one.status_code == 201, one.text
    [first] = one.json()["jobIds"]
    many = http.post("/jobs", json=[{"scriptName": "toy", "projectName": "p2", "lr": i / 10} for i in range(5)])
    assert many.status_code == 201 and len(many.json()["jobIds"]) == 5
    assert many.json()["orders"][0] == f"/orders/{many.json()['jobIds'][0]}"
    assert farm.db.jobs.count_documents({}) == 6 and farm.db.orders.count_documents({"state": "unassigned"}) == 6

    page = http.get("/jobs", params={"projectName": "p2", "limit": 2}).json()
    assert [j["lr"] for j in page["items"]] == [0.4, 0.3]  # newest first
    assert page["next"] and "offset=2" in page["next"] and "projectName=p2" in page["next"]
    rest = http.get(page["next"]).json()
    assert [j["lr"] for j in rest["items"]] == [0.2, 0.1]
    assert [j["lr"] for j in http.get(rest["next"]).json()["items"]] == [0.0]

    got = http.get(f"/jobs/{first}").json()
    assert got["job"]["lr"] == 0.1 and got["state"] == "unassigned" and got["order"] == f"/orders/{first}"
    for prefix in (first[:8], first[:23]):  # prefixes work as in the CLI: unique ones find the Job
        sharing = [j for j in [first, *many.json()["jobIds"]] if j.startswith(prefix)]
        found = http.get(f"/jobs/{prefix}")
        if len(sharing) == 1:
            assert found.json()["jobId"] == first
        else:
            assert found.status_code == 404 and "ambiguous" in found.json()["error"]
    missing = http.get("/jobs/ffffffffffffffffffffffff")
    assert missing.status_code == 404 and "no job" in missing.json()["error"]


def test_orders_filter_show_history_cancel_and_requeue(api: Served, farm: Farm) -> None:
    http = api.http()
    ids = http.post("/jobs", json=[{"scriptName": "toy", "projectName": p, "x": 1.0} for p in "aab"]).json()["jobIds"]
    listed = http.get("/orders", params={"projectName": "a"}).json()["items"]
    assert {o["jobId"] for o in listed} == set(ids[:2])
    assert "history" not in listed[0] and "metrics" not in listed[0] and listed[0]["job"]["x"] == 1.0
    assert len(http.get("/orders", params={"jobId": ids[2]}).json()["items"]) == 1

    cancelled = http.post(f"/orders/{ids[0]}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["outcome"]["reason"] == "cancelled"
    again = http.post(f"/orders/{ids[0]}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]
    assert http.post("/orders/ffffffffffffffffffffffff/cancel").status_code == 404

    states = http.get("/orders", params=[("state", "cancelled"), ("state", "unassigned")]).json()["items"]
    assert sorted(o["state"] for o in states) == ["cancelled", "unassigned", "unassigned"]
    order = http.get(f"/orders/{ids[0]}").json()
    assert [e["to"] for e in order["history"]] == ["unassigned", "cancelled"]
    assert order["history"][1]["by"].startswith("api@127.0.0.1") and order["job"]["projectName"] == "a"

    requeued = http.post(f"/orders/{ids[0]}/requeue").json()
    assert requeued["requeuedFrom"] == ids[0] and requeued["jobId"] != ids[0]
    assert farm.db.jobs.find_one({"requeuedFrom": ids[0]}) is not None
    assert http.post(f"/orders/{ids[1]}/requeue").json()["jobId"] == ids[1]  # unfinished: sent again


def test_invalid_input_is_refused_naming_the_field_and_stores_nothing(api: Served, farm: Farm) -> None:
    http = api.http()
    bad = http.post("/jobs", json=[{"scriptName": "toy"}, {"scriptName": "toy", "timeLimit": "soon"}])
    assert bad.status_code == 422
    assert bad.json()["fields"] == ["timeLimit"] and "jobs[1]" in bad.json()["error"]
    unknown = http.post("/jobs", json={"scriptName": "no_such_script"})
    assert unknown.status_code == 422 and unknown.json()["fields"] == ["scriptName"]
    typed = http.post("/jobs", json={"scriptName": "toy", "epochs": "many"})  # the script's own Params model
    assert typed.status_code == 422 and "epochs" in typed.json()["fields"]
    for body in (b"{not json", b"[]", b"", b"42"):
        refused = http.post("/jobs", content=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 422 and refused.json()["error"], body
    limit = http.get("/outcomes", params={"limit": 5000})
    assert limit.status_code == 422 and limit.json()["fields"] == ["query.limit"]
    sort = http.get("/outcomes", params={"sort": "loss; drop"})
    assert sort.status_code == 422 and sort.json()["fields"] == ["query.sort"]
    assert http.get("/orders", params={"state": "sleeping"}).json()["fields"] == ["query.state.0"]
    assert farm.db.jobs.count_documents({}) == 0 and farm.db.orders.count_documents({}) == 0


def test_bodies_over_the_limit_are_refused_with_413_declared_or_streamed(api: Served, farm: Farm) -> None:
    http = api.http()
    job = {"scriptName": "toy", "blob": "x" * 1000}
    huge = json.dumps([job] * (api_module.MAX_BODY_BYTES // 1000 + 10)).encode()
    declared = http.post("/jobs", content=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "10 MB" in declared.json()["error"]

    def chunks():
        for i in range(0, len(huge), 1 << 20):
            yield huge[i:i + (1 << 20)]

    streamed = http.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert farm.db.jobs.count_documents({}) == 0
    fits = http.post("/jobs", json=[job] * 100)
    assert fits.status_code == 201


def test_errors_are_json_with_a_message_for_unknown_routes_and_methods(api: Served) -> None:
    http = api.http()
    for response in (http.get("/nowhere"), http.delete("/jobs"), http.put("/orders/abcd/cancel")):
        assert response.status_code in (404, 405)
        assert response.headers["content-type"].startswith("application/json")
        assert "/docs" in response.json()["error"]


# --------------------------------------------------------------------------- outcomes


def test_outcome_pages_rank_like_results_filter_and_export_csv(api: Served, farm: Farm) -> None:
    ids = insert_finished(farm.db, 45, seed=7, unscored_every=5)
    http = api.http()

    def walk(**params: object) -> list[dict]:
        rows, url = [], "/outcomes"
        first = http.get(url, params={**params, "limit": 10}).json()
        rows += first["items"]
        nxt = first["next"]
        while nxt:
            page = http.get(nxt).json()
            rows += page["items"]
            nxt = page["next"]
        return rows

    rows = walk()
    assert len(rows) == 45 and len({r["jobId"] for r in rows}) == 45
    losses = [r["outcome"]["loss"] for r in rows]
    scored = [v for v in losses if v is not None]
    assert scored == sorted(scored) and len(scored) == 36 and losses[:36] == scored
    unscored = [r["jobId"] for r in rows[36:]]
    assert unscored == sorted(unscored, reverse=True)  # newest first after the ranked ones
    assert rows[0]["job"]["lr"] is not None and rows[0]["state"] == "succeeded"

    by_acc = [r["outcome"]["acc"] for r in walk(sort="acc", desc="true")[:36]]
    assert by_acc == sorted(by_acc, reverse=True)
    failed = walk(state="failed")
    assert len(failed) == 9 and all(r["outcome"]["reason"] == "error" for r in failed)
    assert len(walk(worker="w1@host")) == len([i for i in range(45) if i % 4 == 1])
    assert len(walk(projectName="bench")) == 45 and walk(projectName="other") == []
    assert [r["jobId"] for r in walk(jobId=ids[:3])] == [ids[2], ids[1], ids[0]] or len(walk(jobId=ids[:3])) == 3
    deep = http.get("/outcomes", params={"offset": 40, "limit": 10}).json()
    assert [r["jobId"] for r in deep["items"]] == [r["jobId"] for r in rows[40:]] and deep["next"] is None

    csv_text = http.get("/outcomes.csv", params={"sort": "metric", "desc": "true"})
    assert csv_text.headers["content-type"].startswith("text/csv")
    lines = csv_text.text.strip().splitlines()
    assert lines[0].startswith("jobId,state,") and "outcome.loss" in lines[0] and "job.lr" in lines[0]
    assert len(lines) == 46


# --------------------------------------------------------------------------- with a worker


def test_script_runs_as_a_micro_service_and_workers_health_status_report(api: Served, farm: Farm) -> None:
    farm.start_worker("w1")
    http = api.http()
    done = http.post("/scripts/toy/run", params={"wait": 60}, json={"lr": 0.1, "epochs": 2})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["state"] == "succeeded" and body["outcome"]["loss"] > 0 and body["outcome"]["status"] == 200
    assert farm.db.jobs.find_one({"lr": 0.1})["scriptName"] == "toy"

    slow = http.post("/scripts/toy/run", params={"wait": 0.3}, json={"sleepSeconds": 3})
    assert slow.status_code == 202 and slow.headers["location"] == slow.json()["order"]
    final = wait_for(lambda: http.get(slow.json()["order"]).json()["state"] == "succeeded" or None, timeout=60,
                     what="the slow job to finish")
    assert final
    assert http.post("/scripts/no_such/run", json={}).status_code == 404
    assert http.post("/scripts/toy/run", json=[1, 2]).status_code == 422

    workers = http.get("/workers").json()
    assert workers[0]["name"].startswith("w1@") and workers[0]["jobsDone"] == 2
    health = httpx.get(f"{api.url}/health").json()  # no token needed
    assert health["ok"] and health["redis"]["ok"] and health["mongo"]["ok"]
    assert health["workers"] == {"online": 1, "registered": 1}
    assert http.get("/status").json()["orders"]["succeeded"] == 2
    names = [s["name"] for s in http.get("/scripts").json()]
    assert "toy" in names and http.get("/scripts").json()[names.index("toy")]["run"] == "/scripts/toy/run"
    assert http.get("/datasets").json()["items"] == []


def test_health_reports_a_dead_broker_with_503(farm: Farm) -> None:
    served = serve(farm.settings.model_copy(update={"broker_url": "redis://:x@127.0.0.1:1/0"}))
    try:
        health = httpx.get(f"{served.url}/health")
        assert health.status_code == 503
        assert health.json()["redis"]["ok"] is False and health.json()["mongo"]["ok"] is True
    finally:
        served.stop()


# --------------------------------------------------------------------------- auth


def _flat(routes: list[Any]) -> list[Any]:
    """Routes, with those of included routers (one per resource in ``mlqueue/api/``) spelled out."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI keeps an included APIRouter whole
        out += _flat(inner.routes) if inner is not None else [route]
    return out


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves, path parameters filled with plausible values."""
    found = []
    for route in _flat(app.routes):
        if isinstance(route, Mount):
            found.append(("GET", route.path + "/"))
            continue
        if not isinstance(route, APIRoute | Route):
            continue
        path = re.sub(r"\{job_id\}", "ffffffffffffffffffffffff", route.path)
        path = re.sub(r"\{name\}", "toy", path)
        path = re.sub(r"\{[^}]+\}", "x", path)
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                found.append((method, path))
    return found


def test_every_route_but_health_and_login_refuses_a_missing_or_wrong_token(api: Served, farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    routes = _routes(api.app)
    assert len(routes) >= 20 and ("POST", "/scripts/toy/run") in routes and ("GET", "/docs") in routes
    assert ("GET", "/ui") in routes or ("GET", "/ui/") in routes
    public = set(api_module.security.PUBLIC_PATHS)  # /health, /login, /machines/join (the invite is the key)
    anonymous, wrong = api.http(token=None), api.http(token="not-the-token")
    wrong_cookie = httpx.Client(base_url=api.url, cookies={api_module.COOKIE: "nope"})
    checked = 0
    for method, path in routes:
        if path in public:
            continue
        for client in (anonymous, wrong, wrong_cookie):
            response = client.request(method, path, json={"scriptName": "toy"})
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
            checked += 1
    for method, path in routes:  # and the same routes with the right token pass the gate
        if path not in public and method == "GET" and "{" not in path:
            assert api.http().get(path).status_code != 401, path
    assert checked >= 60
    # Nothing was done by any refused request: same Jobs, same state, no cancel, no requeue.
    assert farm.db.jobs.count_documents({}) == 1 and farm.order(job_id)["state"] == "unassigned"
    assert anonymous.post(f"/orders/{job_id}/cancel").status_code == 401
    assert farm.order(job_id)["state"] == "unassigned"
    assert anonymous.get("/health").status_code == 200
    right_cookie = httpx.Client(base_url=api.url, cookies={api_module.COOKIE: api.token})
    assert right_cookie.get("/status").status_code == 200


def test_browsers_are_sent_to_login_which_sets_the_cookie_for_the_dashboard(api: Served) -> None:
    browser = httpx.Client(base_url=api.url, headers={"Accept": "text/html"})
    sent = browser.get("/ui/")
    assert sent.status_code == 303 and sent.headers["location"] == "/login?next=%2Fui%2F"
    form = browser.get(sent.headers["location"])
    assert form.status_code == 200 and "<form" in form.text and 'name=token' in form.text
    refused = browser.post("/login", data={"token": "guess", "next": "/ui/"})
    assert refused.status_code == 401 and api_module.COOKIE not in refused.cookies
    offsite = browser.post("/login", data={"token": api.token, "next": "//evil.example/"})
    assert offsite.headers["location"] == "/ui/"
    logged = browser.post("/login", data={"token": api.token, "next": "/ui/"})
    assert logged.status_code == 303 and logged.headers["location"] == "/ui/"
    cookie = logged.headers["set-cookie"]
    assert f"{api_module.COOKIE}={api.token}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert browser.get("/ui/").status_code == 200
    assert browser.get("/docs").status_code == 200 and browser.get("/openapi.json").status_code == 200


def test_cors_answers_only_the_hqs_own_origin(api: Served) -> None:
    own = f"http://127.0.0.1:{api.settings.http_port}"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "Authorization"}
    allowed = httpx.options(f"{api.url}/status", headers={"Origin": own, **preflight})
    assert allowed.headers.get("access-control-allow-origin") == own
    evil = httpx.options(f"{api.url}/status", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in evil.headers
    simple = api.http().get("/status", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    assert "*" not in api_module.allowed_origins(api.settings)


def test_a_mounted_wsgi_app_sits_behind_the_same_gate(farm: Farm) -> None:
    settings = farm.settings.model_copy(update={"token": "t0ken", "http_port": 1})
    app = api_module.create_app(settings, dashboard=False)

    def hello(environ: dict, start_response) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"hello from {environ['SCRIPT_NAME']} at {environ['PATH_INFO']}".encode()]

    api_module.mount_wsgi(app, hello, "/ui")
    from fastapi.testclient import TestClient

    client = TestClient(app)
    assert client.get("/ui/page").status_code == 401
    assert client.get("/ui/page", headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303
    shown = client.get("/ui/page", headers={"Authorization": "Bearer t0ken"})
    assert shown.status_code == 200 and shown.text == "hello from /ui at /page"  # as Dash expects it


# --------------------------------------------------------------------------- generated input


def test_generated_requests_never_get_a_server_error(api: Served, farm: Farm) -> None:
    """schemathesis drives every operation in the OpenAPI spec, valid and invalid input, bounded in time."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation import GenerationMode

    farm.submit({"scriptName": "toy"})
    auth = {"Authorization": f"Bearer {api.token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app, headers=auth)
    started, operations, calls = time.monotonic(), 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                if case.query and "wait" in case.query:
                    case.query["wait"] = min(float(case.query["wait"] or 0), 1.0) if isinstance(
                        case.query["wait"], int | float) else case.query["wait"]
                response = case.call(headers=auth)
                calls.append(response.status_code)
                assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body,
                                                     response.status_code, response.text[:500])
                assert "Traceback" not in response.text and 'File "' not in response.text  # no stack trace

            check()
    assert operations >= 15 and len(calls) > 100
    print(f"schemathesis: {operations} operations, {len(calls)} calls in {time.monotonic() - started:.1f}s")


# --------------------------------------------------------------------------- the real HQ


def test_the_real_hq_serves_api_login_redirect_and_flower_then_stops_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    hq = start_hq(home)
    lines: list[str] = []
    try:
        wait_for(lambda: lines.append(hq.stdout.readline()) or any("mlqueue --hq" in ln for ln in lines),
                 timeout=120, what="the HQ banner")
        config = json.loads((home / "config.json").read_text())
        web, token = f"http://127.0.0.1:{config['http_port']}", config["token"]
        banner = "".join(lines)
        assert f"{web}/ui/" in banner and f"{web}/docs" in banner and str(home / "config.json") in banner
        assert f":{config['flower_port']}/" in banner and token not in banner

        assert httpx.get(f"{web}/health").json()["ok"] is True
        assert httpx.get(f"{web}/status").status_code == 401
        http = httpx.Client(base_url=web, headers={"Authorization": f"Bearer {token}"})
        [job_id] = http.post("/jobs", json={"scriptName": "toy"}).json()["jobIds"]
        assert http.get(f"/orders/{job_id}").json()["state"] == "unassigned"
        redirect = httpx.get(f"{web}/ui/", headers={"Accept": "text/html"})
        assert redirect.status_code == 303 and redirect.headers["location"].startswith("/login?next=")
        assert httpx.get(f"{web}/ui/", cookies={api_module.COOKIE: token}).status_code == 200

        flower = f"http://127.0.0.1:{config['flower_port']}/"
        answered = wait_for(lambda: _get_or_none(flower, auth=("mlqueue", token)), timeout=60, what="Flower")
        assert answered.status_code == 200 and "Flower" in answered.text
        assert httpx.get(flower).status_code == 401
        commands = [" ".join(p.cmdline()) for p in psutil.Process(hq.pid).children(recursive=True)]
        assert commands and not any(token in c for c in commands)  # `ps` shows argv to every local user
    finally:
        hq.send_signal(signal.SIGTERM)
        hq.wait(60)
    assert hq.returncode == 0
    logged = "".join(lines) + hq.stdout.read() + "".join(
        f.read_text(errors="replace") for f in (home / "logs").rglob("*") if f.is_file())
    assert token not in logged  # never in a log, whatever was requested
    for port in (config["http_port"], config["flower_port"]):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def _get_or_none(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, **kwargs)
    except httpx.HTTPError:
        return None
