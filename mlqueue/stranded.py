"""Messages stranded with a dead worker before it could claim their Job: found in the broker, sent again.

A worker takes a message from Redis (it moves to Redis' ``unacked`` hash, late acks) and only then
claims the Order. Killed in between, it leaves an Order that says ``unassigned`` and "queued", and a
message that Redis hands out again only after the visibility timeout (days, on purpose: see
``celery_app``). The heartbeat-based reaper cannot see this case — nobody ever held the Order — so the
Job would sit for days. Found by the chaos suite's kill storm (1 Job in 80 under 25 SIGKILLs).

The fix reads the broker's own bookkeeping: an unassigned Order whose current delivery has sat in
``unacked`` for longer than ``lost_after`` was taken by a consumer that never claimed it. It gets a
new delivery and a new message; the old message, should it ever arrive, is stale and ignored by
``orders.claim``, so this is safe even if that consumer was merely slow.

A message can also vanish: kombu's Redis transport pops it (``BRPOP``) and only then records it in
``unacked``, so a worker killed between the two leaves it nowhere (the full chaos kill storm, 100
SIGKILLs: one Job in 300 sat unassigned for good). ``resend_vanished`` looks, at most once a minute per
house (a Redis lock), for unassigned Orders sent longer than ``lost_after`` ago whose delivery is in no
queue and not in ``unacked``, and sends them again the same way. A message merely in a worker's hands at
that instant gets a stale twin at worst: whichever delivery the Order holds when a worker claims it runs,
once.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import redis

from mlqueue import brokers, orders
from mlqueue.settings import Settings
from mlqueue.store import orders as order_store

log = logging.getLogger(__name__)
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis transport keys

_clients: dict[str, redis.Redis] = {}


def _redis(settings: Settings) -> redis.Redis:
    url = settings.broker_url or ""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return _clients[url]


def held_too_long(settings: Settings) -> dict[str, float]:
    """Task ids (our deliveries) of messages unacked for longer than ``lost_after``, with since when."""
    client = _redis(settings)
    cutoff = time.time() - settings.lost_after
    tags = client.zrangebyscore(UNACKED_INDEX, "-inf", cutoff, withscores=True)
    if not tags:
        return {}
    raws = client.hmget(UNACKED, [tag for tag, _ in tags])
    found: dict[str, float] = {}
    for (_, since), raw in zip(tags, raws, strict=True):
        if task_id := _task_id(raw, unacked=True):
            found[task_id] = since
    return found


VANISHED_EVERY = 60.0  # seconds between two looks for vanished messages, per house


def resend_vanished(by: str, settings: Settings) -> int:
    """Give every unassigned Order whose message is nowhere in the broker a new delivery and message."""
    if not brokers.is_redis(settings.broker_url):  # RabbitMQ moves a message and its unacked state at once
        return 0
    sent_before = orders.now() - timedelta(seconds=settings.lost_after)
    waiting = order_store.sent_before(orders.UNASSIGNED, sent_before, settings, RESEND_FIELDS)
    if not waiting:
        return 0
    try:
        client = _redis(settings)
        every = max(1, int(min(VANISHED_EVERY, settings.lost_after)))
        if not client.set(f"mlqueue.vanished-check.{settings.queue}", by, nx=True, ex=every):
            return 0   # another reaper of this house looked within the minute
        present = deliveries_in_broker(client, settings.queue)
    except redis.RedisError as exc:
        log.warning("could not read the broker's queues: %s", exc)
        return 0
    gone = [o for o in waiting if o["delivery"] not in present]
    return sum(orders.reroute(o, {}, "its message is in no queue and with no worker (taken by one killed at once?); "
                                     "queued again", by, settings) is not None for o in gone)


def deliveries_in_broker(client: redis.Redis, queue: str) -> set[str]:
    """Task ids (our deliveries) of every message of this house's queues (``queue`` and the queues named
    after it) waiting in Redis or held ``unacked`` by a worker."""
    found: set[str] = set()
    for key in client.scan_iter(match=f"{queue}*", _type="list"):
        found.update(_task_id(raw) for raw in client.lrange(key, 0, -1))
    found.update(_task_id(raw, unacked=True) for raw in client.hvals(UNACKED))
    found.discard("")
    return found


def _task_id(raw: bytes | str | None, unacked: bool = False) -> str:
    """The task id (our delivery) of a message as Redis keeps it: queued, or as an ``unacked`` entry
    ``[message, exchange, routing key]``; "" for anything unreadable."""
    try:
        message = json.loads(raw)  # type: ignore[arg-type]
        return str((message[0] if unacked else message)["headers"]["id"])
    except (TypeError, ValueError, KeyError, IndexError):
        return ""


RESEND_FIELDS = {"jobId": 1, "delivery": 1, "state": 1, "placedOn": 1, "pinnedWorker": 1, "requirementClass": 1,
                 "scriptVersion": 1}  # what ``orders.reroute`` needs to send an Order again


def resend(by: str, settings: Settings) -> int:
    """Give every stranded unassigned Order a new delivery and message. Returns how many."""
    if not brokers.is_redis(settings.broker_url):  # RabbitMQ re-queues a closed connection's messages itself
        return 0
    try:
        held = held_too_long(settings)
    except redis.RedisError as exc:
        log.warning("could not read the broker's unacked messages: %s", exc)
        return 0
    if not held:
        return 0
    stranded = order_store.with_deliveries(orders.UNASSIGNED, list(held), settings, RESEND_FIELDS)
    return sum(orders.reroute(o, {}, "its message was taken by a worker that never claimed it (died?); queued again",
                              by, settings) is not None for o in stranded)
