"""A sweep pruner's verdict at a rung, carried from the driver to the waiting trial, and the wake-ups that
let the driver answer at once.

Reports are non-blocking (``mlqueue.reports``), so a trial shorter than the driver's reaction time ended
before the driver judged its first rung: short trials escaped the pruner. Successive halving (ASHA) and
Hyperband decide only at their rung steps (``minResource * reductionFactor**k``), which the driver knows
and writes into every trial Job (``pruneSteps: {field: epoch, steps: [1, 3, 9, ...]}``). A report at a
rung step waits for the driver's verdict (at most ``verdict_timeout`` seconds); every other report goes
on at once, as before.

Both directions go through the HQ's Redis (the broker, or ``redis_url`` beside RabbitMQ; sweeps keep their
Optuna studies there already):
- a worker PUBLISHes on the house's sweep channel when a trial's rung report is stored and when a trial
  ends, so the driver steps now instead of at its next poll (which also shortens the gap between a
  machine's trials: the next trial is asked for and queued as soon as one ends);
- the driver LPUSHes its verdict (the last step it judged, "go" or "stop") on the attempt's own list, which
  the waiting worker BLPOPs. A verdict list expires after ten minutes.

The store stays the record: a "stop" verdict is sent after the driver's ``orders.request_stop``; Redis only
carries the news faster. If Redis or the driver is gone, the wait times out, the trial goes on and waits no
more in this attempt, and a stop still reaches it at a later report through the store.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from mlqueue import brokers
from mlqueue.settings import Settings
from mlqueue.values import is_whole

log = logging.getLogger(__name__)

GO, STOP = "go", "stop"
KEEP_SECONDS = 600          # an unread verdict list disappears after this
TOP_STEP = 10**9           # rung steps written into a Job stop here (when no maxResource bounds them)

_clients: dict[str, redis.Redis] = {}


def _redis(settings: Settings) -> redis.Redis | None:
    """A client on the house's Redis (``brokers.redis_url``), or None when it has none (then nothing waits)."""
    url = brokers.redis_url(settings)
    if url is None:
        return None
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    return _clients[url]


def channel(settings: Settings) -> str:
    return f"mlqueue:{settings.mongo_db}:sweeps:wake"


def _key(settings: Settings, job_id: str, attempt: int) -> str:
    return f"mlqueue:{settings.mongo_db}:verdict:{job_id}:{attempt}"


def rung_steps(min_resource: int, reduction_factor: int, max_resource: int | None) -> list[int]:
    """Where successive halving can decide: ``min_resource * reduction_factor**k`` up to ``max_resource``
    (for Hyperband, the union over its brackets, which start at successive rungs of the same ladder)."""
    steps, step = [], min_resource
    while step <= min(max_resource or TOP_STEP, TOP_STEP):
        steps.append(step)
        step *= reduction_factor
    return steps


# --------------------------------------------------------------------------- driver side


def wake(settings: Settings) -> None:
    """Tell the house's sweep drivers something happened (a rung report stored, a trial ended)."""
    client = _redis(settings)
    if client is None:
        return
    try:
        client.publish(channel(settings), b"1")
    except redis.RedisError as exc:   # the driver's poll is the fallback
        log.debug("sweep wake-up not sent: %s", exc)


def send(settings: Settings, job_id: str, attempt: int, step: int, stop: bool) -> None:
    """The driver's verdict for an attempt, having judged its reports up to ``step``."""
    client = _redis(settings)
    if client is None:
        return
    key = _key(settings, job_id, attempt)
    try:
        client.pipeline().lpush(key, f"{step}:{STOP if stop else GO}").expire(key, KEEP_SECONDS).execute()
    except redis.RedisError as exc:   # the trial's wait times out; a stop still reaches it through the store
        log.warning("verdict for job %s not sent: %s", job_id, exc)


class Waker:
    """The driver's pause between steps: ``poll`` seconds, or less when a worker wakes it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pubsub: Any = None

    def wait(self, stop: threading.Event, poll: float) -> bool:
        """Wait up to ``poll`` seconds; True if woken by a worker (every wake-up pending is consumed)."""
        if self.pubsub is None and not self._subscribe():
            stop.wait(poll)
            return False
        try:
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=poll)
            if message is None:
                return False
            while self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
                pass   # several trials at once: one step serves them all
            return True
        except redis.RedisError as exc:
            log.debug("sweep wake-ups lost (%s); polling", exc)
            self.close()
            stop.wait(poll)
            return False

    def _subscribe(self) -> bool:
        client = _redis(self.settings)
        if client is None:
            return False
        try:
            self.pubsub = client.pubsub()
            self.pubsub.subscribe(channel(self.settings))
            return True
        except redis.RedisError as exc:
            log.debug("cannot subscribe to sweep wake-ups (%s); polling", exc)
            self.close()
            return False

    def close(self) -> None:
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except redis.RedisError:
                pass
            self.pubsub = None


# --------------------------------------------------------------------------- trial side


@dataclass
class Rungs:
    """One attempt's rung steps and what waiting at them cost (reported in the Outcome as ``rungWaits``)."""

    job_id: str
    attempt: int
    field: str
    steps: frozenset[int]
    waited: list[int] = field(default_factory=list)
    timed_out: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, job: dict[str, Any], order: dict[str, Any]) -> Rungs | None:
        """The rungs a sweep trial's Job carries; None for any other Job (it never waits)."""
        spec = job.get("pruneSteps")
        if not job.get("sweepId") or not isinstance(spec, dict):
            return None
        steps = [s for s in spec.get("steps") or [] if is_whole(s)]
        if not steps or not isinstance(spec.get("field"), str):
            return None
        return cls(str(order["jobId"]), int(order.get("attempts") or 0), spec["field"], frozenset(steps))

    def at(self, metrics: dict[str, Any]) -> int | None:
        """The rung step this report is at, if it is one (and waiting has not been given up)."""
        step = metrics.get(self.field)
        if self.timed_out or not is_whole(step) or step not in self.steps:
            return None
        return step

    def wait(self, step: int, settings: Settings) -> str:
        """Wake the driver, then wait for its verdict on ``step``: "stop", or "go" (also after a timeout)."""
        client = _redis(settings)
        if client is None:
            return GO
        started = time.monotonic()
        deadline = started + settings.verdict_timeout
        self.waited.append(step)
        wake(settings)
        verdict = None
        try:
            while verdict is None and (left := deadline - time.monotonic()) > 0:
                popped = client.brpop([_key(settings, self.job_id, self.attempt)], timeout=max(left, 0.01))
                if popped is None:
                    break
                judged, _, answer = popped[1].decode().partition(":")
                if answer == STOP or int(judged) >= step:   # an older verdict (after a timeout) is skipped
                    verdict = answer
        except (redis.RedisError, ValueError) as exc:
            log.warning("no verdict for job %s at step %d: %s", self.job_id, step, exc)
        self.seconds += time.monotonic() - started
        if verdict is None:
            self.timed_out += 1   # the driver is slow or gone: stop waiting in this attempt
            log.warning("job %s: no pruner verdict at %s %d within %gs; going on without waiting", self.job_id,
                        self.field, step, settings.verdict_timeout)
            return GO
        return verdict

    def summary(self) -> dict[str, Any]:
        return {"steps": self.waited, "timedOut": self.timed_out, "seconds": round(self.seconds, 3)}
