"""Is this machine's owner using it? And what the worker does about it: pause, yield or drain.

Like BOINC ("suspend while the computer is in use") and HTCondor (a policy polled every few seconds,
``SIGSTOP`` to suspend), each worker's main process runs an ``OwnerWatch`` thread polling, every
``owner_poll`` seconds (1 s: the worker reacts within 2 s of the owner's first input):

- **probes** that say the owner is active: keyboard/mouse input within ``idle_after`` seconds — Linux:
  logind's ``IdleHint`` (``loginctl``), X11 idle time (``xprintidle``), the newest access to
  ``/dev/input/event*``; macOS: ``HIDIdleTime`` from ``ioreg -c IOHIDSystem``; Windows:
  ``GetLastInputInfo`` — plus other processes' CPU load above ``owner_cpu_threshold`` (off unless set),
  another process computing on an NVIDIA GPU (NVML, when ``pynvml`` is installed) and running on battery.
  ``MLQUEUE_IDLE_PROBE=file:PATH`` replaces them all: the file's mtime is the owner's last input
  (tests, odd machines); ``none`` disables them (only ``hours`` and the HQ then decide);
- the **schedule** ``hours`` ("22:00-07:00": the worker works only then; outside, the owner policy
  applies as if the owner were active);
- **commands from the HQ** (``mlqueue workers pause|drain|resume NAME``, stored on the Worker document,
  so a restarted worker still obeys them; see ``worker_control``).

What it does (``when_owner_active``; the HQ's ``pause``/``drain`` work the same way):

- every mode but ``run`` first stops taking Jobs: the Celery consumer cancels all its queues
  (``cancel_task_queue``, what the ``cancel_consumer`` remote-control command does) and re-adds them
  on resume;
- **pause** suspends the running script with ``SIGSTOP`` (its pool process and any subprocess it
  started: module and command-line scripts alike, at once, wherever they are) and ``SIGCONT`` later.
  Meanwhile this thread heartbeats the Order with ``pausedBy`` so no reaper calls it lost, and pushes
  its deadline by the time paused. After ``max_pause`` seconds a paused Job is yielded;
- **yield** gives the Order back to the queue (``orders.give_back``) for another machine, which resumes
  it from its last checkpoint; the script here stops at its next report or heartbeat;
- **drain** lets the running Job finish and takes nothing new;
- ``ignore`` (the default) does none of this.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from datetime import datetime
from typing import Any, Literal

import psutil
from celery import signals
from pydantic import BaseModel, Field, ValidationError, field_validator

from mlqueue import orders, routing, store
from mlqueue.errors import ConfigError
from mlqueue.owner_probes import Probe, probes_for
from mlqueue.settings import Settings, get_settings
from mlqueue.store import orders as order_store
from mlqueue.store import workers as worker_store

log = logging.getLogger(__name__)
HOURS_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]):([0-5]\d)$")
PAUSED, OWNER_ACTIVE, DRAINING = "paused", "owner active", "draining"
RECANCEL_AFTER = 3.0   # seconds: a queue still consumed this long after its cancel was sent is cancelled again


class Policy(BaseModel):
    """A worker's owner policy, from its settings (``MLQUEUE_*``) or ``celery worker`` options."""

    when_owner_active: Literal["ignore", "pause", "yield", "drain"] = "ignore"
    idle_after: float = Field(default=300.0, ge=0)
    hours: str | None = None
    max_pause: float = Field(default=3600.0, gt=0)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value and not HOURS_RE.match(value.replace(" ", "")):
            raise ValueError(f"hours {value!r} must look like 22:00-07:00 (the time the worker may work)")
        return value.replace(" ", "") if value else None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Policy:
        values = {k: getattr(settings, k) for k in ("when_owner_active", "idle_after", "hours", "max_pause")}
        return cls.model_validate({**values, **{k: v for k, v in overrides.items() if v is not None}})

    def outside_hours(self, at: datetime) -> str | None:
        """Why ``at`` is outside the working hours, or None when the worker may work."""
        if not self.hours:
            return None
        h1, m1, h2, m2 = (int(x) for x in HOURS_RE.match(self.hours).groups())
        start, end, t = h1 * 60 + m1, h2 * 60 + m2, at.hour * 60 + at.minute
        inside = start <= t < end if start <= end else (t >= start or t < end)
        return None if inside else f"outside working hours {self.hours}"


def decide(policy: Policy, hq_action: str | None, owner_reason: str | None,
           outside_hours: str | None = None) -> tuple[str, str | None, str | None]:
    """(mode, state, reason): mode is run | pause | yield | drain; state is what ``status`` shows.

    Outside its ``hours`` a worker follows its owner policy; with ``ignore`` it drains.
    """
    if hq_action == "pause":
        return "pause", PAUSED, "paused from the HQ"
    if hq_action == "drain":
        return "drain", DRAINING, "draining (asked by the HQ)"
    if owner_reason and policy.when_owner_active != "ignore":
        return policy.when_owner_active, OWNER_ACTIVE, f"{owner_reason}: {policy.when_owner_active}"
    if outside_hours:
        return "drain", DRAINING, outside_hours
    return "run", None, None


def signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to a process and all its descendants (a command-line script runs in a child)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in family:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            continue


class _Paused:
    """A held Order this worker suspended, and since when."""

    def __init__(self, order: dict[str, Any]) -> None:
        self.order = order
        self.since = time.monotonic()
        self.deadline = order.get("deadline")
        self.beat = 0.0

    def seconds(self) -> float:
        return time.monotonic() - self.since


class OwnerWatch:
    """The worker main process' owner thread: decide every ``owner_poll`` seconds, act on changes."""

    def __init__(self, name: str, settings: Settings, consumer: Any, policy: Policy,
                 probes: list[Probe] | None = None) -> None:
        self.name, self.settings, self.consumer, self.policy = name, settings, consumer, policy
        self.probes = probes_for(settings) if probes is None else probes
        self.paused: dict[str, _Paused] = {}
        self.cancelled: dict[str, float] = {}   # queue -> when its cancel was sent
        self.published: tuple[str | None, str | None] | None = None

    def start(self, stop: threading.Event) -> None:
        log.info("owner policy %s (idle after %gs, hours %s); probes: %s", self.policy.when_owner_active,
                 self.policy.idle_after, self.policy.hours or "any", ", ".join(p.name for p in self.probes) or
                 "none (only hours and the HQ decide)")
        threading.Thread(target=self._run, args=(stop,), name="mlqueue-owner", daemon=True).start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.owner_poll):
            try:
                self.tick()
            except store.TRANSIENT as exc:
                log.warning("owner watch: store unreachable (%s)", exc)
            except Exception:  # noqa: BLE001 - the watch must outlive any one bad probe
                log.exception("owner watch failed")

    def owner_reason(self) -> str | None:
        """Why the owner counts as active now (first probe that says so), or None."""
        outside = self.policy.outside_hours(datetime.now())
        if outside:
            return outside
        for probe in self.probes:
            reason = probe.active(self.policy.idle_after)
            if reason:
                return reason
        return None

    def tick(self) -> None:
        worker = worker_store.by_name(self.name, self.settings, ("control",)) or {}
        hq_action = (worker.get("control") or {}).get("action")
        owner = self.owner_reason() if self.policy.when_owner_active != "ignore" else None
        mode, state, reason = decide(self.policy, hq_action, owner, self.policy.outside_hours(datetime.now()))
        if mode == "run":
            self._resume_all()
            self._consume(True)
        else:
            self._consume(False)
            held = self._held()
            if mode == "pause":
                self._pause(held, reason or "paused")
            elif mode == "yield":
                self._yield(held, reason or "yield")
            else:
                self._resume_all()
        self._publish(state, reason)

    # ----------------------------------------------------------------- taking Jobs

    def _consume(self, on: bool) -> None:
        """Stop or restart taking Jobs, on every queue this worker consumes.

        While held, a queue added meanwhile (``routing``: a new requirement class, a capability change)
        is cancelled at the next tick too. On resume the worker consumes what ``routing`` wants now
        (without routing: the queues it cancelled).
        """
        consumer = self.consumer
        if consumer is None or getattr(consumer, "task_consumer", None) is None:
            return
        if not on:
            now = time.monotonic()
            consumed = [q.name for q in consumer.task_consumer.queues]
            fresh = [q for q in consumed if now - self.cancelled.get(q, -1e9) > RECANCEL_AFTER]
            for queue in fresh:
                consumer.call_soon(consumer.cancel_task_queue, queue)
                self.cancelled[queue] = now
            if fresh:
                log.info("owner watch: no new Jobs (stopped consuming %s)", ", ".join(fresh))
        elif self.cancelled:
            subscriptions = routing.subscriptions()
            queues = sorted(subscriptions.queues) if subscriptions and subscriptions.queues else sorted(self.cancelled)
            for queue in queues:
                consumer.call_soon(consumer.add_task_queue, queue)
            log.info("owner watch: taking Jobs again (%s)", ", ".join(queues))
            self.cancelled = {}

    # ----------------------------------------------------------------- the running Jobs

    def _held(self) -> list[dict[str, Any]]:
        # whole Orders: a yield needs their routing fields
        return order_store.held_by(self.name, orders.HELD, self.settings, order_store.WITHOUT_BULK)

    def _pause(self, held: list[dict[str, Any]], reason: str) -> None:
        current = {(o["jobId"], o["attempts"]) for o in held}
        for job_id, gone in list(self.paused.items()):
            if (job_id, gone.order["attempts"]) not in current:   # cancelled or reaped while suspended:
                signal_tree(gone.order["pid"], signal.SIGCONT)     # it runs, notices, and stops
                del self.paused[job_id]
        for order in held:
            paused = self.paused.get(order["jobId"])
            if paused is None:
                if not order.get("pid") or order["pid"] == os.getpid():
                    continue   # a solo/threads pool runs Jobs in this very process: it cannot stop itself
                signal_tree(order["pid"], signal.SIGSTOP)
                paused = self.paused[order["jobId"]] = _Paused(order)
                orders.note(order["jobId"], self.name, f"attempt {order['attempts']} paused ({reason})",
                            self.settings)
            if paused.seconds() >= self.policy.max_pause:
                self._yield([order], f"paused longer than max_pause {self.policy.max_pause:g}s")
            elif time.monotonic() - paused.beat >= min(self.settings.heartbeat_every, 5.0):
                paused.beat = time.monotonic()
                orders.hold_paused(paused.order, reason, paused.deadline, paused.seconds(), self.settings)

    def _yield(self, held: list[dict[str, Any]], reason: str) -> None:
        for order in held:
            if orders.give_back(order, reason, self.name, self.settings):
                log.info("owner watch: job %s yielded (%s)", order["jobId"], reason)
            if self.paused.pop(order["jobId"], None) and order.get("pid"):
                signal_tree(order["pid"], signal.SIGCONT)   # it notices it lost the Order and stops

    def _resume_all(self) -> None:
        for job_id, paused in list(self.paused.items()):
            signal_tree(paused.order["pid"], signal.SIGCONT)
            orders.resume_paused(paused.order, paused.deadline, paused.seconds(), self.name, self.settings)
            del self.paused[job_id]

    def _publish(self, state: str | None, reason: str | None) -> None:
        if self.published == (state, reason):
            return
        worker_store.set_owner_state(self.name, state, reason, self.settings)
        self.published = (state, reason)
        log.info("owner watch: state %s (%s)", state or "normal", reason or "owner idle")


def policy_of(settings: Settings) -> Policy:
    """This worker's policy; a bad value is a ``ConfigError`` saying what to fix (the start-up exits on it)."""
    try:
        return Policy.from_settings(settings, **cli_overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"owner policy: {problems} (see `celery -A mlqueue worker --help`, "
                         "or the MLQUEUE_WHEN_OWNER_ACTIVE/IDLE_AFTER/HOURS/MAX_PAUSE settings)") from None


_watch: OwnerWatch | None = None


def start(name: str, settings: Settings, consumer: Any, stop: threading.Event) -> OwnerWatch:
    """Start the owner thread of a worker (called once its Celery consumer is ready)."""
    global _watch
    _watch = OwnerWatch(name, settings, consumer, policy_of(settings))
    _watch.start(stop)
    return _watch


@signals.worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    """A warm shutdown waits for running Jobs: a suspended one must run again (or it would wait forever)."""
    if _watch is not None:
        for paused in list(_watch.paused.values()):
            signal_tree(paused.order["pid"], signal.SIGCONT)


# Values of ``celery worker --when-owner-active/--idle-after/--hours/--max-pause`` (see ``add_worker_options``).
cli_overrides: dict[str, Any] = {}


def add_worker_options(app: Any) -> None:
    """Register the owner options on ``celery -A mlqueue worker`` (Celery's ``user_options``)."""
    import click
    from celery import bootsteps

    for flag, kind, help_text in (
        ("--when-owner-active", click.Choice(["ignore", "pause", "yield", "drain"]),
         "What to do while the machine's owner uses it (setting MLQUEUE_WHEN_OWNER_ACTIVE; default ignore)."),
        ("--idle-after", float, "Seconds without owner input before the machine counts as idle (MLQUEUE_IDLE_AFTER)."),
        ("--hours", str, "Work only in these hours, e.g. 22:00-07:00 (MLQUEUE_HOURS)."),
        ("--max-pause", float, "A Job paused longer than this is yielded to another machine (MLQUEUE_MAX_PAUSE)."),
    ):
        app.user_options["worker"].add(click.Option([flag], type=kind, default=None, help=help_text))

    class OwnerOptions(bootsteps.Step):
        """Keeps the options' values for ``start`` (the watch itself starts at ``worker_ready``)."""

        def __init__(self, parent: Any, when_owner_active: str | None = None, idle_after: float | None = None,
                     hours: str | None = None, max_pause: float | None = None, **options: Any) -> None:
            super().__init__(parent, **options)
            cli_overrides.update(when_owner_active=when_owner_active, idle_after=idle_after, hours=hours,
                                 max_pause=max_pause)
            try:   # the worker's start-up: a bad policy ends it here, with what to fix
                policy_of(get_settings())
            except ConfigError as exc:
                raise SystemExit(str(exc)) from None

    app.steps["worker"].add(OwnerOptions)
