"""A real, throwaway RabbitMQ node for tests: started as the current user, on free ports, in a tmp dir.

Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq`` user and the package's
own directories, so the node is started through the script behind it with everything of its own: AMQP
and distribution ports, an ``epmd`` on a port of its own (the default 4369 may belong to another Erlang
node, e.g. the package's service), data, logs, config, plugins file, Erlang cookie (``HOME``) and node name.
``rabbitmq.conf`` sets ``consumer_timeout`` to 7 days, as docs/scaling.md tells a house to do.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlqueue.servers import free_port

DEBIAN_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CONSUMER_TIMEOUT_MS = 7 * 86400 * 1000


def server_binary() -> Path | None:
    """The ``rabbitmq-server`` start script that runs as the calling user, or None if none is installed."""
    if DEBIAN_SERVER.exists():
        return DEBIAN_SERVER
    found = shutil.which("rabbitmq-server")
    return Path(found) if found and not found.startswith("/usr/sbin/") else None


@dataclass
class RabbitServer:
    base: Path
    binary: Path
    port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    user: str = "mlqueue"
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    node: str = field(default_factory=lambda: f"mlqtest{secrets.token_hex(4)}@localhost")
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}//"

    @property
    def log_path(self) -> Path:
        return self.base / "stdout.log"

    def env(self) -> dict[str, str]:
        """Everything the node reads from the environment, pointed into ``base`` (nothing from /etc)."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {**keep, "HOME": str(self.base), "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"), "RABBITMQ_LOG_BASE": str(self.base / "log"),
                "RABBITMQ_PID_FILE": str(self.base / "node.pid"), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1"}

    def write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n"
            "disk_free_limit.absolute = 10MB\n")

    def start(self, timeout: float = 120.0) -> RabbitServer:
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen([str(self.binary)], cwd=self.base, env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.tail()}")
            if self.accepts_amqp():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not accept AMQP within {timeout:.0f}s:\n{self.tail()}")

    def accepts_amqp(self) -> bool:
        import amqp

        conn = amqp.Connection(f"127.0.0.1:{self.port}", userid=self.user, password=self.password,
                               connect_timeout=2)
        try:
            conn.connect()
            return True
        except (OSError, amqp.exceptions.AMQPError):
            return False
        finally:
            try:
                conn.collect()
            except Exception:  # noqa: BLE001, S110 - a half-open test connection; nothing to close
                pass

    def tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the node, as a power cut of the broker's process would (its epmd stays, as it would)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Kill the node (its whole process group) and the epmd it started on its own port."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        epmd = shutil.which("epmd") or next(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"), None)
        if epmd:
            subprocess.run([str(epmd), "-port", str(self.epmd_port), "-kill"], env=self.env(),
                           capture_output=True, timeout=10, check=False)
