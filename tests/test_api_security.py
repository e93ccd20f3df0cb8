"""The token gate's roles and brake: the read-only token looks but cannot change; guessing is answered 429."""

from __future__ import annotations

import json

from conftest import Farm
from fastapi.testclient import TestClient

from mlqueue import access, api, orders

FULL, READ = "t0ken-full", "t0ken-read"


def _client(farm: Farm) -> TestClient:
    settings = farm.settings.model_copy(update={"token": FULL, "read_token": READ, "http_port": 1})
    app = api.create_app(settings, dashboard=False)

    def fake_dash(environ: dict, start_response) -> list[bytes]:
        """Stands for the dashboard: its callbacks are POSTs that call use cases in a WSGI thread."""
        try:
            access.require_write("submit Jobs")
            orders.submit([{"scriptName": "toy"}], settings=settings)
            status, text = "200 OK", "submitted"
        except access.ReadOnly as exc:
            status, text = "403 Forbidden", str(exc)
        start_response(status, [("Content-Type", "text/plain")])
        return [text.encode()]

    api.mount_wsgi(app, fake_dash, "/ui")
    return TestClient(app)


def test_the_read_only_token_views_everything_and_changes_nothing(farm: Farm) -> None:
    [job_id] = farm.submit({"scriptName": "toy"})
    client = _client(farm)
    reader = {"Authorization": f"Bearer {READ}"}
    for path in ("/status", "/orders", f"/orders/{job_id}", "/outcomes", "/workers", "/datasets", "/openapi.json"):
        assert client.get(path, headers=reader).status_code == 200, path
    for path, body in (("/jobs", {"scriptName": "toy"}), (f"/orders/{job_id}/cancel", None),
                       (f"/orders/{job_id}/requeue", None), ("/scripts/toy/run", {})):
        refused = client.post(path, headers=reader, json=body)
        assert refused.status_code == 403 and "read-only" in refused.json()["error"], path
        assert "\"token\"" in refused.json()["error"]  # says which token can
    dash = client.post("/ui/_dash-update-component", headers=reader, json={})
    assert dash.status_code == 403 and "read-only" in dash.text  # the role reached the use case
    assert farm.db.jobs.count_documents({}) == 1 and farm.order(job_id)["state"] == "unassigned"
    full = {"Authorization": f"Bearer {FULL}"}
    assert client.post("/ui/_dash-update-component", headers=full, json={}).text == "submitted"
    assert client.post(f"/orders/{job_id}/cancel", headers=full).status_code == 200


def test_logging_in_with_the_read_only_token_gives_a_viewing_session(farm: Farm) -> None:
    client = _client(farm)
    logged = client.post("/login", data={"token": READ, "next": "/ui/"}, follow_redirects=False)
    assert logged.status_code == 303 and "HttpOnly" in logged.headers["set-cookie"]
    assert "samesite=strict" in logged.headers["set-cookie"].lower() and READ not in logged.headers["location"]
    assert client.get("/status").status_code == 200
    assert client.post("/jobs", json={"scriptName": "toy"}).status_code == 403


def test_wrong_tokens_are_braked_per_address_and_missing_ones_are_not_counted(farm: Farm) -> None:
    client = _client(farm)
    for _ in range(access.MAX_FAILURES + 2):
        assert client.get("/status").status_code == 401  # no token at all: a browser not logged in yet
    for _ in range(access.MAX_FAILURES - 1):
        assert client.get("/status", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert client.post("/login", data={"token": "guess"}).status_code == 401  # the 10th, through /login
    braked = client.get("/status", headers={"Authorization": f"Bearer {FULL}"})
    assert braked.status_code == 429 and 1 <= int(braked.headers["retry-after"]) <= access.WINDOW
    assert "too many wrong tokens" in braked.json()["error"]
    assert client.post("/login", data={"token": FULL}).status_code == 429
    assert json.loads(client.get("/health").text)  # public routes stay open


def test_failed_logins_alone_are_braked_too(farm: Farm) -> None:
    client = _client(farm)
    for _ in range(access.MAX_FAILURES):
        assert client.post("/login", json={"token": "guess"}).status_code == 401
    assert client.post("/login", json={"token": FULL}).status_code == 429


def test_the_hq_generates_a_read_only_token_beside_the_token(tmp_path) -> None:
    from mlqueue.hq import HQ

    config = HQ(home=tmp_path / "home").prepare()
    assert config["read_token"] and config["token"] and config["read_token"] != config["token"]
    (tmp_path / "home" / "config.json").write_text(json.dumps(config))  # as start_servers writes it
    assert HQ(home=tmp_path / "home").prepare()["read_token"] == config["read_token"]  # kept across restarts
