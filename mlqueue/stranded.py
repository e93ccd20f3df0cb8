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
"""

from __future__ import annotations

import json
import logging
import time

import redis

from mlqueue import brokers, orders, routing
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
        try:
            message = json.loads(raw)[0]
            found[str(message["headers"]["id"])] = since
        except (TypeError, ValueError, KeyError, IndexError):
            continue
    return found


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
    resent = 0
    fields = {"jobId": 1, "delivery": 1, "state": 1, "placedOn": 1, "pinnedWorker": 1, "requirementClass": 1,
              "scriptVersion": 1}
    for order in order_store.with_deliveries(orders.UNASSIGNED, list(held), settings, fields):
        delivery = orders.new_delivery()
        moved = orders._move(  # noqa: SLF001 - the same conditional move every other transition uses
            {"jobId": order["jobId"], "state": orders.UNASSIGNED, "delivery": order["delivery"]},
            orders.UNASSIGNED, by, "its message was taken by a worker that never claimed it (died?); queued again",
            settings, set_={"delivery": delivery, "enqueuedAt": None})
        if moved:
            resent += orders.enqueue(order["jobId"], delivery, settings, routing.queue_of(order, settings),
                                     order.get("scriptVersion"))
    return resent
