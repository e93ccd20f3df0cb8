"""Which Celery queue an Order goes to, and which queues each worker consumes: routing on Celery's own means.

    <queue>                  Jobs with no requirement (every worker consumes it)
    <queue>.req.<class>      Jobs of one requirement class (``requirements.class_name``): consumed only by
                             workers whose capabilities satisfy it
    <queue>.w.<worker>       Jobs pinned to one worker (the Job's ``worker`` field: ``w1@desktop`` or ``w1``),
                             and Jobs the placement sent to a faster machine (``speed.py``)

A worker works its queues out when it starts (``celeryd_after_setup``: the classes the farm knows, from
the ``requirement_classes`` collection, that it satisfies) and keeps them current with Celery's remote
control: a submitter that queues a class an online worker satisfies but does not consume broadcasts
``add_consumer`` to it; a worker whose capabilities change (mains unplugged, a package removed) adds or
cancels its own consumers; a worker whose environment failed a Job's class cancels that class on itself
until restarted (``refuse``). Messages for a class nobody consumes simply wait in Redis.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import signals

from mlqueue import brokers, capabilities, requirements, store
from mlqueue.settings import Settings, get_settings
from mlqueue.store import workers as worker_store
from mlqueue.values import number_or_none

log = logging.getLogger(__name__)
CLASSES = "requirement_classes"
CAPABILITY_REFRESH_SECONDS = 30.0


# --------------------------------------------------------------------------- queue names


def class_queue(base: str, requirement_class: str) -> str:
    return f"{base}.req.{requirement_class}"


def worker_queue(base: str, worker: str) -> str:
    return f"{base}.w.{worker}"


def queue_of(order: dict[str, Any], settings: Settings | None = None) -> str:
    """The queue an Order's messages go to: placed or pinned worker, else its class, else the base queue."""
    base = (settings or get_settings()).queue
    target = order.get("placedOn") or order.get("pinnedWorker")
    if target:
        return worker_queue(base, target)
    if order.get("requirementClass"):
        return class_queue(base, order["requirementClass"])
    return base


def place(job: dict[str, Any], settings: Settings | None = None, version: dict[str, str] | None = None
          ) -> dict[str, Any]:
    """The routing fields of a new Order: merged ``requires``, its class, and the pinned worker if any.
    ``version``: the script version the Job runs, when submit has looked it up (``scripts.version_now``)."""
    from mlqueue import scripts

    settings = settings or get_settings()
    try:
        script = scripts.resolve(job["scriptName"], settings, pinned=job.get("scriptHash"), carried=version)
        declared = _declared(str(script.path), script.sha256)
    except scripts.ScriptNotFound:
        declared = {}
    merged = requirements.merge(declared, job.get("requires"))
    epochs = job.get("epochs")
    return {"requires": merged or None, "requirementClass": requirements.class_name(merged),
            "pinnedWorker": job.get("worker") or None, "placedOn": None,
            "epochs": number_or_none(epochs)}


def learn(order: dict[str, Any], judged: dict[str, Any]) -> dict[str, Any]:
    """After an environment failure: a missing package the Job did not require joins its requirement.

    Returns the Order fields to change (empty when there is nothing to learn).
    """
    package = judged.get("package")
    requires = dict(order.get("requires") or {})
    named = {capabilities.canonical(requirements.Requirement(p).name) for p in requires.get("packages", [])}
    if not package or capabilities.canonical(package) in named:
        return {}
    merged = requirements.merge({}, {**requires, "packages": [*requires.get("packages", []), package]})
    return {"requires": merged, "requirementClass": requirements.class_name(merged)}


@lru_cache(maxsize=256)
def _declared(path: str, sha256: str) -> dict[str, Any]:
    """A script's ``REQUIRES``, parsed once per script version (a sweep submits thousands of Jobs)."""
    return requirements.declared(Path(path))


# --------------------------------------------------------------------------- submitter side


def announce(new_orders: list[dict[str, Any]], settings: Settings | None = None) -> None:
    """Make the classes of ``new_orders`` known, and have every online worker that satisfies one consume it.

    Called by the submitter before the messages are sent. Workers starting later read the stored classes.
    """
    settings = settings or get_settings()
    classes = {o["requirementClass"]: o["requires"] for o in new_orders if o.get("requirementClass")}
    if not classes:
        return
    d = store.db(settings)
    for name, requires in classes.items():
        store.durable(lambda name=name, requires=requires: d[CLASSES].update_one(
            {"_id": name}, {"$setOnInsert": {"requires": requires, "firstSeen": time.time()}}, upsert=True),
            "store requirement class", settings)
    workers = worker_store.alive(settings, ("name", "capabilities", "queues", "refused"))
    for name, requires in classes.items():
        queue = class_queue(settings.queue, name)
        targets = [w["name"] for w in workers
                   if queue not in (w.get("queues") or []) and name not in (w.get("refused") or {})
                   and requirements.satisfies(w.get("capabilities") or {}, requires)]
        if targets:
            tell(targets, "add_consumer", queue, settings)


def tell(workers: list[str], command: str, queue: str, settings: Settings, reply: bool = True) -> list[str]:
    """Celery remote control ``add_consumer``/``cancel_consumer`` to ``workers``; returns those that answered."""
    from mlqueue.celery_app import app_for

    control = app_for(settings).control
    try:
        call = control.add_consumer if command == "add_consumer" else control.cancel_consumer
        options = {"options": brokers.queue_options(settings)} if command == "add_consumer" else {}
        replies = call(queue, destination=workers, reply=reply, timeout=2.0, **options) if reply else \
            call(queue, destination=workers, **options)
    except Exception as exc:  # noqa: BLE001 - the worker's own refresh catches up within a heartbeat
        log.warning("could not tell %s to %s %s: %s", workers, command, queue, exc)
        return []
    answered = [name for r in (replies or []) for name in r]
    if answered and command == "add_consumer":
        worker_store.add_queue(answered, queue, settings)
    return answered


# --------------------------------------------------------------------------- worker side


class Subscriptions:
    """One worker's view of its queues: what it is, the classes it satisfies, and those it refused."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.caps: dict[str, Any] = {}
        self.queues: set[str] = set()
        self.known_classes = -1
        self.detected_at = 0.0

    def base_queues(self) -> set[str]:
        base = self.settings.queue
        short = self.name.split("@")[0]
        return {base, worker_queue(base, self.name), worker_queue(base, short)}

    def wanted(self) -> set[str]:
        """Every queue this worker should consume now."""
        me = worker_store.by_name(self.name, self.settings, ("refused",)) or {}
        refused = me.get("refused") or {}
        wanted = self.base_queues()
        classes = list(store.db(self.settings)[CLASSES].find({}))
        self.known_classes = len(classes)
        for doc in classes:
            if doc["_id"] in refused:
                continue
            caps = self._with_packages(doc.get("requires") or {})
            if requirements.satisfies(caps, doc.get("requires")):
                wanted.add(class_queue(self.settings.queue, doc["_id"]))
        return wanted

    def _with_packages(self, requires: dict[str, Any]) -> dict[str, Any]:
        """Probe packages a requirement names that the standard list does not cover (and publish them)."""
        names = [requirements.Requirement(p).name for p in requires.get("packages", [])]
        extra = [n for n in names if capabilities.canonical(n) not in self.caps.get("packages", {})
                 and capabilities.canonical(n) not in (capabilities.override(self.settings).get("packages") or {})]
        probed = capabilities.packages(extra) if extra else {}
        if probed:
            self.caps["packages"] = {**self.caps.get("packages", {}), **probed}
            self.publish()
        return self.caps

    def detect(self) -> None:
        self.caps = capabilities.detect(self.settings)
        self.detected_at = time.monotonic()

    def publish(self) -> None:
        worker_store.publish_routing(self.name, self.caps, sorted(self.queues), self.settings)

    def start(self, worker: Any) -> None:
        """At ``celeryd_after_setup``: publish capabilities, forget old refusals, select this worker's queues."""
        self.detect()
        worker_store.forget_refusals(self.name, self.settings)
        self.queues = self.wanted()
        for queue in sorted(self.queues):
            worker.app.amqp.queues.select_add(queue, **brokers.queue_options(self.settings))
        self.publish()
        log.info("worker %s consumes %s", self.name, ", ".join(sorted(self.queues)))

    def refresh(self) -> None:
        """From the heartbeat: follow new classes and capability changes with add/cancel_consumer on itself."""
        d = store.db(self.settings)
        stale = time.monotonic() - self.detected_at > max(CAPABILITY_REFRESH_SECONDS, self.settings.heartbeat_every)
        if stale:
            before = self.caps
            self.detect()
            if self.caps != before:
                self.publish()
        elif d[CLASSES].count_documents({}) == self.known_classes and not self._refused_changed():
            return
        wanted = self.wanted()
        for queue in sorted(wanted - self.queues):
            tell([self.name], "add_consumer", queue, self.settings, reply=False)
        for queue in sorted(self.queues - wanted):
            tell([self.name], "cancel_consumer", queue, self.settings, reply=False)
        if wanted != self.queues:
            log.info("worker %s now consumes %s", self.name, ", ".join(sorted(wanted)))
        self.queues = wanted
        self.publish()

    def _refused_changed(self) -> bool:
        me = worker_store.by_name(self.name, self.settings, ("refused",)) or {}
        refused = {class_queue(self.settings.queue, c) for c in (me.get("refused") or {})}
        return bool(refused & self.queues)


def refuse(worker: str, order: dict[str, Any], why: str, settings: Settings) -> None:
    """This worker's environment failed the Order's class: stop consuming it here until restarted."""
    requirement_class = order.get("requirementClass")
    if not requirement_class or order.get("pinnedWorker") or order.get("placedOn"):
        return
    queue = class_queue(settings.queue, requirement_class)
    worker_store.refuse(worker, requirement_class, why, queue, settings)
    tell([worker], "cancel_consumer", queue, settings, reply=False)
    log.warning("worker %s stops taking %s until restarted: %s", worker, requirement_class, why)


_subscriptions: Subscriptions | None = None


def subscriptions() -> Subscriptions | None:
    """This worker process' subscriptions (None outside a worker's main process)."""
    return _subscriptions


WORKER_OPTIONS = {  # `celery -A mlqueue worker --gpus 0 --max-memory 6 --name desktop`; also MLQUEUE_* settings
    "gpus": ("--gpus", str, "GPUs this worker may use, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES); env MLQUEUE_GPUS"),
    "max_memory": ("--max-memory", float, "GB of RAM Jobs may count on here; env MLQUEUE_MAX_MEMORY"),
    "worker_name": ("--name", str, "friendly worker name (NAME@host); env MLQUEUE_WORKER_NAME"),
}


def add_worker_options(app: Any) -> None:
    """Teach ``celery worker`` mlqueue's options (Celery's ``user_options``)."""
    import click

    for key, (flag, kind, help_text) in WORKER_OPTIONS.items():
        app.user_options["worker"].add(click.Option([flag, key], type=kind, default=None, help=help_text))


@signals.celeryd_init.connect
def _on_worker_init(sender: Any = None, instance: Any = None, options: dict[str, Any] | None = None, **_: Any) -> None:
    """Before anything is imported or forked: hide packages, restrict GPUs, apply a friendly name."""
    from mlqueue.settings import reload_settings

    given = {k: v for k, v in (options or {}).items() if k in WORKER_OPTIONS and v is not None}
    for key, value in given.items():
        os.environ[f"MLQUEUE_{key.upper()}"] = str(value)
    settings = reload_settings() if given else get_settings()
    capabilities.install_blocker(settings)
    if settings.gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.gpus
    if settings.worker_name and instance is not None:
        name = settings.worker_name
        instance.hostname = name if "@" in name else f"{name}@{socket.gethostname()}"


@signals.celeryd_after_setup.connect
def _on_worker_setup(sender: Any = None, instance: Any = None, **_: Any) -> None:
    global _subscriptions
    settings = get_settings()
    store.ensure_indexes(settings)
    _subscriptions = Subscriptions(str(getattr(instance, "hostname", None) or sender), settings)
    _subscriptions.start(instance)
