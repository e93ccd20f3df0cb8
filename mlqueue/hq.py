"""The HQ: the one long-running process on the main machine.

It owns the home directory (data, logs, generated config and credentials), starts the embedded Redis
and MongoDB-protocol servers unless real ones are configured, runs the reaper, and prints the exact
command other machines paste to join as workers.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlqueue import orders, store
from mlqueue.servers import MongoServer, RedisServer, free_port
from mlqueue.settings import HOME_CONFIG_NAME, read_json_file, reload_settings

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


def lan_address() -> str:
    """The address other machines in the house can reach us at (best effort, no traffic sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect: picks the outgoing interface, sends nothing
            return s.getsockname()[0]
        except OSError:
            return socket.gethostname()


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
    stop_event: threading.Event = field(default_factory=threading.Event)

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
        config["bind"] = self.bind
        for key, asked in (("redis_port", self.redis_port), ("mongo_port", self.mongo_port),
                           ("http_port", self.http_port)):
            config[key] = choose_port(asked, previous.get(key), DEFAULT_PORTS[key], self.bind)
        self.config = config
        return config

    def start_servers(self) -> None:
        """Start embedded servers unless the environment names real ones."""
        external_broker = os.environ.get("MLQUEUE_BROKER_URL")
        external_mongo = os.environ.get("MLQUEUE_MONGO_URL")
        if external_broker:
            self.config["broker_url"] = external_broker
        else:
            self.redis = RedisServer(self.home / "redis", self.home / "logs" / "redis.log",
                                     port=self.config["redis_port"], bind=self.bind,
                                     password=self.config["redis_password"]).start()
            self.config["broker_url"] = self.redis.url
        if external_mongo:
            self.config["mongo_url"] = external_mongo
        else:
            self.mongo = MongoServer(self.home / "mongo", self.home / "logs" / "mongo.log",
                                     port=self.config["mongo_port"], bind=self.bind).start()
            self.config["mongo_url"] = self.mongo.url
        self.config["embedded"] = {"redis": not external_broker, "mongo": not external_mongo}
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        os.chmod(self.config_path, 0o600)
        (self.home / "hq.pid").write_text(str(os.getpid()))

    def join_command(self) -> str:
        """The command to paste on another machine to make it a worker of this HQ."""
        host = lan_address() if self.bind in ("0.0.0.0", "::") else self.bind
        broker = self.config["broker_url"].replace("127.0.0.1", host)
        mongo = self.config["mongo_url"].replace("127.0.0.1", host)
        return f"MLQUEUE_BROKER_URL='{broker}' MLQUEUE_MONGO_URL='{mongo}' celery -A mlqueue worker -l info"

    def banner(self) -> str:
        lines = [
            f"mlqueue HQ is up (home {self.home})",
            f"  broker : {self.config['broker_url'].split('@')[-1]}",
            f"  store  : {self.config['mongo_url']}",
            "",
            "On this machine, start a worker with:",
            f"  MLQUEUE_HOME={self.home} celery -A mlqueue worker -l info",
            "On every other machine (after `pip install` of this project), paste:",
            f"  {self.join_command()}",
        ]
        if self.bind not in ("0.0.0.0", "::"):
            lines.append(f"  (servers listen on {self.bind} only: restart with `mlqueue hq --bind 0.0.0.0` "
                         "so other machines can reach them)")
        lines += ["Submit work with:", f"  MLQUEUE_HOME={self.home} mlqueue submit tasks/demo_job.json"]
        return "\n".join(lines)

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop the servers cleanly."""
        self.prepare()
        self.start_servers()
        settings = reload_settings()
        store.forget_clients()
        store.ensure_indexes(settings)
        print(self.banner(), flush=True)
        reaper = orders.Reaper("reaper@hq", settings)
        threading.Thread(target=reaper.run_forever, args=(self.stop_event,), daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop_event.set())
        try:
            self.stop_event.wait()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for server in (self.mongo, self.redis):
            if server:
                server.stop()
        pid_file = self.home / "hq.pid"
        if pid_file.exists():
            pid_file.unlink()
        print("mlqueue HQ stopped", flush=True)
