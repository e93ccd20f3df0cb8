"""``mlqueue workers pause|resume|drain NAME``: hold a worker from the HQ (``service.worker_command``)."""

from __future__ import annotations

import click


def _act(name: str, action: str) -> None:
    from mlqueue.cli import _client

    click.echo(_client().worker_command(name, action)["message"])


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
