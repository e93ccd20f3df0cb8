"""The baseline for bench/throughput.py: bare Celery on the same broker with a no-op task.

It runs with mlqueue's own Celery settings (``mlqueue/celery_app.py``) wherever they bear on the cost of
a task: JSON, no result backend, late acks, reject on worker loss, prefetch 1, the same visibility timeout,
remote control on; task events (sent and worker side) follow ``BENCH_TASK_EVENTS``, so the bench measures
it both ways (mlqueue keeps them on for Flower). Only what is mlqueue's is left out: its queues and its task.
"""

import os

from celery import Celery

app = Celery("bare", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
EVENTS = os.environ.get("BENCH_TASK_EVENTS") == "1"  # task events on, as mlqueue runs them (Flower needs them)
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                event_serializer="json", task_ignore_result=True, task_acks_late=True,
                task_reject_on_worker_lost=True, worker_prefetch_multiplier=1, task_default_queue="bare",
                task_track_started=False, broker_transport_options={"visibility_timeout": 7 * 86400.0},
                broker_heartbeat=10, worker_cancel_long_running_tasks_on_connection_loss=False,
                worker_enable_remote_control=True, worker_send_task_events=EVENTS, task_send_sent_event=EVENTS)


@app.task(name="bare.noop")
def noop(i: int) -> int:
    """Does nothing, so the run measures Celery's own cost per message."""
    return i
