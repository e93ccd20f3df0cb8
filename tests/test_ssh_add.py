"""``mlqueue machines add`` over real SSH: Debian's sshd on a loopback port, throwaway keys, and a machine
installed "elsewhere" — a separate directory of this same host — that joins and runs a Job."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, start_hq, wait_for

from mlqueue import jobs, orders, store
from mlqueue.servers import free_port
from mlqueue.settings import Settings

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    port: int
    identity: Path
    known_hosts: Path


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not SSHD.exists():
        print("SKIPPED: /usr/sbin/sshd is missing (`make test` installs Debian's openssh-server)")
        pytest.skip("/usr/sbin/sshd is missing: `make test` installs Debian's openssh-server")
    import asyncssh

    base = tmp_path / "sshd"
    base.mkdir()
    host_key, user_key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(str(base / "host_key"))
    user_key.write_private_key(str(base / "id_ed25519"))
    os.chmod(base / "host_key", 0o600)
    os.chmod(base / "id_ed25519", 0o600)
    (base / "authorized_keys").write_bytes(user_key.export_public_key())
    port = free_port()
    (base / "known_hosts").write_bytes(f"[127.0.0.1]:{port} ".encode() + host_key.export_public_key())
    (base / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {base / 'host_key'}",
        f"AuthorizedKeysFile {base / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", f"PidFile {base / 'sshd.pid'}",
        "PermitRootLogin prohibit-password", f"AllowUsers {getpass.getuser()}", "Subsystem sftp internal-sftp",
    ]) + "\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory (tmpfiles makes it at boot)
    log = open(base / "sshd.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(base / "sshd_config")], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or _accepts(port), timeout=30, what="sshd to listen")
        assert proc.poll() is None, (base / "sshd.log").read_text()
        yield Sshd(port, base / "id_ed25519", base / "known_hosts")
    finally:
        proc.terminate()
        proc.wait(10)


def test_machines_add_installs_joins_and_starts_a_worker_that_runs_a_job(sshd: Sshd, tmp_path: Path) -> None:
    home = tmp_path / "hq"
    hq = start_hq(home, "--store-auth")
    target = tmp_path / "target"
    try:
        lines: list[str] = []
        wait_for(lambda: lines.append(hq.stdout.readline()) or any("Submit work" in ln for ln in lines),
                 timeout=90, what="HQ banner")
        config = json.loads((home / "config.json").read_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
        added = subprocess.run(
            [sys.executable, "-m", "mlqueue.cli", "--home", str(home), "machines", "add",
             f"{getpass.getuser()}@127.0.0.1", "--port", str(sshd.port), "--identity", str(sshd.identity),
             "--known-hosts", str(sshd.known_hosts), "--python", sys.executable, "--dir", str(target),
             "--name", "sshbox", "--hq-address", f"127.0.0.1:{config['http_port']}",
             "--reuse-site-packages", sysconfig.get_paths()["purelib"], "--offline",
             "--remote-env", f"XDG_CONFIG_HOME={tmp_path / 'xdg'}"],  # the user unit lands in tmp, not ~/.config
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert added.returncode == 0, added.stdout + added.stderr
        print(added.stdout)
        assert "added sshbox" in added.stdout and "capabilities:" in added.stdout and "CPUs" in added.stdout
        installed = list((target / "venv").glob("lib/python*/site-packages/mlqueue/__init__.py"))
        assert installed, "mlqueue was not installed into the target's venv"
        machine_config = target / "home" / "config.json"
        assert oct(machine_config.stat().st_mode)[-3:] == "600"
        assert "machine-sshbox:" in machine_config.read_text()
        assert (tmp_path / "xdg" / "systemd" / "user" / "mlqueue-worker-sshbox.service").is_file()

        settings = Settings(home=home, broker_url=config["broker_url"], mongo_url=config["mongo_url"])
        store.forget_clients()
        [job_id] = orders.submit([jobs.validate({"scriptName": "toy", "lr": 0.1, "epochs": 1}, settings=settings)],
                                 settings=settings)
        order = wait_for(lambda: store.db(settings).orders.find_one({"jobId": job_id,
                                                                     "state": {"$in": list(orders.FINAL)}}),
                         timeout=90, what="the Job to finish on the added machine")
        assert order["state"] == orders.SUCCEEDED and order["worker"].startswith("sshbox@")
    finally:
        pid_file = target / "home" / "worker.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.killpg(pid, signal.SIGTERM)
                wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="the added worker to stop")
            except ProcessLookupError:
                pass
        hq.send_signal(signal.SIGTERM)
        hq.wait(60)
        store.forget_clients()
