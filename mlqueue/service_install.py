"""Run this machine's worker as a user service: started at login, restarted after a crash.

- Linux: a systemd *user* unit ``mlqueue-worker-NAME.service`` in ``$XDG_CONFIG_HOME/systemd/user``
  (``Restart=always``), enabled with ``systemctl --user enable --now``. It starts at login; to start at
  boot without anyone logging in, ``loginctl enable-linger USER`` (printed as a hint).
- macOS: a launchd agent ``~/Library/LaunchAgents/org.mlqueue.worker.NAME.plist`` (``RunAtLoad``,
  ``KeepAlive``), loaded with ``launchctl load -w``.
- Windows: a scheduled task ``mlqueue-worker-NAME`` with a logon trigger and restart-on-failure, from a
  task XML given to ``schtasks /Create /XML``.

Linux is what the tests exercise; the macOS and Windows files are generated the same way and checked
for shape only. Each plan is data (the file, its text, the commands that enable it) so that what would be
done can be shown, tested and done.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Plan:
    path: Path
    text: str
    enable: list[list[str]]
    disable: list[list[str]]
    platform: str


def worker_argv(machine: str, python: str) -> list[str]:
    """The worker's command; ``%h`` is Celery's own placeholder for the host name."""
    return [python, "-m", "celery", "-A", "mlqueue", "worker", "-l", "info", "-n", f"{machine}@%h"]


def systemd_plan(machine: str, home: Path, python: str, config_home: Path | None = None) -> Plan:
    base = config_home or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    unit = f"mlqueue-worker-{machine}.service"
    # systemd expands %-specifiers in ExecStart: %% passes Celery's %h through untouched.
    exec_start = " ".join(shlex.quote(a) for a in worker_argv(machine, python)).replace("%", "%%")
    text = "\n".join([
        "[Unit]",
        f"Description=mlqueue worker {machine} (takes Jobs from the house's HQ)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"Environment=MLQUEUE_HOME={home}",
        "Environment=PYTHONUNBUFFERED=1",
        f"WorkingDirectory={home}",
        f"ExecStart={exec_start}",
        "Restart=always",
        "RestartSec=10",
        "KillMode=mixed",
        "TimeoutStopSec=60",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])
    return Plan(base / "systemd" / "user" / unit, text,
                enable=[["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", unit]],
                disable=[["systemctl", "--user", "disable", "--now", unit]], platform="linux")


def launchd_plan(machine: str, home: Path, python: str, user_home: Path | None = None) -> Plan:
    label = f"org.mlqueue.worker.{machine}"
    logs = home / "logs"
    text = plistlib.dumps({
        "Label": label, "ProgramArguments": worker_argv(machine, python),
        "EnvironmentVariables": {"MLQUEUE_HOME": str(home), "PYTHONUNBUFFERED": "1"},
        "WorkingDirectory": str(home), "RunAtLoad": True, "KeepAlive": True, "ThrottleInterval": 10,
        "StandardOutPath": str(logs / "worker.log"), "StandardErrorPath": str(logs / "worker.log"),
    }).decode()
    path = (user_home or Path.home()) / "Library" / "LaunchAgents" / f"{label}.plist"
    return Plan(path, text, enable=[["launchctl", "load", "-w", str(path)]],
                disable=[["launchctl", "unload", "-w", str(path)]], platform="darwin")


def windows_plan(machine: str, home: Path, python: str) -> Plan:
    """A task that runs at logon and restarts (every minute, up to 999 times) after a failure."""
    name = f"mlqueue-worker-{machine}"
    argv = worker_argv(machine, python)
    # The worker needs MLQUEUE_HOME; a task has no environment block, so it goes through cmd's `set`.
    command = f'/c set "MLQUEUE_HOME={home}" && {subprocess.list2cmdline(argv)}'
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo><Description>mlqueue worker {escape(machine)}</Description></RegistrationInfo>
  <Triggers><LogonTrigger><Enabled>true</Enabled></LogonTrigger></Triggers>
  <Principals><Principal id="Author">
    <LogonType>InteractiveToken</LogonType><RunLevel>LeastPrivilege</RunLevel>
  </Principal></Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure><Interval>PT1M</Interval><Count>999</Count></RestartOnFailure>
  </Settings>
  <Actions Context="Author"><Exec>
    <Command>cmd.exe</Command>
    <Arguments>{escape(command)}</Arguments>
    <WorkingDirectory>{escape(str(home))}</WorkingDirectory>
  </Exec></Actions>
</Task>
"""
    path = home / f"{name}.xml"
    return Plan(path, text, enable=[["schtasks", "/Create", "/TN", name, "/XML", str(path), "/F"],
                                    ["schtasks", "/Run", "/TN", name]],
                disable=[["schtasks", "/Delete", "/TN", name, "/F"]], platform="win32")


def plan_for(machine: str, home: Path, python: str | None = None, platform: str | None = None) -> Plan:
    python = python or sys.executable
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return systemd_plan(machine, home, python)
    if platform == "darwin":
        return launchd_plan(machine, home, python)
    if platform in ("win32", "cygwin"):
        return windows_plan(machine, home, python)
    raise RuntimeError(f"no service manager known for platform {platform!r}; run the worker yourself: "
                       f"{' '.join(worker_argv(machine, python))}")


def _run_all(commands: list[list[str]]) -> str | None:
    """Run the commands in order; None when all succeeded, else what failed (the file stays written)."""
    for argv in commands:
        if shutil.which(argv[0]) is None:
            return f"{argv[0]} is not available here"
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            return f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def install(plan: Plan, start: bool = True) -> str | None:
    """Write the service file and (with ``start``) enable and start it. Returns a problem, or None."""
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    plan.path.write_text(plan.text, encoding="utf-8")
    return _run_all(plan.enable) if start else None


def uninstall(plan: Plan, stop: bool = True) -> tuple[bool, str | None]:
    """Stop and disable the service, remove its file. Returns (a file was removed, a problem or None)."""
    problem = _run_all(plan.disable) if stop and plan.path.exists() else None
    existed = plan.path.exists()
    if existed:
        plan.path.unlink()
        if plan.platform == "linux":
            _run_all([["systemctl", "--user", "daemon-reload"]])
    return existed, problem
