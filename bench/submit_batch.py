"""How fast one call submits many Jobs (``service.submit``: validated, stored with their Orders, queued),
against sending the same number of bare Celery messages over the same Redis in the same run.

The baseline is what the broker alone costs: ``send_task`` of N messages on one connection (no store).
mlqueue adds, per Job, its validation, the Job and Order documents (written in batches) and the "sent"
marks (one update per 50). No worker runs, so only submitting is measured.
Run: `.venv/bin/python bench/submit_batch.py [--jobs 10000]`. Prints and saves bench/results/submit_batch.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

RESULTS = harness.results_path("submit_batch")


def bare_celery_sends(broker_url: str, n: int) -> float:
    """Seconds to send ``n`` messages to a queue of their own, as Celery's client does, on one connection."""
    from celery import Celery

    app = Celery("bare", broker=broker_url)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("bare.noop", args=(i,), queue="bare-submit", producer=producer)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000)
    args = parser.parse_args()
    from mlqueue import service, store

    with tempfile.TemporaryDirectory() as tmp_name, harness.servers(Path(tmp_name)) as (rs, ms):
        settings = harness.connect(harness.mlqueue_env(Path(tmp_name) / "home", rs, ms))
        jobs = [{"scriptName": "toy", "x": float(i), "epochs": 1} for i in range(args.jobs)]
        bare = bare_celery_sends(rs.url, args.jobs)
        started = time.perf_counter()
        ids = service.submit(jobs, by="bench", settings=settings)
        seconds = time.perf_counter() - started
        unsent = store.db(settings).orders.count_documents({"enqueuedAt": None})
    figures = {"jobs": len(ids), "mlqueue_seconds": round(seconds, 2),
               "mlqueue_jobs_per_s": round(len(ids) / seconds, 1),
               "bare_celery_seconds": round(bare, 2), "bare_celery_messages_per_s": round(args.jobs / bare, 1),
               "ratio_mlqueue_vs_bare": round(bare / seconds, 3), "orders_left_unsent": unsent,
               "load": [round(x, 1) for x in os.getloadavg()]}
    print(figures)
    harness.save(RESULTS, figures)


if __name__ == "__main__":
    main()
