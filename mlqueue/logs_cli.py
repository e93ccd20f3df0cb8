"""``mlqueue logs [-f] ID``: what a Job's script printed, or follow it live until the Job ends.

It reads through the same client as every other command, so ``mlqueue --hq URL --token T logs -f ID``
follows a Job from any machine (the API's ``GET /orders/{id}/log?follow=true`` stream).
"""

from __future__ import annotations

from typing import Any

import click


def _echo(line: dict[str, Any], timestamps: bool) -> None:
    at = line.get("at")
    stamp = f"{at:%H:%M:%S} " if timestamps and hasattr(at, "strftime") else ""
    click.echo(f"{stamp}{line.get('line', '')}", err=line.get("stream") == "stderr")


@click.command("logs")
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as the script prints them; "
                                                     "exit when the Job ends.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with the time it was printed.")
@click.option("--after", type=int, default=0, show_default=True, help="Only lines numbered above this.")
def logs(job_id: str, follow: bool, timestamps: bool, after: int) -> None:
    """Print what Job JOB_ID's script printed (its stdout; stderr lines go to stderr).

    With -f, follow the output live and exit when the Job has ended, saying how it ended.
    """
    from mlqueue.cli import _client, _fail
    from mlqueue.client import ClientError

    client = _client()
    if not follow:
        for line in client.log(job_id, after)["lines"]:
            _echo(line, timestamps)
        return
    try:
        for chunk in client.follow_log(job_id, after):  # a generator: its errors come while it is read
            for line in chunk["lines"]:
                _echo(line, timestamps)
            if chunk["final"]:
                click.echo(f"job {chunk['jobId']} ended: {chunk.get('state')}", err=True)
    except ClientError as exc:
        _fail(str(exc))
