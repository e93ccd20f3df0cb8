"""Serving the real API app over real HTTP in the test process, and filling a store with finished Jobs."""

from __future__ import annotations

import random
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from bson import ObjectId
from conftest import wait_for
from fastapi import FastAPI

from mlqueue.api import create_app
from mlqueue.servers import free_port
from mlqueue.settings import Settings


@dataclass
class Served:
    """The API of one test's farm, listening on 127.0.0.1 (uvicorn in a thread)."""

    url: str
    token: str
    settings: Settings
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def http(self, token: str | None = "", **kwargs: Any) -> httpx.Client:
        """A client sending ``token`` (default: the right one; None: no Authorization header)."""
        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(settings: Settings) -> Served:
    port = free_port()
    # a high brake: test_api checks every route against wrong tokens, hundreds from this one address
    settings = settings.model_copy(update={"token": secrets.token_urlsafe(16), "http_port": port,
                                           "wrong_token_limit": 100_000})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=20, what="the API to listen")
    assert server.started, "uvicorn did not start"
    return Served(url=f"http://127.0.0.1:{port}", token=settings.token, settings=settings, app=app,
                  server=server, thread=thread)


def insert_finished(db: Any, n: int, seed: int = 1, project: str = "bench", unscored_every: int = 10,
                    batch: int = 5000) -> list[str]:
    """``n`` finished Jobs (Job, final Order and Outcome each), written straight to the store.

    Every ``unscored_every``-th one failed without a loss; the others succeeded with a random loss,
    ``metric`` and an extra metric ``acc``. Returns the Job ids, oldest first.
    """
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    ids = []
    jobs, orders, outcomes = [], [], []
    for i in range(n):
        job_id = ObjectId()
        created = start + timedelta(milliseconds=i)
        failed = unscored_every and i % unscored_every == 0
        state = "failed" if failed else "succeeded"
        lr = round(rng.uniform(0.001, 1), 4)
        loss = None if failed else rng.random() * 10
        outcome = {"jobId": str(job_id), "orderId": str(ObjectId()), "attempt": 1, "worker": f"w{i % 4}@host",
                   "host": "host", "state": state, "finishedDate": created + timedelta(seconds=5),
                   "status": 500 if failed else 200, "reason": "error" if failed else None,
                   "loss": loss, "metric": None if failed else 1 / (1 + loss), "acc": None if failed else rng.random(),
                   "durationSeconds": 5.0}
        jobs.append({"_id": job_id, "scriptName": "toy", "projectName": project, "lr": lr, "createdDate": created})
        orders.append({"jobId": str(job_id), "state": state, "createdDate": created, "updatedDate": created,
                       "attempts": 1, "maxAttempts": 3, "timeLimit": 60.0, "scriptName": "toy",
                       "projectName": project, "sweepId": None, "delivery": "x", "enqueuedAt": created,
                       "worker": outcome["worker"], "outcome": outcome,
                       "history": [{"at": created, "to": state, "by": "bench", "why": "inserted"}],
                       "metrics": [], "log": []})
        outcomes.append(dict(outcome))
        ids.append(str(job_id))
        if len(jobs) >= batch or i == n - 1:
            db.jobs.insert_many(jobs)
            db.orders.insert_many(orders)
            db.outcomes.insert_many(outcomes)
            jobs, orders, outcomes = [], [], []
    return ids
