"""Shared fixtures: real embedded Redis and MongoDB-protocol servers, real Celery worker processes.

Servers are started once per session (on free ports, in a temporary directory). Each test gets its
own database and queue names, so leftovers of one test can never be picked up by another.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlqueue import orders, store
from mlqueue.servers import MongoServer, RedisServer
from mlqueue.settings import Settings, reload_settings

ROOT = Path(__file__).resolve().parent.parent
LOST_AFTER = 3.0


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until ``predicate`` returns something truthy; fail the test with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Servers:
    redis: RedisServer
    mongo: MongoServer


def start_servers(base: Path, redis_port: int = 0, mongo_port: int = 0) -> Servers:
    redis = RedisServer(base / "redis", base / "redis.log", port=redis_port, password=secrets.token_hex(8))
    mongo = MongoServer(base / "mongo", base / "mongo.log", port=mongo_port)
    return Servers(redis=redis.start(), mongo=mongo.start())


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started = start_servers(tmp_path_factory.mktemp("servers"))
    yield started
    started.mongo.stop()
    started.redis.stop()


@dataclass
class Farm:
    """One test's view of an HQ: settings, environment for child processes, and its workers."""

    settings: Settings
    env: dict[str, str]
    home: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_worker(self, name: str, wait: bool = True, args: tuple[str, ...] = (), **extra_env: str
                     ) -> subprocess.Popen:
        """A real ``celery -A mlqueue worker`` process (its own process group, so it can be killed whole)."""
        log = open(self.home / f"worker-{name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**self.env, **extra_env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-n", f"{name}@%h", "-l", "info",
             "-c", "1", "--without-mingle", "--without-gossip", *args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.workers.append(proc)
        if wait:
            wait_for(lambda: self.db.workers.find_one({"name": {"$regex": f"^{name}@"}, "online": True,
                                                        "pid": proc.pid}),
                     timeout=60, what=f"worker {name} to register")
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and its pool processes at once, as a power cut would."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(15)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)

    @property
    def db(self) -> Any:
        return store.db(self.settings)

    def submit(self, *jobs: dict[str, Any]) -> list[str]:
        from mlqueue import service

        return service.submit(list(jobs), "cli", self.settings, where=["job"] * len(jobs))

    def order(self, job_id: str) -> dict[str, Any]:
        return self.db.orders.find_one({"jobId": job_id})

    def wait_final(self, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """The final Order, once its Outcome has also been copied to ``outcomes`` (a write later)."""
        order = wait_for(lambda: self.db.orders.find_one({"jobId": job_id, "state": {"$in": list(orders.FINAL)}}),
                         timeout=timeout, what=f"job {job_id} to finish")
        wait_for(lambda: self.db.outcomes.find_one({"jobId": job_id}), timeout=30, what=f"outcome of {job_id}")
        return order

    def run_cli(self, *args: str, input: str | None = None, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlqueue.cli", *args], cwd=ROOT, input=input,
                              env={**self.env, **extra_env}, capture_output=True, text=True, timeout=120)


def start_hq(home: Path, *args: str) -> subprocess.Popen:
    """A real ``mlqueue hq`` process on free ports, with none of this test process' MLQUEUE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
    return subprocess.Popen([sys.executable, "-m", "mlqueue.cli", "hq", "--home", str(home), "--redis-port", "0",
                             "--mongo-port", "0", "--port", "0", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def farm_env(servers: Servers, home: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
    env.update({
        "MLQUEUE_HOME": str(home),
        "MLQUEUE_BROKER_URL": servers.redis.url,
        "MLQUEUE_MONGO_URL": servers.mongo.url,
        "MLQUEUE_MONGO_DB": name,
        "MLQUEUE_QUEUE": name,
        "MLQUEUE_LOST_AFTER": str(LOST_AFTER),
        "MLQUEUE_TIMEOUT_GRACE": "2",
        "MLQUEUE_STORE_RETRY_FOR": "120",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def make_farm(servers: Servers, home: Path, name: str, monkeypatch: pytest.MonkeyPatch,
              **extra_env: str) -> Farm:
    """Point this test process (env, settings, store clients) at ``servers`` under database/queue ``name``."""
    env = {**farm_env(servers, home, name), **extra_env}  # e.g. another broker: tests/test_rabbitmq_broker.py
    for key, value in env.items():
        if key.startswith("MLQUEUE_"):
            monkeypatch.setenv(key, value)
    settings = reload_settings()
    store.forget_clients()
    store.ensure_indexes(settings)
    return Farm(settings=settings, env=env, home=home)


@pytest.fixture
def farm(servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
         ) -> Iterator[Farm]:
    """A clean HQ namespace (database + queue) on the session's servers; workers stopped afterwards."""
    name = f"t{secrets.token_hex(4)}"
    result = make_farm(servers, tmp_path, name, monkeypatch)
    settings = result.settings
    yield result
    result.stop_all()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for log in tmp_path.glob("worker-*.log"):
            print(f"----- {log.name}\n{log.read_text()[-4000:]}")
    store.client(settings).drop_database(name)
    reload_settings()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Remember each phase's report on the item, so fixtures can print worker logs on failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
