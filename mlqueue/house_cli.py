"""The CLI's view of a house of different machines: what each offers, how fast it is, and who waits for what."""

from __future__ import annotations

from typing import Any

import click

from mlqueue import tables
from mlqueue.capabilities import gpu_label
from mlqueue.requirements import describe


def machine_rows(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per worker: what it offers (the requirement-relevant facts) and what it refused."""
    rows = []
    for w in workers:
        caps = w.get("capabilities") or {}
        battery = caps.get("battery")
        power = "-" if not battery else ("mains" if battery.get("pluggedIn") else f"battery {battery['percent']}%")
        rows.append({
            "worker": w["name"], "os": f"{caps.get('os', '?')}/{caps.get('arch', '?')}",
            "python": caps.get("python"), "memoryGB": caps.get("memoryGB", caps.get("ramGb")),
            "diskFreeGB": caps.get("diskFreeGB"),
            "gpus": ", ".join(gpu_label(g) for g in caps.get("gpus") or []) or "-",
            "power": power,
            "packages": " ".join(f"{k}={v}" for k, v in sorted((caps.get("packages") or {}).items())
                                 if k not in ("numpy", "pandas", "optuna")),
            "refused": ", ".join(sorted(w.get("refused") or {})) or "-",
        })
    return rows


def speed_rows(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for w in workers:
        for script, fig in sorted((w.get("speed") or {}).items()):
            rows.append({"worker": w["name"], "script": script, "jobs": fig.get("jobs"),
                         "s_per_job": fig.get("secondsPerJob"), "s_per_epoch": fig.get("secondsPerEpoch"),
                         "s_per_epoch_per_1k_rows": fig.get("secondsPerEpochPer1kRows")})
    return rows


def print_house(report: dict[str, Any]) -> None:
    """After the plain status table: machines, speeds, ETAs and the waiting Jobs with their reasons."""
    workers = report.get("workers") or []
    if workers:
        click.echo("\nMachines:")
        click.echo(tables.table(machine_rows(workers), ["worker", "os", "python", "memoryGB", "diskFreeGB", "gpus",
                                                        "power", "packages", "refused"]))
    speeds = speed_rows(workers)
    if speeds:
        click.echo("\nSpeed (median of recent successful Jobs):")
        click.echo(tables.table(speeds, ["worker", "script", "jobs", "s_per_job", "s_per_epoch",
                                         "s_per_epoch_per_1k_rows"]))
    running = [w for w in workers if w.get("currentJob")]
    if any(w.get("etaSeconds") is not None for w in running):
        click.echo("\nRunning:")
        for w in running:
            eta = w.get("etaSeconds")
            click.echo(f"  {w['name']}: job {w['currentJob']}  ETA {'?' if eta is None else f'{eta:.0f}s'}")
    waiting = report.get("waiting") or []
    if waiting:
        click.echo("\nWaiting:")
        for group in waiting:
            what = group.get("pinnedWorker") and f"pinned to {group['pinnedWorker']}" or \
                (group.get("requires") and f"requires {describe(group['requires'])}") or "no requirement"
            eta = group.get("etaSeconds")
            extra = f", first starts in ~{eta:.0f}s" if isinstance(eta, int | float) else ""
            click.echo(f"  {group['jobs']} job(s), {what}{extra}: {group.get('reason') or 'queued'}")


def warn_unrunnable(report: dict[str, Any]) -> None:
    """``mlqueue submit`` warns (does not refuse) when no known worker can run what it queued."""
    for group in report.get("waiting") or []:
        if group.get("reason"):
            click.echo(f"warning: {group['jobs']} queued job(s) cannot run now — {group['reason']}", err=True)
