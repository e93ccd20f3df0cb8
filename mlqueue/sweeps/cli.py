"""``mlqueue sweep``: start a sweep from a file, watch it, take its best Job, stop it.

``mlqueue sweep FILE`` is short for ``mlqueue sweep start FILE`` (a group whose first argument is not
one of its commands is read as a file), so the everyday command stays the short one. Every command
goes through the client, so with ``--hq URL --token T`` none needs the store (the HQ drives the sweep).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class SweepGroup(click.Group):
    """A group whose unknown first argument is a sweep file for ``start``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group("sweep", cls=SweepGroup, context_settings={"help_option_names": ["-h", "--help"]})
def sweep() -> None:
    """Search a hyperparameter space: trials are ordinary Jobs chosen by Optuna.

    \b
    mlqueue sweep FILE [--wait]      start the sweep in FILE (same as `sweep start FILE`); prints its id
    mlqueue sweep status [ID]        trials by state, best so far, time and machines used (default: latest)
    mlqueue sweep best [ID] [-o F]   the best trial's Job as ready-to-submit JSON (default: latest)
    mlqueue sweep stop ID            no new trials; unfinished ones are cancelled
    mlqueue sweep list               all sweeps, newest first

    FILE (YAML or JSON) has base, space, objective, method, budget and earlyStopping; see
    tasks/toy_sweep.yaml and the docstring of mlqueue/sweeps/__init__.py. The HQ drives running sweeps; with
    --wait this command drives it too (safe together: one driver holds a sweep at a time), so a sweep
    also runs with no HQ process, as long as workers and the servers are up.
    """


@sweep.command("start")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Drive the sweep from here and show a progress bar until it ends.")
@click.option("--timeout", type=float, default=None, help="With --wait: stop waiting after this many seconds "
              "(the sweep goes on).")
@click.option("--check", is_flag=True, help="Only check the file and show the space; queue nothing.")
def start(file: Path, wait: bool, timeout: float | None, check: bool) -> None:
    """Check FILE, store the sweep and print its id; trials start at the driver's next step."""
    from mlqueue import sweeps

    if check:
        try:
            spec, _ = sweeps.parse_file(file)
        except sweeps.SweepError as exc:
            _fail(str(exc))
        _describe(spec)
        return
    if not file.is_file():
        _fail(str(sweeps.SweepError(str(file), [f"{file}: no such file"])))
    started = _client().sweep_start(file.read_text(), str(file))
    click.echo(started["sweepId"])
    if wait:
        _drive_and_wait(started["sweepId"], started.get("maxTrials"), timeout)


def _describe(spec: Any) -> None:
    click.echo(f"{spec.name}: method {spec.file.method}, {spec.direction} {spec.file.objective.field}, "
               f"early stopping {spec.file.earlyStopping.method}, at most {spec.max_trials} trials, "
               f"{spec.file.budget.maxParallel} at a time")
    _describe_entries(spec.space, "  ")
    size = spec.grid_size()
    if size is not None:
        click.echo(f"grid of {size} points")


def _describe_entries(entries: Any, indent: str) -> None:
    for entry in entries:
        what = {k: v for k, v in entry.spec.model_dump(by_alias=True, exclude_defaults=True).items() if k != "each"}
        click.echo(f"{indent}{entry.key}: {json.dumps(what, default=str)}")
        if entry.each:
            click.echo(f"{indent}  each element of {entry.key}:")
            _describe_entries(entry.each, indent + "    ")


def _client() -> Any:
    from mlqueue.cli import _client as client_of_this_command

    return client_of_this_command()


def _local() -> bool:
    """True when this command talks to the store itself (no ``--hq``): then it can drive a sweep too."""
    return not click.get_current_context().find_root().params.get("hq_url")


def _drive_and_wait(sweep_id: str, total: int | None, timeout: float | None) -> None:
    """Show finished trials until the sweep ends; without ``--hq``, also drive it from a thread here."""
    from mlqueue.sweeps import driver as sweep_driver

    client = _client()
    stop = threading.Event()
    thread = None
    if _local():
        driver = sweep_driver.Driver(owner=f"cli@{os.uname().nodename}:{os.getpid()}", sweep_ids=[sweep_id])
        thread = threading.Thread(target=driver.run_forever, args=(stop,), name="mlqueue-sweep-driver", daemon=True)
        thread.start()
    started = time.monotonic()
    shown = 0
    try:
        with click.progressbar(length=total or 0, label="trials finished", show_pos=True, file=sys.stderr,
                               item_show_func=lambda best: best) as bar:
            while True:
                report = client.sweep_status(sweep_id)
                told = report.get("told", 0)
                best = (report.get("best") or {}).get("value")
                bar.update(told - shown, f"best {best:.6g}" if best is not None else None)
                shown = told
                if report["state"] in sweep_driver.FINAL:
                    break
                if timeout is not None and time.monotonic() - started > timeout:
                    _fail(f"gave up waiting after {timeout:g}s; the sweep goes on (`mlqueue sweep status "
                          f"{sweep_id}`)", code=3)
                time.sleep(0.3)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; the sweep goes on while a driver runs (the HQ, or `mlqueue sweep "
                   f"status {sweep_id}`)", err=True)
        sys.exit(130)
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
    report = client.sweep_status(sweep_id)
    _print_status(report)
    if not report.get("best"):
        sys.exit(1)


def _chosen(sweep_id: str | None) -> str:
    """The sweep asked for, else the newest one (said on stderr, so stdout stays clean for JSON)."""
    if sweep_id:
        return sweep_id
    rows = _client().sweeps()
    if not rows:
        _fail("there is no sweep yet: start one with `mlqueue sweep FILE` (e.g. tasks/toy_sweep.yaml)")
    click.echo(f"(the latest sweep, {rows[0].get('name')}; `mlqueue sweep list` shows all {len(rows)})", err=True)
    return str(rows[0]["sweepId"])


@sweep.command("status")
@click.argument("sweep_id", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(sweep_id: str | None, fmt: str) -> None:
    """Trials by state, best so far, wall time, machine time and the machines used."""
    from mlqueue import tables

    report = _client().sweep_status(_chosen(sweep_id), trials=fmt == "json")
    if fmt == "json":
        click.echo(tables.to_json(report))
        return
    _print_status(report)


def _print_status(report: dict[str, Any]) -> None:
    objective = report.get("objective") or {}
    budget = report.get("budget") or {}
    trials = dict(report.get("trials") or {})
    asked, unfinished = trials.pop("asked", 0), trials.pop("unfinished", 0)
    click.echo(f"sweep {report['sweepId']}  {report.get('name')}  state {report['state']}  method "
               f"{report.get('method')}  early stopping {report.get('earlyStopping')}")
    click.echo(f"objective: {objective.get('direction')} {objective.get('field')}")
    click.echo(f"trials: {asked} asked of {budget.get('maxTrials') or 'unlimited'} ({budget.get('maxParallel')} at a "
               f"time), {unfinished} unfinished; " + ", ".join(f"{k} {v}" for k, v in sorted(trials.items())))
    best = report.get("best")
    if best:
        params = ", ".join(f"{p['name']}={_short(p['value'])}" for p in best.get("params", []))
        click.echo(f"best: {best['value']:.6g} (trial {best['trialNumber']}, job {best['jobId']})  {params}")
    else:
        click.echo("best: none yet")
    machines = report.get("machines") or []
    click.echo(f"time: {report['wallSeconds']:g}s wall, {report['machineSeconds']:g} machine-seconds on "
               f"{len(machines)} machine(s){': ' + ', '.join(machines) if machines else ''}")
    if report.get("stopReason"):
        click.echo(f"stopped: {report['stopReason']}")
    if report.get("lastError"):
        click.echo(f"last problem: {report['lastError']}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value, default=str)


@sweep.command("best")
@click.argument("sweep_id", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the Job to this file (default: print it).")
def best(sweep_id: str | None, output: Path | None) -> None:
    """The best trial's Job as JSON, ready for `mlqueue submit` (sweep bookkeeping removed)."""
    found = _client().sweep_best(_chosen(sweep_id))
    job, record = found["job"], found["trial"]
    if job is None:
        _fail(f"sweep {found['sweepId']} has no successful trial yet; see `mlqueue sweep status "
              f"{found['sweepId']}`", code=1)
    text = json.dumps(job, indent=2, default=str) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    click.echo(f"wrote {output} (trial {record['trialNumber']}, value {record['value']:.6g})")


@sweep.command("stop")
@click.argument("sweep_id")
def stop(sweep_id: str) -> None:
    """Stop a sweep: no new trials; its unfinished trials are cancelled; finished ones are kept."""
    stopped = _client().sweep_stop(sweep_id)
    click.echo(f"sweep {stopped['sweepId']} {stopped['state']}")


@sweep.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_sweeps(fmt: str) -> None:
    """All sweeps, newest first."""
    from mlqueue import tables

    rows = _client().sweeps()
    if fmt == "json":
        click.echo(tables.to_json(rows))
        return
    click.echo(tables.table(rows, ["sweepId", "name", "state", "method", "told", "maxTrials", "best", "created"]))
