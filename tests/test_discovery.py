"""HQ discovery over a virtual LAN the test builds: two network namespaces joined by a veth pair.

Addresses come from 198.18.0.0/15 (reserved for benchmarking) and every name carries a random suffix,
so parallel runs never meet; the namespaces — and with them the veth pair — are deleted afterwards.
Traffic stays inside the two namespaces: the HQ binds 0.0.0.0 *inside* its namespace.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, wait_for


@dataclass
class Lan:
    hq_ns: str
    machine_ns: str
    hq_address: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, ns: str, *args: str, home: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "mlqueue.cli", "--home", str(home),
                               *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def start_hq(self, home: Path) -> str:
        """An HQ bound to 0.0.0.0 in the HQ namespace; returns the invite code its banner shows."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.hq_ns, sys.executable, "-m", "mlqueue.cli", "hq",
                                 "--home", str(home), "--bind", "0.0.0.0", "--redis-port", "0", "--mongo-port", "0",
                                 "--port", "0"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        lines: list[str] = []
        wait_for(lambda: lines.append(proc.stdout.readline()) or any("Submit work" in ln for ln in lines),
                 timeout=120, what="HQ banner")
        banner = "".join(lines)
        assert "not advertised" not in banner, banner
        return re.search(r"--code ([0-9A-Z]{4}-[0-9A-Z]{4})", banner).group(1)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def lan() -> Iterator[Lan]:
    suffix = secrets.token_hex(3)
    hq_ns, machine_ns = f"mlqhq{suffix}", f"mlqm{suffix}"
    probe = subprocess.run(["ip", "netns", "add", hq_ns], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"SKIPPED: network namespaces cannot be created here: {probe.stderr.strip()}")
        pytest.skip(f"network namespaces cannot be created here (`ip netns add`: {probe.stderr.strip()})")
    subnet = f"198.{18 + secrets.randbelow(2)}.{secrets.randbelow(256)}"
    made = Lan(hq_ns, machine_ns, f"{subnet}.1")
    try:
        _ip("netns", "add", machine_ns)
        _ip("link", "add", f"vh{suffix}", "type", "veth", "peer", "name", f"vm{suffix}")
        for ns, dev, host in ((hq_ns, f"vh{suffix}", 1), (machine_ns, f"vm{suffix}", 2)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up", "multicast", "on")
        yield made
    finally:
        for proc in made.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        for ns in (hq_ns, machine_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_machine_finds_the_hq_on_the_lan_without_an_address(lan: Lan, tmp_path: Path) -> None:
    nobody = lan.run(lan.machine_ns, "join", "--code", "AAAA-AAAA", "--name", "early", home=tmp_path / "early")
    assert nobody.returncode == 2
    assert "no mlqueue HQ answered" in nobody.stderr and "mlqueue join HOST[:PORT] --code CODE" in nobody.stderr

    code = lan.start_hq(tmp_path / "hq1")
    joined = lan.run(lan.machine_ns, "join", "--code", code, "--name", "laptop", home=tmp_path / "laptop")
    assert joined.returncode == 0, joined.stderr
    assert "found the HQ" in joined.stderr and lan.hq_address in joined.stderr
    assert f"@{lan.hq_address}:" in (tmp_path / "laptop" / "config.json").read_text()

    lan.start_hq(tmp_path / "hq2")
    several = lan.run(lan.machine_ns, "join", "--code", code, "--name", "other", home=tmp_path / "other")
    assert several.returncode == 2 and "several HQs" in several.stderr
    assert several.stderr.count(f"at {lan.hq_address}:") == 2
