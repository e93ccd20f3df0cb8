"""The Celery application: a Redis (or RabbitMQ) broker, JSON only, one Job at a time per worker process.

``celery -A mlqueue worker`` finds this app through ``mlqueue.app``. There is no result backend:
Outcomes go to the store, where they are kept with their Jobs and Orders.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import pools

from mlqueue import brokers, routing
from mlqueue.settings import Settings, get_settings


def make_app() -> Celery:
    settings = get_settings()
    celery_app = Celery("mlqueue", include=["mlqueue.worker"])
    celery_app.conf.update(
        broker_url=settings.broker_url or "redis://127.0.0.1:6379/0",
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        task_default_queue=settings.queue,
        task_track_started=False,
        **brokers.celery_options(settings),  # Redis' visibility timeout, or RabbitMQ's confirms and queue type
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=10,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_enable_remote_control=True,
    )
    return celery_app


app = make_app()
__import__("mlqueue.owner", fromlist=["add_worker_options"]).add_worker_options(app)  # --when-owner-active...
routing.add_worker_options(app)


def app_for(settings: Settings) -> Celery:
    """The app, pointed at ``settings``' broker (the HQ learns its URL only after starting Redis)."""
    options = brokers.celery_options(settings)
    if settings.broker_url and (app.conf.broker_url != settings.broker_url
                                or any(app.conf.get(key) != value for key, value in options.items())):
        # Close the old broker's connections *and forget them*: kombu keeps pools in a global registry keyed
        # by broker, so a pool merely closed would be handed back, dead, on a later switch to that broker.
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None
        app.conf.broker_url = settings.broker_url
        app.conf.update(options)
        for cached in ("queues", "default_queue", "router"):  # made from the old options (queue types)
            app.amqp.__dict__.pop(cached, None)
    return app


@signals.celeryd_init.connect
def _refuse_without_hq(**_: Any) -> None:
    """A worker with no HQ configured should say how to configure one, not hang on localhost.

    This is the worker process's entry point, so a configuration error ends it here with its message.
    """
    from mlqueue.errors import ConfigError
    from mlqueue.machines import check_identity

    try:
        get_settings().require_urls()
        check_identity(get_settings().home)   # a home copied from another computer is refused
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
