"""Add a machine from the HQ over SSH: install this very mlqueue there, join it, start its worker.

``mlqueue machines add user@host`` (asyncssh) does on the target, in order, stopping at the first step
that fails with what failed and its output:

1. check that Python 3.10+ is there (``--python``, default ``python3``);
2. send a wheel of the mlqueue that is running here (built from this source tree with
   ``pip wheel --no-deps --no-build-isolation``, so it needs no network), into ``DIR/wheels``;
3. create a venv ``DIR/venv`` and install the wheel in it. Dependencies come from whatever the target
   can reach: its package index, or with ``--offline`` only ``DIR/wheels`` (put a wheelhouse there), and
   ``--reuse-site-packages PATH`` lets the venv use packages already installed at PATH on the target
   (a ``.pth`` file — how the test installs on this same host without downloading anything);
4. join with a fresh invite code (``DIR/home`` becomes the machine's home, its config mode 600);
5. install the worker as a user service; where no service manager answers (a container, no user
   session) the worker is started in the background instead, and the report says so;
6. wait for the worker to register with the HQ and report its capabilities.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlqueue.errors import MlqueueError
from mlqueue.settings import PROJECT_ROOT

SOURCE_FILES = ("setup.cfg", "pyproject.toml", "README.md")
SOURCE_DIRS = ("mlqueue", "ml_scripts")


class AddError(MlqueueError, RuntimeError):
    """Raised when a step of adding a machine failed; the message names the step and the target's output."""


@dataclass(frozen=True)
class Target:
    user: str | None
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str, port: int | None = None) -> Target:
        user, _, host = text.rpartition("@")
        if not host or not re.match(r"^[A-Za-z0-9._:\[\]-]+$", host):
            raise AddError(f"{text!r} is not an SSH target: use user@host (e.g. me@laptop.local)")
        return cls(user or None, host, port or 22)


@dataclass
class Options:
    python: str = "python3"
    directory: str = "~/.mlqueue-worker"
    name: str | None = None
    hq_address: str = ""
    identity: Path | None = None
    known_hosts: Path | None = None
    offline: bool = False
    reuse_site_packages: str | None = None
    service: bool = True
    register_timeout: float = 120.0
    remote_env: dict[str, str] = field(default_factory=dict)  # e.g. PIP_INDEX_URL, XDG_CONFIG_HOME


def build_wheel(dest: Path) -> Path:
    """A wheel of the running mlqueue, built from a copy of its source (the tree is left untouched)."""
    if not (PROJECT_ROOT / "setup.cfg").is_file():
        raise AddError(f"cannot build a wheel of this mlqueue: its source tree (setup.cfg) is not at {PROJECT_ROOT}; "
                       "run `mlqueue machines add` from a checkout of the project")
    with tempfile.TemporaryDirectory(prefix="mlqueue-src-") as tmp:
        src = Path(tmp)
        for name in SOURCE_FILES:
            shutil.copy2(PROJECT_ROOT / name, src / name)
        for name in SOURCE_DIRS:
            shutil.copytree(PROJECT_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                               "--disable-pip-version-check", "-w", str(dest), str(src)],
                              capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AddError(f"building the mlqueue wheel failed:\n{done.stderr[-2000:]}")
    return max(dest.glob("mlqueue-*.whl"), key=lambda p: p.stat().st_mtime)


class Remote:
    """One SSH connection and the steps run over it."""

    def __init__(self, conn: Any, say: Callable[[str], None]) -> None:
        self.conn = conn
        self.say = say

    async def run(self, step: str, command: str, timeout: float = 600) -> str:
        result = await self.conn.run(command, check=False, timeout=timeout)
        if result.exit_status != 0:
            output = ((result.stderr or "") + (result.stdout or "")).strip()
            raise AddError(f"{step} failed on the target (exit {result.exit_status}):\n  $ {command}\n{output[-2000:]}")
        return (result.stdout or "").strip()


async def _connect(target: Target, options: Options) -> Any:
    import asyncssh

    kwargs: dict[str, Any] = {"port": target.port}
    if target.user:
        kwargs["username"] = target.user
    if options.identity:
        kwargs["client_keys"] = [str(options.identity)]
    if options.known_hosts:
        kwargs["known_hosts"] = str(options.known_hosts)
    try:
        return await asyncssh.connect(target.host, **kwargs)
    except (OSError, asyncssh.Error) as exc:
        raise AddError(f"cannot log in to {target.host}:{target.port} over SSH ({exc}); check that `ssh "
                       f"{target.user + '@' if target.user else ''}{target.host}` works without a password") from exc


async def add_async(target: Target, options: Options, code: str, say: Callable[[str], None],
                    registered: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """Every step over one connection; ``registered(name)`` reads the worker's registration at the HQ."""
    from mlqueue import machines

    name = machines.check_name(options.name or target.host.split(".")[0])
    with tempfile.TemporaryDirectory(prefix="mlqueue-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        say(f"built {wheel.name}")
        async with await _connect(target, options) as conn:
            remote = Remote(conn, say)
            report = await _install_and_join(remote, options, wheel, name, code)
    report["capabilities"] = (await _wait_registered(name, registered, options.register_timeout)
                              if options.service else None)
    return report


async def _install_and_join(remote: Remote, options: Options, wheel: Path, name: str, code: str) -> dict[str, Any]:
    say, q = remote.say, shlex.quote
    version = await remote.run("checking Python", f"{q(options.python)} -c "
                               + q("import sys; print(sys.version.split()[0]); "
                                   "sys.exit(0 if sys.version_info >= (3, 10) else 3)"))
    say(f"Python {version} on the target")
    base = options.directory
    if base.startswith("~"):
        base = (await remote.run("finding the home directory", "cd && pwd")) + base[1:]
    venv, home, wheels = f"{base}/venv", f"{base}/home", f"{base}/wheels"
    await remote.run("creating directories", f"mkdir -p {q(wheels)} {q(home)}")
    async with remote.conn.start_sftp_client() as sftp:
        await sftp.put(str(wheel), f"{wheels}/{wheel.name}")
    say(f"sent {wheel.name} to {wheels}")
    vpy = f"{venv}/bin/python"
    await remote.run("creating the venv", f"test -x {q(vpy)} || {q(options.python)} -m venv {q(venv)}")
    if options.reuse_site_packages:
        site = await remote.run("finding site-packages", f"{q(vpy)} -c "
                                + q("import sysconfig; print(sysconfig.get_paths()['purelib'])"))
        pth = q(site + "/mlqueue-reuse.pth")
        await remote.run("reusing packages", f"echo {q(options.reuse_site_packages)} > {pth}")
    env = "env -u PYTHONPATH " + " ".join(q(f"{k}={v}") for k, v in options.remote_env.items())
    pip = f"{env} {q(vpy)} -m pip install -q --disable-pip-version-check"
    where = f"--no-index --find-links {q(wheels)}" if options.offline else f"--find-links {q(wheels)}"
    target_wheel = q(f"{wheels}/{wheel.name}")
    await remote.run("installing mlqueue", f"{pip} --force-reinstall --no-deps {target_wheel}")
    await remote.run("installing mlqueue's dependencies", f"{pip} {where} {target_wheel}")
    say(f"installed mlqueue in {venv}")
    cli = f"cd {q(home)} && {env} MLQUEUE_HOME={q(home)} {q(vpy)} -m mlqueue.cli"
    await remote.run("joining the house", f"{cli} join {q(options.hq_address)} --code {q(code)} --name {q(name)}")
    say(f"joined as {name}")
    how = "not started (--no-service)"
    if options.service:
        out = await remote.run("installing the service", f"{cli} worker install-service")
        if "enabled and started" in out:
            how = "user service (starts at login, restarts after a crash)"
        else:
            # setsid -f: its own session (so it outlives this SSH session, and stops as a group); every
            # descriptor redirected, so the SSH channel closes at once.
            inner = (f"echo $$ > {q(home + '/worker.pid')} && cd {q(home)} && exec {env} "
                     f"MLQUEUE_HOME={q(home)} {q(vpy)} -m celery -A mlqueue worker -l info -n {q(name + '@%h')}")
            await remote.run("starting the worker", f"setsid -f sh -c {q(inner)} "
                             f"> {q(home + '/worker.log')} 2>&1 < /dev/null")
            how = (f"started in the background (no service manager answered; the service file is written — "
                   f"enable it later with `{vpy} -m mlqueue.cli --home {home} worker install-service`)")
        say(f"worker: {how}")
    return {"machine": name, "venv": venv, "home": home, "worker": how}


async def _wait_registered(name: str, registered: Callable[[str], dict[str, Any] | None],
                           timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(registered, name)
        if found:
            return found
        await asyncio.sleep(0.5)
    return None


def add(target: Target, options: Options, code: str, say: Callable[[str], None],
        registered: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    return asyncio.run(add_async(target, options, code, say, registered))
