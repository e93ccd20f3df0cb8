"""A running script's intermediate reports, sent to its Order in the background, several per write.

A script reporting every epoch used to wait for one fsynced store write per report (and, in a busy
house, for the store's queue behind it): on short epochs that was most of a trial's time. Now
``report()`` hands the point to a ``ReportSender`` and returns at once; one thread per attempt writes
whatever has piled up since its last write in one update (in order, stamped when reported). The answer
of each write ("stop": a pruner gave up on the Job, "lost": this attempt no longer holds the Order) is
kept and given to the script at its next report, so a pruned trial stops one report later than before
and never blocks on the decision.

What stays exact: reports reach the Order in the order they were made, each once; ``drain`` waits
until everything handed over is stored, and the worker drains before a checkpoint is kept (a resumed
trial then starts after the last stored epoch and reports each epoch once) and before the final move.
A store failure (after ``store.durable``'s retries) is raised to the script at its next report, as a
failing write was before.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from mlqueue import orders
from mlqueue.settings import Settings

log = logging.getLogger(__name__)

OK, STOP, LOST = "ok", "stop", "lost"


class ReportSender:
    """Writes one attempt's reports to its Order from a background thread, batching what piles up."""

    def __init__(self, order: dict[str, Any], settings: Settings) -> None:
        self.order, self.settings = order, settings
        self.pending: list[dict[str, Any]] = []
        self.answer = OK
        self.error: BaseException | None = None
        self.writing = False
        self.closed = False
        self.writes = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="mlqueue-reports", daemon=True)
        self.thread.start()

    def put(self, metrics: dict[str, Any]) -> str:
        """Hand one report over; returns the latest answer ("ok", "stop" or "lost") known from the store.

        On "stop" or "lost" the report is not kept (the script is about to end); reports handed over
        before it are still stored on "stop". Raises the store error a background write ended with.
        """
        with self.cond:
            self._raise_error()
            if self.answer != OK:
                return self.answer
            self.pending.append({"at": orders.now(), **metrics})
            self.cond.notify_all()
            return OK

    def drain(self) -> str:
        """Wait until every report handed over is stored (or refused); the latest answer."""
        with self.cond:
            self.cond.wait_for(lambda: not self.pending and not self.writing)
            self._raise_error()
            return self.answer

    def close(self) -> None:
        """Store what is left and stop the thread; a store error is logged, not raised (the attempt ends)."""
        try:
            self.drain()
        except BaseException as exc:  # noqa: BLE001 - the final move decides what happens to the Order
            log.warning("reports of job %s not all stored: %s", self.order.get("jobId"), exc)
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(5)

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.pending or self.closed)
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
                self.writing = True
            answer: str | None = None
            try:
                answer = orders.record_metrics(self.order, batch, self.settings)
            except BaseException as exc:  # noqa: BLE001 - handed to the script at its next report
                with self.cond:
                    self.error = exc
            with self.cond:
                self.writes += 1
                if answer is not None and self.answer == OK:
                    self.answer = answer
                if self.answer == LOST:
                    self.pending.clear()   # the Order is no longer this attempt's: nothing more to store
                self.writing = False
                self.cond.notify_all()
