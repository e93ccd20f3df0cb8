"""``mlqueue invite``, ``mlqueue join`` and ``mlqueue machines ...``: growing the house from the command line.

On the HQ (or anywhere with ``--hq URL --token T``): ``invite`` mints a one-time code, ``machines ls``
lists who joined, ``machines remove NAME`` revokes one, ``machines add user@host`` installs and joins a
machine over SSH. On the new machine: ``join [HOST[:PORT]] --code CODE`` — no address finds the HQ on
the LAN — writes this machine's own credentials to its home config and prints the command left to run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from mlqueue import tables
from mlqueue.settings import HOME_CONFIG_NAME, default_home, get_settings, read_json_file

DEFAULT_HTTP_PORT = 8350


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _client() -> Any:
    """The HQ's use cases, on this machine's store or over ``--hq URL`` (errors end the command)."""
    from mlqueue.cli import _client as client

    return client()


def _hq_url() -> str | None:
    return click.get_current_context().find_root().params.get("hq_url")


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"


def hq_address(settings: Any = None) -> str:
    """HOST[:PORT] other machines use for this HQ (the port is left out when it is the default)."""
    from mlqueue.servers import lan_address

    settings = settings or get_settings()
    host = lan_address() if settings.bind in ("0.0.0.0", "::", "") else settings.bind
    port = settings.http_port or DEFAULT_HTTP_PORT
    return host if port == DEFAULT_HTTP_PORT else f"{host}:{port}"


def hq_address_default() -> str:
    return hq_address()


def mlqueue_command() -> str:
    """``mlqueue`` if that is what PATH finds for this installation, else its full path."""
    return _command("mlqueue")


def _command(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found and (not here.exists() or Path(found).resolve() == here.resolve()):
        return name
    return str(here) if here.exists() else f"{sys.executable} -m {name if name != 'mlqueue' else 'mlqueue.cli'}"


def worker_command(machine: str, home: Path) -> str:
    """The exact command that starts this machine's worker."""
    prefix = "" if home == Path.home() / ".mlqueue" else f"MLQUEUE_HOME={home} "
    return f"{prefix}{_command('celery')} -A mlqueue worker -l info -n {machine}@%h"


# --------------------------------------------------------------------------- invite


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def invite(fmt: str) -> None:
    """A one-time code (valid 10 minutes) that lets one more machine join the house."""
    made = _client().invite()
    where = _hq_url().split("://", 1)[-1] if _hq_url() else hq_address()
    if fmt == "json":
        click.echo(json.dumps({"code": made["code"], "expires": made["expires"].isoformat()}))
        return
    click.echo(f"invite code {made['code']}  (valid once, until {made['expires']:%H:%M:%S} UTC)")
    click.echo(f"on the other machine:  mlqueue join {where} --code {made['code']}")
    click.echo(f"  (on the same LAN `mlqueue join --code {made['code']}` finds this HQ by itself)")


# --------------------------------------------------------------------------- join


def _split_target(target: str) -> str:
    """``HOST``, ``HOST:PORT`` or a URL, to the HQ's base URL."""
    if "://" in target:
        return target.rstrip("/")
    host, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    if port and not port.isdigit():
        _fail(f"{target!r}: the port after ':' must be a number, e.g. 192.168.1.10:8350")
    return f"http://{host}:{port or DEFAULT_HTTP_PORT}"


def _find_hq() -> str:
    from mlqueue import discovery

    found = discovery.browse()
    if not found:
        _fail(discovery.diagnosis())
    if len(found) == 1:
        click.echo(f"found the HQ {found[0].label}", err=True)
        return found[0].url
    click.echo("several HQs answer on this network:", err=True)
    for i, hq in enumerate(found, 1):
        click.echo(f"  {i}. {hq.label}", err=True)
    if not sys.stdin.isatty():
        _fail("several HQs found; name one: mlqueue join HOST[:PORT] --code CODE")
    choice = click.prompt("join which one", type=click.IntRange(1, len(found)), err=True)
    return found[choice - 1].url


def _home() -> Path:
    return Path(os.environ.get("MLQUEUE_HOME") or default_home()).expanduser().resolve()


def write_home_config(home: Path, values: dict[str, Any]) -> Path:
    """Write the machine's config (credentials inside): created mode 600, never readable by others."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / HOME_CONFIG_NAME
    previous = read_json_file(path)
    if previous.get("token") and previous.get("redis_password"):
        _fail(f"{home} is an HQ's home (its config.json holds the HQ's own credentials); join from another "
              "home: mlqueue --home DIR join ...")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({**previous, **values}, fh, indent=2)
        fh.write("\n")
    os.chmod(path, 0o600)
    return path


@click.command()
@click.argument("target", required=False, metavar="[HOST[:PORT]]")
@click.option("--code", required=True, help="The invite code `mlqueue invite` printed on the HQ.")
@click.option("--name", default=None, help="This machine's name in the house (default: its host name).")
def join(target: str | None, code: str, name: str | None) -> None:
    """Join the house as a worker machine: exchange an invite code for this machine's own credentials.

    Without HOST the HQ is looked for on the LAN (mDNS). The credentials go to HOME/config.json (mode
    600); then one command is left: the worker's, printed at the end.
    """
    from mlqueue import invites, machines

    try:
        invites.normalize(code)
        machine = machines.check_name(name or machines.default_name())
    except (invites.InviteError, machines.MachineError) as exc:
        _fail(str(exc))
    base = _split_target(target) if target else _find_hq()
    try:
        response = httpx.post(f"{base}/machines/join", json={"code": code, "name": machine}, timeout=60)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the HQ at {base} ({exc}). Is `mlqueue hq --bind 0.0.0.0` running there, "
              "and is its port open in the firewall?")
    if response.status_code >= 400:
        _fail(_error_text(response))
    creds = response.json()
    home = _home()
    path = write_home_config(home, {"broker_url": creds["broker_url"], "mongo_url": creds["mongo_url"],
                                    "mongo_db": creds["mongo_db"], "queue": creds["queue"],
                                    "machine": creds["machine"], "hq_url": base,
                                    "machine_fingerprint": machines.fingerprint()})
    click.echo(f"joined the house as {creds['machine']} (HQ {base}); credentials in {path}")
    click.echo("One command left — start this machine's worker:")
    click.echo(f"  {worker_command(creds['machine'], home)}")
    click.echo(f"(or start it at every login: {mlqueue_command()} worker install-service)")


# --------------------------------------------------------------------------- machines


@click.group("machines")
def machines_group() -> None:
    """The machines of the house: list them, remove one, add one over SSH."""


@machines_group.command("ls")
@click.option("--format", "fmt", type=click.Choice(tables.FORMATS), default="table", show_default=True)
def machines_ls(fmt: str) -> None:
    """Every machine that joined, with its state: online, offline or revoked."""
    rows = _client().machines()
    if fmt == "json":
        click.echo(tables.to_json(rows))
        return
    flat = [{"name": r["name"], "state": r["state"], "worker": r.get("worker"), "address": r.get("address"),
             "cpus": (r.get("capabilities") or {}).get("cpus"), "joined": r.get("joined")} for r in rows]
    columns = ["name", "state", "worker", "address", "cpus", "joined"]
    click.echo(tables.to_csv(flat, columns) if fmt == "csv" else tables.table(flat, columns))


@machines_group.command("remove")
@click.argument("name")
def machines_remove(name: str) -> None:
    """Revoke machine NAME: it takes no more Jobs and reads nothing more from the store."""
    done = _client().remove_machine(name)
    click.echo(f"removed {done['machine']}: its broker user is deleted and its connections closed")
    if done["storeRevoked"]:
        click.echo(f"  its store user is deleted too ({done['storeConnectionsClosed']} connections closed)")
    else:
        click.echo("  warning: the store runs without authentication (HQ on loopback only), so store access "
                   "cannot be revoked; restart the HQ with --bind 0.0.0.0 to have per-machine store users")


@machines_group.command("add")
@click.argument("target", metavar="USER@HOST")
@click.option("--port", type=int, default=None, help="SSH port (default 22).")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Private key to log in with (default: your SSH agent and ~/.ssh keys).")
@click.option("--known-hosts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="known_hosts file to check the target's host key against (default ~/.ssh/known_hosts).")
@click.option("--python", default="python3", show_default=True, help="Python 3.10+ on the target.")
@click.option("--dir", "directory", default="~/.mlqueue-worker", show_default=True,
              help="Where on the target: DIR/venv, DIR/home (its config), DIR/wheels.")
@click.option("--name", default=None, help="The machine's name (default: the host name).")
@click.option("--hq-address", default=None, metavar="HOST[:PORT]",
              help="How the target reaches this HQ (default: this HQ's LAN address).")
@click.option("--offline", is_flag=True, help="Install dependencies only from DIR/wheels (no package index).")
@click.option("--reuse-site-packages", metavar="PATH", default=None,
              help="Let the target's venv use packages already installed at PATH there.")
@click.option("--no-service", is_flag=True, help="Install and join only; do not install or start the worker.")
@click.option("--remote-env", multiple=True, metavar="KEY=VALUE",
              help="Environment for the commands run on the target (repeatable), e.g. PIP_INDEX_URL=...")
def machines_add(target: str, port: int | None, identity: Path | None, known_hosts: Path | None, python: str,
                 directory: str, name: str | None, hq_address: str | None, offline: bool,
                 reuse_site_packages: str | None, no_service: bool, remote_env: tuple[str, ...]) -> None:
    """Add a machine over SSH: install this mlqueue there, join it with a fresh code, start its worker."""
    from mlqueue import machines, ssh_add

    client = _client()
    code = client.invite()["code"]
    address = hq_address or (_hq_url().split("://", 1)[-1] if _hq_url() else hq_address_default())

    def registered(machine: str) -> dict[str, Any] | None:
        return next((r["capabilities"] for r in client.machines() if r["name"] == machine
                     and r["state"] == "online"), None)
    bad = [pair for pair in remote_env if "=" not in pair or not pair.split("=", 1)[0].isidentifier()]
    if bad:
        _fail(f"--remote-env takes KEY=VALUE, not {bad[0]!r}")
    options = ssh_add.Options(python=python, directory=directory, name=name, hq_address=address,
                              identity=identity, known_hosts=known_hosts, offline=offline,
                              reuse_site_packages=reuse_site_packages, service=not no_service,
                              remote_env=dict(pair.split("=", 1) for pair in remote_env))
    try:
        report = ssh_add.add(ssh_add.Target.parse(target, port), options, code,
                             lambda line: click.echo(f"  {line}"), registered)
    except (ssh_add.AddError, machines.MachineError) as exc:
        _fail(str(exc))
    click.echo(f"added {report['machine']}: mlqueue in {report['venv']}, home {report['home']}")
    caps = report.get("capabilities")
    if caps:
        gpus = ", ".join(caps.get("gpus") or []) or "none"
        click.echo(f"  capabilities: {caps.get('cpus')} CPUs, {caps.get('ramGb')} GB RAM, GPUs: {gpus}, "
                   f"{caps.get('os')}, Python {caps.get('python')}")
    elif not no_service:
        _fail(f"the worker of {report['machine']} did not register with the HQ; see {report['home']}/worker.log "
              "on the target", code=1)


# --------------------------------------------------------------------------- worker as a service


def _service_plan(name: str | None) -> Any:
    from mlqueue import machines, service_install

    home = _home()
    machine = name or read_json_file(home / HOME_CONFIG_NAME).get("machine") or machines.default_name()
    try:
        return service_install.plan_for(machines.check_name(machine), home)
    except (machines.MachineError, RuntimeError) as exc:
        _fail(str(exc))


@click.command("install-service")
@click.option("--name", default=None, help="Machine name (default: the one `mlqueue join` recorded).")
@click.option("--no-start", is_flag=True, help="Only write the service file; do not enable or start it.")
def install_service(name: str | None, no_start: bool) -> None:
    """Run this machine's worker as a user service: at every login, restarted after a crash."""
    from mlqueue import service_install

    get_settings().require_urls()
    plan = _service_plan(name)
    problem = service_install.install(plan, start=not no_start)
    click.echo(f"wrote {plan.path}")
    if no_start:
        click.echo("enable and start it with:  " + "  &&  ".join(" ".join(c) for c in plan.enable))
    elif problem:
        click.echo(f"could not enable it ({problem}); enable it with:  "
                   + "  &&  ".join(" ".join(c) for c in plan.enable), err=True)
    else:
        click.echo("enabled and started: the worker now runs at every login and restarts after a crash")
        if plan.platform == "linux":
            click.echo("(to run it at boot without logging in: loginctl enable-linger $USER)")


@click.command("uninstall-service")
@click.option("--name", default=None, help="Machine name (default: the one `mlqueue join` recorded).")
def uninstall_service(name: str | None) -> None:
    """Stop this machine's worker service and remove it."""
    from mlqueue import service_install

    plan = _service_plan(name)
    removed, problem = service_install.uninstall(plan)
    if problem:
        click.echo(f"note: {problem}", err=True)
    click.echo(f"removed {plan.path}" if removed else f"no service installed ({plan.path} does not exist)")


SERVICE_COMMANDS = {"install-service": install_service, "uninstall-service": uninstall_service}
COMMANDS = (invite, join, machines_group)
