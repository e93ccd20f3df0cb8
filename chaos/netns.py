"""The virtual house: each worker "machine" in its own network namespace, all joined by one bridge.

The bridge carries the HQ side's address (``198.18.N.1``, in the 198.18.0.0/15 range reserved for
benchmarks, so nothing real is ever addressed) and the servers listen on it; each machine gets a veth
pair (one end on the bridge, the other in its namespace with ``198.18.N.(10+i)``) and its own hostname
(a UTS namespace via ``unshare``). A partition is the machine's bridge port set down with ``ip link``;
healing sets it up again. Every name carries a random prefix, and ``close`` removes all of it.
Needs root (``ip netns add``); ``unavailable()`` says why not otherwise.
"""

from __future__ import annotations

import random
import secrets
import subprocess
from types import TracebackType


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """None if namespaces and bridges can be made here, else the reason (printed when a scenario skips)."""
    probe = f"chzprobe{secrets.token_hex(3)}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip() or made.returncode} (needs root)"
    _ip("netns", "del", probe, check=False)
    if subprocess.run(["unshare", "--help"], capture_output=True).returncode != 0:
        return "`unshare` (util-linux) is not available"
    return None


class VirtualHouse:
    def __init__(self, machines: list[str]) -> None:
        self.prefix = f"chz{secrets.token_hex(2)}"
        used = _ip("-o", "addr").stdout
        free = [n for n in range(256) if f"198.18.{n}." not in used]
        self.net = random.Random(secrets.randbits(32)).choice(free)
        self.hq_address = f"198.18.{self.net}.1"
        self.machines = list(machines)
        self.addresses = {m: f"198.18.{self.net}.{10 + i}" for i, m in enumerate(self.machines)}
        self.bridge = f"{self.prefix}br"

    def _ns(self, machine: str) -> str:
        return f"{self.prefix}-{machine}"

    def _host_end(self, machine: str) -> str:
        return f"{self.prefix}h{self.machines.index(machine)}"

    def __enter__(self) -> VirtualHouse:
        try:
            self._build()
        except Exception:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.hq_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, machine in enumerate(self.machines):
            ns, host_end, ns_end = self._ns(machine), self._host_end(machine), f"{self.prefix}n{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("link", "set", ns_end, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{self.addresses[machine]}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def exec_prefix(self, machine: str) -> list[str]:
        """Run a command as ``machine``: inside its namespace, with its own hostname."""
        hostname = f"{machine}-{self.prefix}"
        return ["ip", "netns", "exec", self._ns(machine), "unshare", "--uts", "sh", "-c",
                f'hostname {hostname} && exec "$0" "$@"']

    def cut(self, machine: str) -> None:
        _ip("link", "set", self._host_end(machine), "down")

    def heal(self, machine: str) -> None:
        _ip("link", "set", self._host_end(machine), "up")

    def close(self) -> None:
        for machine in self.machines:
            _ip("link", "del", self._host_end(machine), check=False)
            _ip("netns", "del", self._ns(machine), check=False)
        _ip("link", "del", self.bridge, check=False)
