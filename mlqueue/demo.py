"""``make run``: from a fresh clone to results in one command.

Starts (or reuses) an HQ and one local worker in the background, pushes the demo datasets made from
scikit-learn's bundled wine data, runs the demo sweep (or the demo Jobs), prints the results and
where to look. ``--stop`` stops what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from mlqueue.errors import MlqueueError, Unreachable

ROOT = Path(__file__).resolve().parent.parent
DEMO_SWEEP = ROOT / "tasks" / "demo_sweep.yaml"
DEMO_JOBS = [ROOT / "tasks" / "demo_job.json"]


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _spawn(argv: list[str], home: Path, log_name: str, pid_name: str) -> int:
    """A background process that outlives `make run`, logging into the home."""
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log = open(home / "logs" / log_name, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "MLQUEUE_HOME": str(home), "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    (home / pid_name).write_text(str(proc.pid))
    return proc.pid


def _wait(predicate, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise Unreachable(f"timed out waiting for {what}; last lines of {log}:\n{tail}")


def start(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    if not _alive(home / "hq.pid"):
        click.echo(f"starting the HQ (home {home}) ...")
        hq_log = home / "logs" / "hq.out"
        if hq_log.exists():
            hq_log.unlink()
        _spawn([sys.executable, "-m", "mlqueue.cli", "hq", "--home", str(home)], home, "hq.out", "hq.launcher.pid")
        _wait(lambda: hq_log.exists() and "HQ is up" in hq_log.read_text(errors="replace"), 180, "the HQ", hq_log)
    else:
        click.echo(f"the HQ is already running (home {home})")
    if not _alive(home / "worker.pid"):
        click.echo("starting a local worker ...")
        _spawn([sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-l", "info", "-n", "local@%h"],
               home, "worker.out", "worker.pid")
    os.environ["MLQUEUE_HOME"] = str(home)
    from mlqueue import store
    from mlqueue.settings import reload_settings
    from mlqueue.store import workers as worker_store

    settings = reload_settings()
    store.forget_clients()
    worker_log = home / "logs" / "worker.out"
    _wait(lambda: any(worker_store.is_online(w, settings) for w in worker_store.of_machine("local", settings)), 180,
          "the local worker", worker_log)


def push_demo_data(home: Path) -> None:
    from ml_scripts.demo_data import write_demo_data
    from mlqueue import datasets

    out = home / "demo-data"
    out.mkdir(parents=True, exist_ok=True)
    for path in write_demo_data(out):
        meta = datasets.push(path, "wine_data")
        click.echo(f"dataset wine_data/{meta['name']} ready ({meta['size']} bytes)")


def run_demo() -> None:
    """The demo sweep when sweeps are available, else the demo Jobs; waits with a progress bar."""
    cli = [sys.executable, "-m", "mlqueue.cli"]
    if DEMO_SWEEP.exists():
        argv = [*cli, "sweep", str(DEMO_SWEEP), "--wait"]
    else:
        argv = [*cli, "submit", *map(str, DEMO_JOBS), "--wait"]
    click.echo("$ mlqueue " + " ".join(argv[3:]))
    subprocess.run(argv, cwd=ROOT, check=False)


def where_to_look(home: Path) -> None:
    config = json.loads((home / "config.json").read_text())
    http = config.get("http_port")
    flower = config.get("flower_port")
    lines = ["", "Where to look:"]
    if http:
        lines.append(f"  dashboard + API : http://127.0.0.1:{http}/ui/   (token: {config['token']})")
        lines.append(f"  API docs        : http://127.0.0.1:{http}/docs")
    if flower:
        lines.append(f"  Flower          : http://127.0.0.1:{flower}/   (user mlqueue, password = the token)")
    lines += [
        f"  results         : MLQUEUE_HOME={home} .venv/bin/mlqueue results",
        f"  status          : MLQUEUE_HOME={home} .venv/bin/mlqueue status",
        f"  the sweep       : MLQUEUE_HOME={home} .venv/bin/mlqueue sweep status   (every sweep: sweep list)",
        f"  one Job         : MLQUEUE_HOME={home} .venv/bin/mlqueue show ID        (ids: the first column of results)",
        "  (from this directory `.venv/bin/mlqueue ...` alone finds the demo's HQ, while ~/.mlqueue has none)",
        f"  logs            : {home / 'logs'}",
        "  join another machine: see the command printed in " + str(home / "logs" / "hq.out"),
        "  stop everything : make stop",
    ]
    click.echo("\n".join(lines))


def stop(home: Path) -> None:
    for name in ("worker.pid", "hq.launcher.pid", "hq.pid"):
        pid = _alive(home / name)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(home / name):
                    break
                time.sleep(0.2)
            click.echo(f"stopped {name[:-4]} (pid {pid})")
        (home / name).unlink(missing_ok=True)


@click.command()
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--stop", "stop_only", is_flag=True, help="Stop the HQ and worker started by the demo.")
def main(home: Path, stop_only: bool) -> None:
    """Start the HQ and a local worker, run the demo, print where to look."""
    home = home.expanduser().resolve()
    if stop_only:
        stop(home)
        return
    try:
        start(home)
        push_demo_data(home)
        run_demo()
    except MlqueueError as exc:   # this command is the demo's entry point: an error ends it with its message
        raise click.ClickException(str(exc)) from None
    where_to_look(home)


if __name__ == "__main__":
    main()
