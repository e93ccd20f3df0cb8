"""The ``mlqueue`` command: run the HQ, submit Jobs, watch them, read results."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from mlqueue import jobs, tables
from mlqueue.settings import demo_home_instead, get_settings, reload_settings, standard_home

HYPERPARAMETER_COLUMNS_MAX = 8
SKIP_IN_TABLE = {"scriptName", "projectName"}


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _client() -> Any:
    """The HQ this command talks to (``--hq URL`` over HTTP, else this machine's store), its errors
    ending the command with their message instead of a traceback."""
    from mlqueue.client import ClientError, connect

    params = click.get_current_context().find_root().params
    try:
        client = connect(params.get("hq_url"), params.get("token"))
    except ClientError as exc:
        _fail(str(exc))

    class Reported:
        def __getattr__(self, name: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    return getattr(client, name)(*args, **kwargs)
                except ClientError as exc:
                    _fail(str(exc))
            return call

    return Reported()


class _Reporting(click.Group):
    """The ``mlqueue`` group: any mlqueue error below the CLI ends the command with its message (exit 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        from mlqueue.errors import MlqueueError

        try:
            return super().invoke(ctx)
        except MlqueueError as exc:
            _fail(str(exc))


@click.group(cls=_Reporting, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="HQ home directory (data, logs, generated config). Default $MLQUEUE_HOME or ~/.mlqueue.")
@click.version_option(package_name="mlqueue")
@click.option("--hq", "hq_url", envvar="MLQUEUE_HQ_URL", default=None, metavar="URL",
              help="Drive a remote HQ through its API, e.g. http://hq.local:8350 (env MLQUEUE_HQ_URL). "
                   "Default: this machine's HQ, directly.")
@click.option("--token", envvar="MLQUEUE_TOKEN", default=None,
              help="The HQ's API token, with --hq (env MLQUEUE_TOKEN; default: from this machine's settings).")
def main(home: Path | None, hq_url: str | None, token: str | None) -> None:
    """mlqueue: turn the idle computers in a house into a farm for machine-learning jobs.

    \b
    Typical use:
      mlqueue hq                         # on the main machine: servers + reaper; prints the join command
      celery -A mlqueue worker           # on every machine that should train
      mlqueue submit tasks/demo_job.json --wait
      mlqueue results                    # outcomes with their hyperparameters, best first
    """
    demo = demo_home_instead() if home is None and click.get_current_context().invoked_subcommand != "hq" else None
    if home is not None or demo is not None:
        os.environ["MLQUEUE_HOME"] = str((home or demo).expanduser().resolve())  # type: ignore[union-attr]
        reload_settings()


@main.command()
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Home directory for data, logs and credentials (default $MLQUEUE_HOME or ~/.mlqueue).")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address the servers listen on; 0.0.0.0 lets the other machines in the house join.")
@click.option("--redis-port", type=int, default=None, help="Broker port (0 = any free port; default: as last time).")
@click.option("--mongo-port", type=int, default=None, help="Store port (0 = any free port; default: as last time).")
@click.option("--port", "http_port", type=int, default=None, help="HTTP port for the API/dashboard (0 = free).")
@click.option("--store-auth/--no-store-auth", default=None,
              help="Store needs a user and password (default: exactly when bound beyond loopback).")
def hq(home: Path | None, bind: str, redis_port: int | None, mongo_port: int | None, http_port: int | None,
       store_auth: bool | None) -> None:
    """Run the HQ: embedded Redis + MongoDB server (unless URLs are set), reaper, join instructions.

    Runs until Ctrl-C. Ports chosen are written to HOME/config.json, so `MLQUEUE_HOME=HOME mlqueue ...`
    and `MLQUEUE_HOME=HOME celery -A mlqueue worker` on this machine need nothing else.
    """
    import logging

    from mlqueue.hq import HQ

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home_dir = (home or standard_home()).expanduser().resolve()  # never make run's demo home by accident
    os.environ["MLQUEUE_HOME"] = str(home_dir)
    HQ(home=home_dir, bind=bind, redis_port=redis_port, mongo_port=mongo_port, http_port=http_port,
       mongo_auth=store_auth).run()


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--wait", is_flag=True, help="Wait for the Jobs to finish, with a progress bar, then show results.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up waiting after this many seconds.")
def submit(paths: tuple[str, ...], wait: bool, timeout: float | None) -> None:
    """Submit Job files: PATHS are JSON files (one Job or a list), directories of them, or '-' (stdin).

    Every Job is validated first; if any is wrong nothing is submitted and each problem is listed.
    """
    stdin_text = sys.stdin.read() if "-" in paths else None
    try:
        found = jobs.collect(list(paths), stdin_text)
    except jobs.JobError as exc:
        _fail(str(exc))
    valid = [doc for _, doc in found]
    ids = _client().submit(valid, where=[where for where, _ in found])
    for job_id, job in zip(ids, valid, strict=True):
        click.echo(f"submitted {job_id}  {job['scriptName']}")
    from mlqueue.house_cli import warn_unrunnable

    warn_unrunnable(_client().status())
    if wait:
        _wait_for(ids, timeout)


def _wait_for(ids: list[str], timeout: float | None) -> None:
    from mlqueue import orders

    client = _client()
    started = time.monotonic()
    done: set[str] = set()
    with click.progressbar(length=len(ids), label="jobs finished", show_pos=True, file=sys.stderr) as bar:
        while len(done) < len(ids):
            finished = {i for i, state in client.states(ids).items() if state in orders.FINAL}
            bar.update(len(finished - done))
            done |= finished
            if len(done) < len(ids):
                if timeout is not None and time.monotonic() - started > timeout:
                    _fail(f"gave up waiting after {timeout:g}s; {len(ids) - len(done)} jobs still running "
                          "(they go on; see `mlqueue status`)", code=3)
                time.sleep(0.2)
    _print_results(ids=ids)
    failed = sum(1 for state in client.states(ids).values() if state != orders.SUCCEEDED)
    if failed:
        sys.exit(1)


@main.command()
@click.option("--format", "fmt", type=click.Choice(tables.FORMATS), default="table", show_default=True)
def status(fmt: str) -> None:
    """Orders by state, and the workers with what each is running."""
    report = _client().status()
    counts, workers = report["orders"], report["workers"]
    if fmt == "json":
        click.echo(tables.to_json({"orders": counts, "workers": workers, "waiting": report.get("waiting", [])}))
        return
    worker_rows = [{"worker": w["name"], "host": w.get("host"), "online": w.get("online"), "state": w.get("state"),
                    "running": w.get("currentJob"), "heartbeat_age_s": w.get("heartbeatAgeSeconds"),
                    "jobs_done": w.get("jobsDone"), "cpus": w.get("capabilities", {}).get("cpus")}
                   for w in workers]
    if fmt == "csv":
        click.echo(tables.to_csv([{"state": s, "count": n} for s, n in counts.items()], ["state", "count"]))
        click.echo(tables.to_csv(worker_rows, list(worker_rows[0]) if worker_rows else ["worker"]))
        return
    click.echo("Orders: " + "  ".join(f"{s} {n}" for s, n in counts.items()))
    click.echo("")
    click.echo(tables.table(worker_rows, ["worker", "host", "online", "state", "running", "heartbeat_age_s",
                                          "jobs_done", "cpus"]))
    from mlqueue.house_cli import print_house

    print_house(report)


@main.command()
@click.option("--format", "fmt", type=click.Choice(tables.FORMATS), default="table", show_default=True)
@click.option("--sort", default="loss", show_default=True, help="Outcome field to rank by.")
@click.option("--desc", is_flag=True, help="Higher is better (e.g. --sort metric --desc for accuracy).")
@click.option("--state", default=None, help="Only Jobs whose Order is in this state.")
@click.option("--limit", type=int, default=None, help="Show at most this many rows.")
def results(fmt: str, sort: str, desc: bool, state: str | None, limit: int | None) -> None:
    """Outcomes joined with their hyperparameters, best first (lowest loss by default)."""
    _print_results(fmt=fmt, sort=sort, desc=desc, state=state, limit=limit)


def _print_results(fmt: str = "table", sort: str = "loss", desc: bool = False, state: str | None = None,
                   limit: int | None = None, ids: list[str] | None = None) -> None:
    rows = _client().results(sort=sort, descending=desc, state=state, limit=limit, ids=ids)
    public = [{k: r[k] for k in ("jobId", "state", "outcome", "job")} for r in rows]
    if fmt == "json":
        click.echo(tables.to_json(public))
        return
    flat = [_summary_row(r) for r in rows]
    columns = ["jobId", "state", "status", "loss", "metric", "seconds", "worker", "script"]
    columns += _varying_hyperparameters(rows)
    if fmt == "csv":
        full = [tables.flatten(r) for r in public]
        keys = list(dict.fromkeys(k for r in full for k in r))
        click.echo(tables.to_csv(full, keys))
        return
    click.echo(tables.table(flat, columns))


def _summary_row(row: dict[str, Any]) -> dict[str, Any]:
    outcome = row.get("outcome") or {}
    summary = {"jobId": row["jobId"], "state": row["state"], "status": outcome.get("status"),
               "loss": outcome.get("loss"), "metric": outcome.get("metric"),
               "seconds": outcome.get("durationSeconds"), "worker": outcome.get("worker") or row.get("worker"),
               "script": row["job"].get("scriptName")}
    if row["state"] == "failed":
        summary["metric"] = outcome.get("reason")
    summary.update({k: v for k, v in row["job"].items() if k not in summary})
    return summary


def _varying_hyperparameters(rows: list[dict[str, Any]]) -> list[str]:
    """Scalar Job fields that differ between rows: what the user is comparing."""
    values: dict[str, set[str]] = {}
    for r in rows:
        for k, v in r["job"].items():
            if k in SKIP_IN_TABLE or isinstance(v, dict | list):
                continue
            values.setdefault(k, set()).add(repr(v))
    varying = [k for k, vs in values.items() if len(vs) > 1]
    return varying[:HYPERPARAMETER_COLUMNS_MAX]


@main.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--full", is_flag=True, help="Every field, the whole history and log (default: a summary).")
def show(job_id: str, fmt: str, full: bool) -> None:
    """One Job (a unique id prefix is enough): what happened, its fields, Outcome, error, log tail."""
    from mlqueue import summary

    order = _client().order(job_id)
    job = order.pop("job", None)
    if fmt == "json":
        click.echo(tables.to_json({"job": job, "order": order}))
        return
    lines = summary.render(order, job, full=full).split("\n")
    if order.get("waiting"):  # why it is not running (machines that differ, mlqueue/house.py)
        lines.insert(2, f"  {order['waiting']}")
    click.echo("\n".join(lines))


@main.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a Job that has not finished (a running one is stopped within a heartbeat)."""
    order = _client().cancel(job_id)
    click.echo(f"cancelled {order['jobId']}")


@main.command()
@click.argument("job_id")
def requeue(job_id: str) -> None:
    """Run a Job again: a finished one is copied as a new Job; a stuck one is re-sent."""
    new_id = _client().requeue(job_id)
    click.echo(f"requeued as {new_id}" if new_id != job_id else f"requeued {job_id}")


@main.group()
def data() -> None:
    """Datasets in the HQ's store: every worker fetches (and caches) what its Jobs name."""


@data.command("push")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", default="default", show_default=True, help="Project the dataset belongs to "
              "(Jobs name data by projectName + dataFileName).")
@click.option("--name", default=None, help="Store under this name instead of the file's own (one file only).")
def data_push(files: tuple[Path, ...], project: str, name: str | None) -> None:
    """Upload FILES as datasets; pushing changed content again makes a new version."""
    if name and len(files) > 1:
        _fail("--name only makes sense with one file")
    client = _client()
    for file in files:
        meta = client.dataset_push(file, project, name)
        click.echo(f"{project}/{meta['name']}  version {meta.get('version', '?')}  {meta['size']} bytes  "
                   f"sha256 {meta['sha256'][:12]}")


@data.command("ls")
@click.option("--project", default=None, help="Only this project's datasets.")
@click.option("--format", "fmt", type=click.Choice(tables.FORMATS), default="table", show_default=True)
def data_ls(project: str | None, fmt: str) -> None:
    """List datasets (newest version of each)."""
    rows = _client().datasets(project)
    columns = ["project", "name", "size", "sha256", "uploadDate", "source"]
    click.echo(tables.to_json(rows) if fmt == "json" else
               tables.to_csv(rows, columns) if fmt == "csv" else tables.table(rows, columns))


@data.command("pull")
@click.argument("name")
@click.option("--project", default="default", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="File or directory to write to.")
def data_pull(name: str, project: str, output: Path) -> None:
    """Download a dataset's newest version."""
    click.echo(str(_client().dataset_pull(name, project, output)))


@main.command()
@click.argument("job_id")
@click.option("--get", "name", default=None, help="Download the artifact with this name (or 'all').")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory to download into.")
def artifacts(job_id: str, name: str | None, output: Path) -> None:
    """List a Job's artifacts (e.g. model weights), or download them with --get."""
    client = _client()
    listed = client.artifacts(job_id)
    full_id, found = listed["jobId"], listed["artifacts"]
    if not name:
        click.echo(tables.table(found, ["name", "size", "fileId", "sha256"]))
        return
    chosen = [a for a in found if name in ("all", a["name"])]
    if not chosen:
        _fail(f"job {full_id} has no artifact {name!r}; it has: {', '.join(a['name'] for a in found) or 'none'}")
    output.mkdir(parents=True, exist_ok=True)
    for item in chosen:
        click.echo(str(client.artifact_download(item["fileId"], output)))


@main.group("scripts")
def scripts_group() -> None:
    """Scripts Jobs can run: built-in ml_scripts/ plus your own, pushed once to reach every worker."""


@scripts_group.command("push")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, help="Name Jobs use in scriptName (default: file stem or folder name).")
def scripts_push(path: Path, name: str | None) -> None:
    """Store a script file or folder (with main.py) in the HQ; workers fetch it by content hash."""
    meta = _client().script_push(path, name)
    click.echo(f"pushed {meta['name']} ({meta['kind']}, entry {meta['entry']})  sha256 {meta['sha256'][:12]}  "
               f"- use \"scriptName\": \"{meta['name']}\" (pin with \"scriptHash\": \"{meta['sha256'][:12]}\")")


@scripts_group.command("ls")
@click.option("--format", "fmt", type=click.Choice(tables.FORMATS), default="table", show_default=True)
def scripts_ls(fmt: str) -> None:
    """List the scripts a Job may name (pushed ones override built-in files of the same name)."""
    rows = _client().scripts()
    columns = ["name", "source", "kind", "sha256"]
    click.echo(tables.to_json(rows) if fmt == "json" else
               tables.to_csv(rows, columns) if fmt == "csv" else tables.table(rows, columns, max_width=14))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Start a worker on this machine (same as `celery -A mlqueue worker -l info ARGS`).

    `mlqueue worker install-service` / `uninstall-service`: run it as a user service (see --help of each).
    """
    from mlqueue.machines_cli import SERVICE_COMMANDS

    if celery_args and celery_args[0] in SERVICE_COMMANDS:
        SERVICE_COMMANDS[celery_args[0]].main(list(celery_args[1:]), f"mlqueue worker {celery_args[0]}")
    get_settings().require_urls()
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "mlqueue", "worker", "-l", "info",
                               *celery_args])


from mlqueue import logs_cli  # noqa: E402
from mlqueue.sweeps.cli import sweep  # noqa: E402 - registered last: one line to add a command group

main.add_command(sweep)
main.add_command(logs_cli.logs)
from mlqueue.machines_cli import COMMANDS as MACHINE_COMMANDS  # noqa: E402 - invite, join, machines

for _command in MACHINE_COMMANDS:
    main.add_command(_command)
main.add_command(__import__("mlqueue.workers_cli", fromlist=["workers"]).workers)  # pause|resume|drain


if __name__ == "__main__":
    main()
