"""The HQ: the one long-running process on the main machine.

It owns the home directory (data, logs, generated config and credentials), starts the embedded Redis
and MongoDB-protocol servers unless real ones are configured (beside a RabbitMQ broker it still starts
its Redis, for sweeps' studies and verdicts, unless MLQUEUE_REDIS_URL names one), serves the HTTP API and dashboard
(``mlqueue.api``) with uvicorn, runs Flower (Celery's own monitor) beside it, runs the reaper, and
prints the exact command other machines paste to join as workers.

Credentials: Redis always has a password; the MongoDB server requires a user and password whenever it
listens beyond loopback; the API and Flower need the HQ token. All are generated once, kept in
HOME/config.json (mode 600), and reused across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlqueue import brokers, order_index, orders, ranking, store
from mlqueue.errors import ConfigError
from mlqueue.joining import join_address, open_door
from mlqueue.servers import MongoServer, RedisServer, die_with_parent, free_port, lan_address
from mlqueue.settings import HOME_CONFIG_NAME, read_json_file, reload_settings
from mlqueue.sweeps.driver import Driver

log = logging.getLogger(__name__)
DEFAULT_PORTS = {"redis_port": 6390, "mongo_port": 27027, "http_port": 8350}


def port_is_free(port: int, bind: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((bind if bind not in ("0.0.0.0", "") else "", port))
        except OSError:
            return False
    return True


def choose_port(asked: int | None, previous: int | None, default: int, bind: str) -> int:
    """Explicit port (0 = any free one), else the port used last time (workers remember it), else default."""
    if asked is not None:
        return asked or free_port()
    for candidate in (previous, default):
        if candidate and port_is_free(candidate, bind):
            return candidate
    return free_port()


START_READS_WAIT = 900.0  # seconds the rankings wait for the Orders' whole read before reading anyway


def read_at_start(settings: Any, reaper: orders.Reaper) -> None:
    """The start's whole reads, one after the other rather than all at once: first the Orders (one read
    for the dashboard's table, which claimed it when the API started, and the Orders index), then the
    Outcomes for the default rankings, then the reaper's comparison of every final Order with the
    Outcomes. Each is read in short windows so pages are answered meanwhile; run together, they made
    every window (and the page's query between them) wait behind the others."""
    try:
        index = order_index.index_for(settings)
        index.start_loading()  # nothing to do when the dashboard's table is reading the Orders for it
        index.wait_read(START_READS_WAIT)
        ranking.warm(settings)
    finally:
        reaper.repair_everything_next()


@dataclass
class HQ:
    home: Path
    bind: str = "127.0.0.1"
    redis_port: int | None = None
    mongo_port: int | None = None
    http_port: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    redis: RedisServer | None = None
    mongo: MongoServer | None = None
    mongo_auth: bool | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    api_server: Any = None
    api_thread: threading.Thread | None = None
    flower: subprocess.Popen | None = None
    door: Any = None  # mlqueue.joining.Door: machine access, LAN advert, the banner's invite

    @property
    def config_path(self) -> Path:
        return self.home / HOME_CONFIG_NAME

    def prepare(self) -> dict[str, Any]:
        """Create the home and its credentials once; keep them across restarts."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        previous = read_json_file(self.config_path)
        config = dict(previous)
        config.setdefault("redis_password", secrets.token_urlsafe(24))
        config.setdefault("token", secrets.token_urlsafe(32))
        config.setdefault("read_token", secrets.token_urlsafe(32))
        config.setdefault("mongo_password", secrets.token_urlsafe(24))
        config["bind"] = self.bind
        for key, asked in (("redis_port", self.redis_port), ("mongo_port", self.mongo_port),
                           ("http_port", self.http_port)):
            config[key] = choose_port(asked, previous.get(key), DEFAULT_PORTS[key], self.bind)
        previous_flower = previous.get("flower_port")
        config["flower_port"] = previous_flower if previous_flower and port_is_free(previous_flower, self.bind) \
            else free_port()
        self.config = config
        return config

    def start_servers(self) -> None:
        """Start embedded servers unless the environment names real ones."""
        external_broker = os.environ.get("MLQUEUE_BROKER_URL")
        external_mongo = os.environ.get("MLQUEUE_MONGO_URL")
        external_redis = os.environ.get("MLQUEUE_REDIS_URL")
        self.config.pop("redis_url", None)
        if external_broker:
            self.config["broker_url"] = external_broker
        beside_rabbit = bool(external_broker) and not brokers.is_redis(external_broker)
        if beside_rabbit and external_redis:
            self.config["redis_url"] = external_redis
        elif not external_broker or beside_rabbit:  # the embedded Redis is the broker, or keeps sweeps' studies
            self.redis = RedisServer(self.home / "redis", self.home / "logs" / "redis.log",
                                     port=self.config["redis_port"], bind=self.bind,
                                     password=self.config["redis_password"]).start()
            self.config["redis_url" if beside_rabbit else "broker_url"] = self.redis.url
        if external_mongo:
            self.config["mongo_url"] = external_mongo
        else:
            self.mongo = MongoServer(self.home / "mongo", self.home / "logs" / "mongo.log",
                                     port=self.config["mongo_port"], bind=self.bind, auth=self.mongo_auth,
                                     password=self.config["mongo_password"]).start()
            self.config["mongo_url"] = self.mongo.url
        self.config["embedded"] = {"redis": self.redis is not None, "mongo": not external_mongo}
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        os.chmod(self.config_path, 0o600)
        (self.home / "hq.pid").write_text(str(os.getpid()))

    @property
    def public_host(self) -> str:
        """The address other machines (and the browser) use to reach this HQ."""
        return lan_address() if self.bind in ("0.0.0.0", "::", "") else self.bind

    def _public(self, url: str) -> str:
        """A server's host:port as other machines reach it (the address the join command uses)."""
        return urlsplit(url).netloc.split("@")[-1].replace("127.0.0.1", self.public_host)

    def join_command(self) -> str:
        """The command to paste on another machine to make it a worker of this HQ."""
        host = self.public_host
        broker = self.config["broker_url"].replace("127.0.0.1", host)
        mongo = self.config["mongo_url"].replace("127.0.0.1", host)
        redis = self.config.get("redis_url", "").replace("127.0.0.1", host)  # beside RabbitMQ: sweeps' verdicts
        redis = f"MLQUEUE_REDIS_URL='{redis}' " if redis else ""
        return f"MLQUEUE_BROKER_URL='{broker}' MLQUEUE_MONGO_URL='{mongo}' {redis}celery -A mlqueue worker -l info"

    def banner(self) -> str:
        from mlqueue import machines_cli

        me = machines_cli.mlqueue_command()  # the exact command, so a fresh shell without the venv on PATH works
        web = f"http://{self.public_host}:{self.config['http_port']}"
        store_url = self.config["mongo_url"]
        lines = [
            f"mlqueue HQ is up (home {self.home})",
            *(self.door.banner_lines(join_address(self.public_host, self.config["http_port"])) if self.door else []),
            f"  broker    : {self._public(self.config['broker_url'])}",
            f"  store     : {self._public(store_url)}" + ("  (needs user and password)" if "@" in store_url else ""),
            f"  dashboard : {web}/ui/",
            f"  API       : {web}/docs",
            f"  flower    : http://{self.public_host}:{self.config['flower_port']}/  (user mlqueue, password: "
            "the token)",
            f"  token     : the \"token\" in {self.config_path} (paste it at {web}/login; "
            "send it as 'Authorization: Bearer TOKEN')",
            "",
            "On this machine, start a worker with:",
            f"  MLQUEUE_HOME={self.home} {machines_cli._command('celery')} -A mlqueue worker -l info",
            "On every other machine (after `pip install '.[ml]'` of this project; [ml] brings TensorFlow "
            "for nn.py), paste:",
            f"  {self.join_command()}",
        ]
        if self.bind not in ("0.0.0.0", "::"):
            lines.append(f"  (servers listen on {self.bind} only: restart with `{me} hq --bind 0.0.0.0` "
                         "so other machines can reach them)")
        lines += ["Submit work with:", f"  MLQUEUE_HOME={self.home} {me} submit tasks/demo_job.json",
                  "or from any machine, through the API:",
                  f"  MLQUEUE_TOKEN=<token> mlqueue --hq {web} submit tasks/demo_job.json"]
        return "\n".join(lines)

    def start_api(self, settings: Any) -> None:
        """Serve the API and dashboard with uvicorn in a thread (the main thread keeps the signals)."""
        import uvicorn

        from mlqueue.api import create_app

        config = uvicorn.Config(create_app(settings), host=self.bind, port=self.config["http_port"],
                                log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
        self.api_server = uvicorn.Server(config)
        self.api_thread = threading.Thread(target=self.api_server.run, name="api", daemon=True)
        self.api_thread.start()
        deadline = time.monotonic() + 30
        while not self.api_server.started:
            if not self.api_thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the HTTP API could not listen on {self.bind}:{self.config['http_port']} "
                                 "(port taken?); choose another with `mlqueue hq --port N`")
            time.sleep(0.05)

    def start_flower(self) -> None:
        """Celery's own monitor, password-protected with the token; it dies with the HQ."""
        env = {**os.environ, "MLQUEUE_HOME": str(self.home), "MLQUEUE_BROKER_URL": self.config["broker_url"],
               "MLQUEUE_MONGO_URL": self.config["mongo_url"],
               "FLOWER_BASIC_AUTH": f"mlqueue:{self.config['token']}"}  # not in argv: `ps` shows argv to all
        log_file = open(self.home / "logs" / "flower.log", "ab")  # noqa: SIM115 - owned by the child
        self.flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mlqueue", "flower", f"--port={self.config['flower_port']}",
             f"--address={self.bind}"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop the servers cleanly."""
        self.prepare()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop_event.set())
        try:
            self.start_servers()
            settings = reload_settings()
            store.forget_clients()
            store.ensure_indexes(settings)
            self.door = open_door(settings, self.config)
            self.start_flower()
            self.start_api(settings)
            print(self.banner(), flush=True)
            # until the start's reads are done, its reaper repairs only the Outcomes of Orders ending meanwhile
            reaper = orders.Reaper("reaper@hq", settings, full_repair=False)
            threading.Thread(target=read_at_start, args=(settings, reaper), name="start-reads", daemon=True).start()
            threading.Thread(target=reaper.run_forever, args=(self.stop_event,), daemon=True).start()
            driver = Driver(owner="driver@hq", settings=settings)  # sweeps advance with no CLI waiting on them
            threading.Thread(target=driver.run_forever, args=(self.stop_event,), name="sweeps", daemon=True).start()
            self.stop_event.wait()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self.door is not None:
            self.door.close()
        if self.api_server is not None:
            self.api_server.should_exit = True
            if self.api_thread is not None:
                self.api_thread.join(10)
        if self.flower is not None and self.flower.poll() is None:
            self.flower.terminate()
            try:
                self.flower.wait(10)
            except subprocess.TimeoutExpired:
                self.flower.kill()
                self.flower.wait(5)
        for server in (self.mongo, self.redis):
            if server:
                server.stop()
        pid_file = self.home / "hq.pid"
        if pid_file.exists():
            pid_file.unlink()
        print("mlqueue HQ stopped", flush=True)
