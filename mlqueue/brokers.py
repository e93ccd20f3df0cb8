"""Which broker the house uses, and what differs between Redis and RabbitMQ.

The Celery broker carries Job messages only; every guarantee lives in the store. Two features also use a
Redis besides messages: sweeps keep their Optuna study in a Redis journal, and pruning verdicts and the
driver's wake-ups travel through Redis lists and pub/sub (``mlqueue.verdicts``). With a Redis broker
that Redis is the broker. With RabbitMQ (``amqp://``) it is ``redis_url`` when set; the HQ then starts
its embedded Redis for them unless ``MLQUEUE_REDIS_URL`` names one (``hq.HQ.start_servers``). A worker
with no Redis at all still runs every Job: its verdict waits are skipped (a stop still reaches the trial
through the store at its next report) — see docs/scaling.md.

On RabbitMQ, mlqueue asks for publisher confirms (a submitted message is on the broker's disk before
``send_task`` returns) and, with ``quorum_queues``, declares every queue it creates as a quorum queue.
"""

from __future__ import annotations

from typing import Any

from mlqueue.settings import Settings

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def is_redis(url: str | None) -> bool:
    return (url or "").startswith(REDIS_SCHEMES)


def is_amqp(url: str | None) -> bool:
    return (url or "").startswith(AMQP_SCHEMES)


def redis_url(settings: Settings) -> str | None:
    """The Redis for sweep studies and verdicts: ``redis_url``, else the broker when it is Redis, else None."""
    if settings.redis_url:
        return settings.redis_url
    return settings.broker_url if is_redis(settings.broker_url) else None


def quorum(settings: Settings) -> bool:
    """Whether queues are declared as RabbitMQ quorum queues (only on an AMQP broker)."""
    return settings.quorum_queues and is_amqp(settings.broker_url)


def celery_options(settings: Settings) -> dict[str, Any]:
    """Celery settings that depend on the broker (merged into ``celery_app.make_app``'s)."""
    if is_amqp(settings.broker_url):
        options: dict[str, Any] = {"broker_transport_options": {"confirm_publish": True}}
        if quorum(settings):
            # Queues made on demand (requirement classes, per-worker queues) get the same type; Celery
            # then turns off global QoS by itself (quorum queues have none), prefetch stays 1 per worker.
            options.update(task_default_queue_type="quorum", task_create_missing_queue_type="quorum")
        return options
    # Redelivery of a running Job is decided by Order heartbeats (see orders.Reaper), not by Redis;
    # the visibility timeout is only the last resort for messages nobody else remembers.
    return {"broker_transport_options": {"visibility_timeout": settings.visibility_timeout}}


def queue_options(settings: Settings) -> dict[str, Any]:
    """Declaration options for a queue a worker starts consuming by remote control (``add_consumer``)."""
    return {"queue_arguments": {"x-queue-type": "quorum"}} if quorum(settings) else {}


def ping(settings: Settings) -> dict[str, Any]:
    """``{"ok": True}`` when the broker answers within 2 s, else ``{"ok": False, "error": ...}``."""
    if not settings.broker_url:
        return {"ok": False, "error": "no broker configured"}
    if is_redis(settings.broker_url):
        return ping_redis(settings.broker_url)
    from kombu import Connection

    try:
        with Connection(settings.broker_url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure to connect is "not answering"
        return {"ok": False, "error": type(exc).__name__}


def ping_redis(url: str) -> dict[str, Any]:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as r:
            r.ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "error": type(exc).__name__}
