"""A small house for one scenario: its own Redis and store, real ``celery`` worker processes, a reaper.

Everything lives under one temporary directory and is stopped by ``close``. The driver process plays
the HQ's part (it submits, and runs the reaper the HQ would run); workers are ordinary
``celery -A mlqueue worker`` processes, each in its own process group so a SIGKILL takes the whole
machine down at once, optionally started inside a network namespace of the virtual house.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlqueue import jobs, orders, scripts, store
from mlqueue.servers import MongoServer, RedisServer
from mlqueue.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
JOB_SCRIPT = Path(__file__).resolve().parent / "chaos_job.py"


class HouseError(RuntimeError):
    """The house did not reach the state a scenario waits for; the message says what and where to look."""


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise HouseError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    started: float

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class House:
    """One scenario's servers and workers. ``bind`` is where the servers listen (a bridge address in the
    virtual house); ``lost_after`` is short so presumed-dead workers are noticed in seconds."""

    root: Path
    name: str = field(default_factory=lambda: f"chaos{secrets.token_hex(3)}")
    bind: str = "127.0.0.1"
    lost_after: float = 3.0
    worker_env: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    mongo: MongoServer | None = None
    settings: Settings | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    stop_reaper: threading.Event = field(default_factory=threading.Event)
    template: dict[str, Any] | None = None

    # ------------------------------------------------------------------ servers and the driver's reaper

    def start(self, reaper: bool = True) -> House:
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.root / "redis", self.root / "redis.log", bind=self.bind,
                                 password=secrets.token_hex(12)).start()
        self.mongo = MongoServer(self.root / "mongo", self.root / "mongo.log", bind=self.bind,
                                 password=secrets.token_hex(12)).start()
        return self.attach(self.redis.url, self.mongo.url, reaper)

    def attach(self, broker_url: str, mongo_url: str, reaper: bool = True) -> House:
        """Use servers someone else runs (an ``mlqueue hq``); push the chaos script there."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(home=self.root / "hq", broker_url=broker_url, mongo_url=mongo_url,
                                 mongo_db=self.name, queue=self.name, lost_after=self.lost_after,
                                 store_retry_for=300.0, timeout_grace=2.0, max_attempts=50)
        store.ensure_indexes(self.settings)
        scripts.push(JOB_SCRIPT, settings=self.settings)
        self.template = jobs.validate({"scriptName": "chaos_job", "maxAttempts": 50}, settings=self.settings)
        if reaper:
            self.start_reaper()
        return self

    def start_reaper(self) -> None:
        """The HQ's reaper, in the driver (it notices silent workers and re-sends unsent messages)."""
        self.stop_reaper.clear()
        reaper = orders.Reaper("reaper@chaos", self.settings)
        threading.Thread(target=reaper.run_forever, args=(self.stop_reaper,), daemon=True).start()

    @property
    def db(self) -> Any:
        return store.db(self.settings)

    def env(self, worker: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
        env.update({
            "MLQUEUE_HOME": str(self.root / "workers" / worker), "MLQUEUE_BROKER_URL": self.settings.broker_url,
            "MLQUEUE_MONGO_URL": self.settings.mongo_url, "MLQUEUE_MONGO_DB": self.name, "MLQUEUE_QUEUE": self.name,
            "MLQUEUE_LOST_AFTER": str(self.lost_after), "MLQUEUE_TIMEOUT_GRACE": "2",
            "MLQUEUE_STORE_RETRY_FOR": "300", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        })
        env.update(self.worker_env)
        return env

    # ------------------------------------------------------------------ workers

    def start_worker(self, name: str, wait: bool = True, prefix: list[str] | None = None,
                     **extra_env: str) -> Worker:
        """A real worker process (``prefix`` runs it elsewhere, e.g. ``ip netns exec NS``)."""
        log = open(self.root / f"worker-{name}.log", "ab")  # noqa: SIM115 - owned by the child
        argv = [*(prefix or []), sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-n", f"{name}@%h",
                "-l", "info", "-c", "1", "--without-mingle", "--without-gossip"]
        started = time.time()
        proc = subprocess.Popen(argv, cwd=ROOT, env={**self.env(name), **extra_env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(name, proc, started)
        self.workers[name] = worker
        if wait:
            self.wait_registered(worker)
        return worker

    def start_workers(self, n: int) -> list[Worker]:
        """``n`` workers named w0, w1, ..., each registered before the next starts (every scenario's staff)."""
        return [self.start_worker(f"w{i}") for i in range(n)]

    def wait_registered(self, worker: Worker, timeout: float = 120.0) -> None:
        from datetime import UTC, datetime

        since = datetime.fromtimestamp(worker.started - 1, UTC)

        def ready() -> bool:
            if not worker.alive:
                raise HouseError(f"worker {worker.name} exited; see {self.root / f'worker-{worker.name}.log'}")
            return self.db.workers.find_one({"name": {"$regex": f"^{worker.name}@"}, "startedDate": {"$gt": since}})

        wait_until(ready, timeout, f"worker {worker.name} to register")

    def kill(self, name: str) -> None:
        """SIGKILL a whole worker machine: main process and pool at once, as a power cut would."""
        worker = self.workers[name]
        worker.signal(signal.SIGKILL)
        worker.proc.wait(10)

    def stop_all(self) -> None:
        for worker in self.workers.values():
            if worker.alive:
                worker.signal(signal.SIGCONT)
                worker.signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.proc.wait(20)
            except subprocess.TimeoutExpired:
                worker.signal(signal.SIGKILL)
                worker.proc.wait(5)

    # ------------------------------------------------------------------ Jobs

    def submit(self, count: int, **fields: Any) -> list[str]:
        """Submit ``count`` chaos Jobs (validated once: they differ only in their index)."""
        docs = [{**self.template, **fields, "i": i} for i in range(count)]
        return orders.submit(docs, by="chaos", settings=self.settings)

    def unfinished(self) -> int:
        return self.db.orders.count_documents({"state": {"$nin": list(orders.FINAL)}})

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for order in self.db.orders.find({}, {"state": 1}):
            counts[order["state"]] = counts.get(order["state"], 0) + 1
        return counts

    def settle(self, timeout: float) -> bool:
        """Wait until every Order is final and its Outcome stored; False if the house did not settle."""
        def settled() -> bool:
            try:
                return self.unfinished() == 0 and self.db.outcomes.count_documents({}) >= \
                    self.db.orders.count_documents({})
            except store.TRANSIENT:
                return False

        try:
            wait_until(settled, timeout, "every Job to finish", every=0.5)
        except HouseError:
            return False
        return True

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        self.stop_reaper.set()
        self.stop_all()
        store.forget_clients()
        for server in (self.mongo, self.redis):
            if server is not None:
                server.stop()
