"""A Jepsen-style tally of one scenario, read from the store after the faults: what was lost, what ran twice.

Counted from the Orders, Outcomes and the ``chaos_runs`` rows each execution of ``chaos_job`` writes:
- *lost*: a Job with no Order, an Order not final once the house settled, or a final Order whose
  Outcome never reached ``outcomes`` — must be 0;
- *duplicate final Outcomes*: an Order that moved to a final state more than once, or a Job with more
  than one ``outcomes`` document — must be 0;
- *duplicate executions*: executions that *started* after their Job already had its final Outcome — 0;
- *re-runs*: executions beyond the first (a killed or presumed-lost attempt run again: at-least-once);
- *late results discarded*: executions that ran to their end after losing their Order (history says so);
- *work re-done*: seconds spent in executions whose result is not the final Outcome.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from mlqueue import orders, store
from mlqueue.settings import Settings


@dataclass
class Tally:
    scenario: str
    faults: dict[str, int] = field(default_factory=dict)
    submitted: int = 0
    succeeded: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicate_outcomes: int = 0
    duplicate_executions: int = 0
    reruns: int = 0
    late_discarded: int = 0
    duplicates_ignored: int = 0
    redone_seconds: float = 0.0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: bool = False

    @property
    def safe(self) -> bool:
        """The two guarantees: nothing lost, never a second final Outcome (and no run after the end)."""
        return not self.error and self.lost == 0 and self.duplicate_outcomes == 0 and self.duplicate_executions == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "safe": self.safe}


def read(scenario: str, settings: Settings, faults: dict[str, int] | None = None) -> Tally:
    """Count everything in the scenario's database (one database per scenario)."""
    d = store.db(settings)
    tally = Tally(scenario=scenario, faults=dict(faults or {}))
    job_ids = {str(doc["_id"]) for doc in d.jobs.find({}, {"_id": 1})}
    tally.submitted = len(job_ids)
    stored = Counter(doc["jobId"] for doc in d.outcomes.find({}, {"jobId": 1}))
    final_at: dict[str, Any] = {}
    winners: set[str] = set()
    failed: Counter[str] = Counter()
    seen: set[str] = set()
    stranded = vanished = 0
    for order in d.orders.find({}, {"jobId": 1, "state": 1, "outcome": 1, "history": 1, "finishedDate": 1}):
        job_id = order["jobId"]
        seen.add(job_id)
        history = order.get("history") or []
        finals = sum(1 for event in history if event.get("to") in orders.FINAL)
        tally.duplicate_outcomes += max(0, finals - 1) + max(0, stored.get(job_id, 0) - 1)
        tally.late_discarded += sum(1 for e in history if "late result" in str(e.get("why")))
        tally.duplicates_ignored += sum(1 for e in history if str(e.get("why")).startswith("duplicate delivery"))
        stranded += sum(1 for e in history if "never claimed it" in str(e.get("why")))
        vanished += sum(1 for e in history if "in no queue" in str(e.get("why")))
        if order["state"] not in orders.FINAL or not stored.get(job_id):
            tally.lost += 1
            continue
        final_at[job_id] = order.get("finishedDate")
        outcome = order.get("outcome") or {}
        if outcome.get("runId"):
            winners.add(outcome["runId"])
        if order["state"] == orders.SUCCEEDED:
            tally.succeeded += 1
        else:
            failed[f"{order['state']}: {outcome.get('reason') or '?'}"] += 1
    tally.lost += len(job_ids - seen)
    if stranded:
        tally.notes.append(f"{stranded} message(s) stranded with a killed worker before its claim, re-sent")
    if vanished:
        tally.notes.append(f"{vanished} message(s) gone from the broker (popped by a worker killed at once), re-sent")
    tally.failed = dict(sorted(failed.items()))
    _count_runs(d, tally, final_at, winners)
    return tally


def _count_runs(d: Any, tally: Tally, final_at: dict[str, Any], winners: set[str]) -> None:
    per_job: Counter[str] = Counter()
    for run in d.chaos_runs.find():
        per_job[run["jobId"]] += 1
        finished = final_at.get(run["jobId"])
        if finished is not None and run["startedAt"] > finished:
            tally.duplicate_executions += 1
        if str(run["_id"]) not in winners:
            end = run.get("endedAt") or run.get("lastAt") or run["startedAt"]
            tally.redone_seconds += (end - run["startedAt"]).total_seconds()
    tally.reruns = sum(n - 1 for n in per_job.values())
    tally.redone_seconds = round(tally.redone_seconds, 1)


COLUMNS = [("scenario", 22), ("faults", 30), ("submitted", 9), ("succeeded", 9), ("failed (reason)", 30),
           ("lost", 4), ("dup final", 9), ("dup exec", 8), ("re-runs", 7), ("late disc.", 10),
           ("redone s", 8), ("wall s", 6)]


def _cells(t: Tally) -> list[str]:
    faults = ", ".join(f"{n} {k}" for k, n in t.faults.items()) or "-"
    failed = ", ".join(f"{n} {k}" for k, n in t.failed.items()) or "0"
    return [t.scenario, faults, str(t.submitted), str(t.succeeded), failed, str(t.lost), str(t.duplicate_outcomes),
            str(t.duplicate_executions), str(t.reruns), str(t.late_discarded), f"{t.redone_seconds:g}",
            f"{t.wall_seconds:.0f}"]


def table(tallies: list[Tally]) -> str:
    """The tally as a Markdown table (readable in a terminal and pasted as is into docs/reliability.md)."""
    widths = [max(w, *(len(_cells(t)[i]) for t in tallies)) if tallies else w for i, (_, w) in enumerate(COLUMNS)]
    widths = [max(w, len(name)) for w, (name, _) in zip(widths, COLUMNS, strict=True)]
    lines = ["| " + " | ".join(name.ljust(w) for (name, _), w in zip(COLUMNS, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for t in tallies:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(_cells(t), widths, strict=True)) + " |")
    return "\n".join(lines)
