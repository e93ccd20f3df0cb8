"""The shapes of the stored documents, in one place: an Order, its history events, an Outcome.

The Job's own model is ``jobs.JobSpec`` (validated at submit). Orders and Outcomes are written only by
``orders.py`` (and the worker through it), so they are described here as ``TypedDict``s rather than
validated again on every read: a reader can see every field a module may find, with what it means,
and a type checker can follow them through ``service`` and the clients. Fields written by later moves
are optional (``total=False``); ``OrderBase`` holds what ``orders.submit`` always writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypedDict

OrderState = Literal["unassigned", "assigned", "running", "succeeded", "failed", "cancelled", "pruned"]
FinalState = Literal["succeeded", "failed", "cancelled", "pruned"]


class Event(TypedDict, total=False):
    """One line of an Order's ``history``: a move (``to`` a state) or a note (``to`` None)."""

    at: datetime
    to: OrderState | None
    by: str            # who: cli@host, api@address, w1@host, reaper@hq, dashboard...
    why: str


class Outcome(TypedDict, total=False):
    """A Job's one final result: what the script returned, plus what mlqueue adds.

    The script's own fields (``loss``, ``metric``, any metric, ``status``) are kept as returned; the
    rest is written by ``orders.finish`` (or ``orders.system_outcome`` when the script gave none).
    """

    status: int                    # the script's own, or 499/500/504 for cancelled/error/lost/timeout
    loss: float | None
    metric: float | None
    reason: str                    # why mlqueue ended it: error, lost, timeout, cancelled, environment
    message: str
    jobId: str
    orderId: str
    attempt: int
    worker: str | None
    host: str | None
    state: FinalState
    finishedDate: datetime
    startedDate: datetime | None
    durationSeconds: float
    script: dict[str, str] | None  # the script's identity (name, source, sha256) that produced it


class OrderBase(TypedDict):
    """What ``orders.submit`` writes for every Job."""

    jobId: str
    state: OrderState
    createdDate: datetime
    updatedDate: datetime
    attempts: int
    maxAttempts: int
    timeLimit: float
    scriptName: str
    projectName: str
    sweepId: str | None
    delivery: str                  # the current Celery delivery; a message with another one is stale
    enqueuedAt: datetime | None
    worker: str | None
    outcome: Outcome | None
    history: list[Event]
    metrics: list[dict[str, Any]]  # the reported metric points (the latest METRICS_KEPT)
    log: list[dict[str, Any]]      # printed lines (the latest LOG_LINES_KEPT), numbered by logCount


class Order(OrderBase, total=False):
    """A Job's place in its lifecycle (see the diagram in ``orders.py``); one per Job."""

    host: str | None
    pid: int | None
    assignedDate: datetime
    startedDate: datetime
    heartbeatAt: datetime
    finishedDate: datetime
    deadline: datetime
    stopRequested: str | None
    pausedBy: str | None
    latestMetrics: dict[str, Any]
    logCount: int
    checkpoint: dict[str, Any] | None
    exemptAttempts: int
    environmentFailures: int
    script: dict[str, str] | None
    job: dict[str, Any] | None     # only in answers of ``service.show``: the Job as submitted
