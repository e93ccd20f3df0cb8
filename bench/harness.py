"""What the benches all repeat, written once: embedded servers in a temporary directory, the ``MLQUEUE_``
environment pointing at them, real Celery workers started and stopped, polling until a condition holds,
and the figures saved as JSON under ``bench/results/``.

Nothing here measures anything; it only sets up and tears down, so each bench's figures still mean what
its own docstring says. Benches run as ``python bench/X.py``: each puts the repository root on
``sys.path`` first, then imports ``bench.harness``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def results_path(name: str) -> Path:
    """Where a bench saves its figures: ``bench/results/<name>.json``."""
    return ROOT / "bench" / "results" / f"{name}.json"


def save(path: Path, figures: Any, **dumps: Any) -> None:
    """Write ``figures`` as indented JSON (extra ``json.dumps`` options in ``dumps``), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, **dumps) + "\n")


def start_servers(base: Path) -> tuple[Any, Any]:
    """An embedded Redis (with a random password) and MongoDB under ``base``, both started."""
    from mlqueue.servers import MongoServer, RedisServer

    redis_server = RedisServer(base / "redis", base / "redis.log", password=secrets.token_hex(8)).start()
    mongo_server = MongoServer(base / "mongo", base / "mongo.log").start()
    return redis_server, mongo_server


@contextlib.contextmanager
def servers(base: Path) -> Iterator[tuple[Any, Any]]:
    """``start_servers``, stopped (store first, then broker) when the block ends, however it ends."""
    redis_server, mongo_server = start_servers(base)
    try:
        yield redis_server, mongo_server
    finally:
        mongo_server.stop()
        redis_server.stop()


def mlqueue_env(home: Path, redis_server: Any, mongo_server: Any, name: str = "bench") -> dict[str, str]:
    """The ``MLQUEUE_`` variables for a house on these servers; database and queue are both ``name``."""
    return {"MLQUEUE_HOME": str(home), "MLQUEUE_BROKER_URL": redis_server.url, "MLQUEUE_MONGO_URL": mongo_server.url,
            "MLQUEUE_MONGO_DB": name, "MLQUEUE_QUEUE": name}


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any ``MLQUEUE_`` variable of the caller's shell, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}, **extra}


def connect(env: dict[str, str]) -> Any:
    """Point this process at the house in ``env``: settings reloaded, old store clients dropped, indexes made."""
    from mlqueue import store
    from mlqueue.settings import reload_settings

    os.environ.update(env)
    settings = reload_settings()
    store.forget_clients()
    store.ensure_indexes(settings)
    return settings


def start_worker(env: dict[str, str], log: Path, *options: str, name: str | None = None, app: str = "mlqueue",
                 level: str = "warning", cwd: Path = ROOT) -> subprocess.Popen:
    """A real one-process Celery worker in its own session (so ``stop_worker`` ends its pool too)."""
    argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-c", "1", "-l", level]
    if name:
        argv += ["-n", name]
    argv += ["--without-mingle", "--without-gossip", *options]
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=open(log, "ab"),  # noqa: SIM115 - owned by the child
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen) -> None:
    """SIGTERM the worker's whole session, SIGKILL it if it has not ended within 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        stop_worker(proc)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll until ``predicate`` returns something truthy and return it; exit the bench naming ``what`` if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")
