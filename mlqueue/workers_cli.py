"""``mlqueue workers pause|resume|drain NAME``: hold a worker from the HQ (see ``worker_control``)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click


def _act(name: str, action: str) -> None:
    from mlqueue import worker_control
    from mlqueue.client import ClientError, HttpClient, connect

    params = click.get_current_context().find_root().params
    try:
        client = connect(params.get("hq_url"), params.get("token"))
        if isinstance(client, HttpClient):
            result: dict[str, Any] = client.call("POST", f"/workers/{name}/{action}")
        else:
            result = worker_control.command(name, action, by=f"cli@{os.uname().nodename}")  # type: ignore[arg-type]
    except (ClientError, worker_control.WorkerNotFound) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(result["message"])


@click.group()
def workers() -> None:
    """Pause, drain or resume a worker (NAME: `w1@host`, or `w1` when unique; `mlqueue status` lists them)."""


@workers.command()
@click.argument("name")
def pause(name: str) -> None:
    """Suspend the worker's running Job (it keeps its Order) and take no new Job until `resume`."""
    _act(name, "pause")


@workers.command()
@click.argument("name")
def drain(name: str) -> None:
    """Let the worker finish its running Job, then take no new Job until `resume`."""
    _act(name, "drain")


@workers.command()
@click.argument("name")
def resume(name: str) -> None:
    """Undo `pause` or `drain`: the worker continues its Job and takes new ones."""
    _act(name, "resume")
