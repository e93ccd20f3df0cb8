"""A machine joins with an invite code, runs Jobs with its own credentials, and is revoked: a real HQ."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pymongo
import pytest
import redis
from conftest import ROOT, start_hq, wait_for
from pymongo.errors import OperationFailure

from mlqueue import invites, jobs, orders, store
from mlqueue.client import ClientError, HttpClient, LocalClient
from mlqueue.settings import Settings


class HQRun:
    """A running ``mlqueue hq --store-auth`` and the ways a test talks to it."""

    def __init__(self, home: Path, proc: subprocess.Popen) -> None:
        self.home, self.proc = home, proc
        self.config = json.loads((home / "config.json").read_text())
        self.settings = Settings(home=home, broker_url=self.config["broker_url"], mongo_url=self.config["mongo_url"])
        self.url = f"http://127.0.0.1:{self.config['http_port']}"
        self.workers: list[subprocess.Popen] = []

    def cli(self, *args: str, home: Path | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
        return subprocess.run([sys.executable, "-m", "mlqueue.cli", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={**env, "MLQUEUE_HOME": str(home or self.home)})

    def invite(self) -> str:
        made = self.cli("invite", "--format", "json")
        assert made.returncode == 0, made.stderr
        return json.loads(made.stdout)["code"]

    def join(self, home: Path, code: str, name: str) -> subprocess.CompletedProcess:
        return self.cli("join", f"127.0.0.1:{self.config['http_port']}", "--code", code, "--name", name, home=home)

    def start_worker(self, home: Path, name: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
        log = open(home / "worker.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-n", f"{name}@%h",
                                 "-l", "info", "-c", "1", "--without-mingle", "--without-gossip"],
                                cwd=ROOT, env={**env, "MLQUEUE_HOME": str(home)}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        wait_for(lambda: self.db.workers.find_one({"name": {"$regex": f"^{name}@"}, "pid": proc.pid}),
                 timeout=60, what=f"worker {name} to register")
        return proc

    @property
    def db(self) -> Any:
        return store.db(self.settings)

    def submit(self, count: int = 1) -> list[str]:
        job = jobs.validate({"scriptName": "toy", "projectName": "join", "lr": 0.1, "epochs": 1},
                            settings=self.settings)
        return orders.submit([job] * count, settings=self.settings)

    def wait_final(self, job_id: str) -> dict[str, Any]:
        return wait_for(lambda: self.db.orders.find_one({"jobId": job_id, "state": {"$in": list(orders.FINAL)}}),
                        timeout=90, what=f"job {job_id} to finish")

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


@pytest.fixture(scope="module")
def hq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HQRun]:
    home = tmp_path_factory.mktemp("hq") / "home"
    proc = start_hq(home, "--store-auth")
    lines: list[str] = []
    wait_for(lambda: lines.append(proc.stdout.readline()) or any("Submit work" in ln for ln in lines),
             timeout=90, what="HQ banner")
    run = HQRun(home, proc)
    run.banner = "".join(lines)
    store.forget_clients()
    yield run
    run.stop()
    store.forget_clients()


def test_the_banner_shows_the_invite_flow_first(hq: HQRun) -> None:
    body = hq.banner[hq.banner.index("mlqueue HQ is up"):]
    assert re.search(r"mlqueue join 127\.0\.0\.1:\d+ --code [0-9A-Z]{4}-[0-9A-Z]{4}", body)
    assert body.index("--code") < body.index("broker") < body.index("MLQUEUE_BROKER_URL=")


def test_a_machine_joins_with_a_code_runs_a_job_and_the_code_works_once(hq: HQRun, tmp_path: Path) -> None:
    code = hq.invite()
    joined = hq.join(tmp_path / "m1", code, "m1")
    assert joined.returncode == 0, joined.stderr
    config_path = tmp_path / "m1" / "config.json"
    assert oct(config_path.stat().st_mode)[-3:] == "600"
    config = json.loads(config_path.read_text())
    assert config["machine"] == "m1" and "machine-m1:" in config["broker_url"] and "machine-m1:" in config["mongo_url"]
    assert hq.config["redis_password"] not in config_path.read_text()  # its own credentials, not the HQ's
    assert f"MLQUEUE_HOME={tmp_path / 'm1'}" in joined.stdout and "-A mlqueue worker" in joined.stdout

    again = hq.join(tmp_path / "m1b", code, "m1b")
    assert again.returncode == 2 and "already used" in again.stderr
    assert not (tmp_path / "m1b" / "config.json").exists()

    hq.start_worker(tmp_path / "m1", "m1")
    [job_id] = hq.submit()
    order = hq.wait_final(job_id)
    assert order["state"] == orders.SUCCEEDED and order["worker"].startswith("m1@")
    listed = hq.cli("machines", "ls", "--format", "json")
    assert {"name": "m1", "state": "online"}.items() <= json.loads(listed.stdout)[0].items()


def test_expired_and_mistyped_codes_are_refused(hq: HQRun, tmp_path: Path) -> None:
    expired = invites.create(settings=hq.settings, valid_for=timedelta(seconds=-1))["code"]
    refused = hq.join(tmp_path / "late", expired, "late")
    assert refused.returncode == 2 and "expired" in refused.stderr
    unknown = hq.join(tmp_path / "typo", "AAAA-AAAA", "typo")
    assert unknown.returncode == 2 and "unknown invite code" in unknown.stderr
    malformed = hq.join(tmp_path / "bad", "hello", "bad")
    assert malformed.returncode == 2 and "not an invite code" in malformed.stderr
    assert hq.db.machines.count_documents({"_id": {"$in": ["late", "typo", "bad"]}}) == 0


def test_a_revoked_machine_takes_no_jobs_and_cannot_read_the_store(hq: HQRun, tmp_path: Path) -> None:
    for name in ("keep", "gone"):
        assert hq.join(tmp_path / name, hq.invite(), name).returncode == 0
        hq.start_worker(tmp_path / name, name)
    gone = json.loads((tmp_path / "gone" / "config.json").read_text())
    removed = hq.cli("machines", "remove", "gone")
    assert removed.returncode == 0, removed.stderr
    assert "store user is deleted" in removed.stdout

    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(gone["broker_url"], socket_timeout=5).ping()
    with pymongo.MongoClient(gone["mongo_url"], serverSelectionTimeoutMS=5000) as client, \
            pytest.raises(OperationFailure):
        client[gone["mongo_db"]].orders.find_one()
    ids = hq.submit(4)
    done = [hq.wait_final(job_id) for job_id in ids]
    assert "gone" not in {o["worker"].split("@")[0] for o in done}  # m1 (an earlier test's) and keep took them
    listed = {r["name"]: r["state"] for r in json.loads(hq.cli("machines", "ls", "--format", "json").stdout)}
    assert listed["gone"] == "revoked"
    # The name can be reused only through a new invite, with new credentials.
    assert hq.join(tmp_path / "gone2", hq.invite(), "gone").returncode == 0
    assert json.loads((tmp_path / "gone2" / "config.json").read_text())["broker_url"] != gone["broker_url"]


def test_both_clients_mint_codes_list_and_remove_machines_alike(hq: HQRun, tmp_path: Path) -> None:
    remote, local = HttpClient(hq.url, hq.config["token"]), LocalClient(hq.settings)
    assert hq.join(tmp_path / "viahttp", remote.invite()["code"], "viahttp").returncode == 0
    there, here = remote.machines(), local.machines()
    assert [(m["name"], m["state"], m["joined"]) for m in there] == [(m["name"], m["state"], m["joined"]) for m in here]
    with pytest.raises(ClientError) as missing:
        remote.remove_machine("no-such-machine")
    assert missing.value.status == 404 and "mlqueue machines ls" in str(missing.value)
    listed = hq.cli("--hq", hq.url, "--token", hq.config["token"], "machines", "ls")
    assert listed.returncode == 0 and "viahttp" in listed.stdout
    removed = hq.cli("--hq", hq.url, "--token", hq.config["token"], "machines", "remove", "viahttp")
    assert removed.returncode == 0 and "removed viahttp" in removed.stdout
    assert {m["name"]: m["state"] for m in local.machines()}["viahttp"] == "revoked"


def test_a_home_copied_from_another_computer_does_not_start_a_worker(hq: HQRun, tmp_path: Path) -> None:
    home = tmp_path / "copied"
    assert hq.join(home, hq.invite(), "copied").returncode == 0
    config = json.loads((home / "config.json").read_text())
    (home / "config.json").write_text(json.dumps({**config, "machine_fingerprint": "another-computer"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
    started = subprocess.run([sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-n", "copied@%h"],
                             cwd=ROOT, env={**env, "MLQUEUE_HOME": str(home)}, capture_output=True, text=True,
                             timeout=120)
    assert started.returncode != 0 and "joined from another computer" in started.stdout + started.stderr


def test_joined_machines_take_jobs_again_after_the_hq_restarts(hq: HQRun, tmp_path: Path) -> None:
    assert hq.join(tmp_path / "again", hq.invite(), "again").returncode == 0
    hq.start_worker(tmp_path / "again", "again")
    hq.proc.send_signal(signal.SIGTERM)
    hq.proc.wait(60)
    ports = [f"--{key.replace('_', '-')}={hq.config[key]}" for key in ("redis_port", "mongo_port")]
    hq.proc = start_hq(hq.home, "--store-auth", *ports, f"--port={hq.config['http_port']}")
    lines: list[str] = []
    wait_for(lambda: lines.append(hq.proc.stdout.readline()) or any("Submit work" in ln for ln in lines),
             timeout=90, what="the restarted HQ's banner")
    store.forget_clients()
    ids = hq.submit(2)
    assert all(hq.wait_final(job_id)["state"] == orders.SUCCEEDED for job_id in ids)  # Redis users were re-created


def test_the_join_route_needs_a_valid_code_and_is_rate_limited_and_the_rest_needs_the_token(hq: HQRun) -> None:
    assert httpx.get(f"{hq.url}/machines").status_code == 401
    assert httpx.post(f"{hq.url}/invites").status_code == 401
    codes = [httpx.post(f"{hq.url}/machines/join", json={"code": "ZZZZ-ZZZZ", "name": f"x{i}"}).status_code
             for i in range(8)]
    assert codes[0] == 403 and 429 in codes
    assert hq.db.machines.count_documents({"_id": {"$regex": "^x"}}) == 0
