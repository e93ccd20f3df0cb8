"""The worker as a user service: the systemd unit is written, verified, and its command runs a Job."""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import ROOT, Farm, wait_for

from mlqueue import orders, service_install


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlqueue.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _unit_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("["):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_install_service_writes_a_systemd_user_unit_whose_command_runs_a_job(farm: Farm, tmp_path: Path) -> None:
    home = tmp_path / "machine"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({
        "broker_url": farm.settings.broker_url, "mongo_url": farm.settings.mongo_url, "machine": "svc1",
        "mongo_db": farm.settings.mongo_db, "queue": farm.settings.queue}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLQUEUE_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    installed = _cli("--home", str(home), "worker", "install-service", env=env)
    assert installed.returncode == 0, installed.stderr
    unit = tmp_path / "xdg" / "systemd" / "user" / "mlqueue-worker-svc1.service"
    assert f"wrote {unit}" in installed.stdout
    text = unit.read_text()
    values = _unit_values(text)
    assert values["Restart"] == ["always"] and values["WantedBy"] == ["default.target"]
    assert f"MLQUEUE_HOME={home}" in values["Environment"]
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                                  timeout=60)
        assert verified.returncode == 0, verified.stderr
    else:
        print("systemd-analyze is not installed: the unit was checked by content only")

    # Run exactly what systemd would run (its %% unescaped), with the unit's environment: a real worker.
    argv = shlex.split(values["ExecStart"][0].replace("%%", "%"))
    unit_env = dict(e.split("=", 1) for e in values["Environment"])
    worker = subprocess.Popen(argv + ["-c", "1", "--without-mingle", "--without-gossip"],
                              cwd=values["WorkingDirectory"][0], env={**env, **unit_env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(lambda: farm.db.workers.find_one({"name": {"$regex": "^svc1@"}, "pid": worker.pid}),
                 timeout=60, what="the service's worker to register")
        [job_id] = farm.submit({"scriptName": "toy", "lr": 0.1, "epochs": 1})
        order = farm.wait_final(job_id)
        assert order["state"] == orders.SUCCEEDED and order["worker"].startswith("svc1@")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)

    removed = _cli("--home", str(home), "worker", "uninstall-service", env=env)
    assert removed.returncode == 0 and f"removed {unit}" in removed.stdout
    assert not unit.exists()


def test_launchd_and_windows_plans_are_well_formed(tmp_path: Path) -> None:
    agent = service_install.launchd_plan("mac-1", tmp_path / "home", "/usr/bin/python3", user_home=tmp_path)
    parsed = plistlib.loads(agent.text.encode())
    assert parsed["RunAtLoad"] and parsed["KeepAlive"] and parsed["Label"] == "org.mlqueue.worker.mac-1"
    assert parsed["EnvironmentVariables"]["MLQUEUE_HOME"] == str(tmp_path / "home")
    assert parsed["ProgramArguments"][-2:] == ["-n", "mac-1@%h"]
    assert agent.path == tmp_path / "Library" / "LaunchAgents" / "org.mlqueue.worker.mac-1.plist"

    task = service_install.windows_plan("win-1", Path("C:/Users/me/.mlqueue"), "C:/venv/python.exe")
    root = ET.fromstring(task.text.encode())
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    assert root.find("t:Triggers/t:LogonTrigger", ns) is not None
    assert root.find("t:Settings/t:RestartOnFailure/t:Count", ns).text == "999"
    assert "MLQUEUE_HOME=C:/Users/me/.mlqueue" in root.find("t:Actions/t:Exec/t:Arguments", ns).text
    assert task.enable[0][:2] == ["schtasks", "/Create"]
