"""The baseline for bench/throughput.py: bare Celery with the same broker settings and a no-op task."""

import os

from celery import Celery

app = Celery("bare", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
EVENTS = os.environ.get("BENCH_TASK_EVENTS") == "1"  # task events on, as mlqueue runs them (Flower needs them)
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue="bare",
                worker_send_task_events=EVENTS, task_send_sent_event=EVENTS)


@app.task(name="bare.noop")
def noop(i: int) -> int:
    """Does nothing, so the run measures Celery's own cost per message."""
    return i
