"""The house as a whole, for people: why a Job waits, and what each machine offers and how fast it is.

``status`` (CLI, API, dashboard) reads these: ``waiting`` groups the unassigned Orders by what they need
(requirement class or pinned worker) and says, for each group nobody online can run, why — "needs gpu —
no online worker has it; w1@desktop has it but is offline". ``reason_for`` says it for one Order
(``mlqueue show``). ``annotate`` adds each worker's queues, refusals and measured speed (``speed.py``).
"""

from __future__ import annotations

from typing import Any

from mlqueue import orders, requirements, speed
from mlqueue.settings import Settings, get_settings
from mlqueue.store import orders as order_store


def _matches(worker: dict[str, Any], pinned: str) -> bool:
    return worker["name"] == pinned or worker["name"].split("@")[0] == pinned


def reason_for(order: dict[str, Any], workers: list[dict[str, Any]]) -> str | None:
    """Why an unassigned Order is not running, or None when some online worker can take it."""
    if order.get("state") != orders.UNASSIGNED:
        return None
    requires = order.get("requires") or {}
    pinned = order.get("pinnedWorker")
    if pinned:
        return _pinned_reason(pinned, requires, order.get("requirementClass"), workers)
    if not [w for w in workers if w.get("online")]:
        return "waiting: no worker is online (start one with `celery -A mlqueue worker`)"
    if not requires:
        return None
    able = [w for w in workers if requirements.satisfies(w.get("capabilities") or {}, requires)]
    refused = [w for w in able if order.get("requirementClass") in (w.get("refused") or {})]
    if [w for w in able if w.get("online") and w not in refused]:
        return None
    text = f"waiting: needs {requirements.describe(requires)} — no online worker has it"
    offline = [w["name"] for w in able if not w.get("online")]
    if offline:
        text += f"; {', '.join(offline)} {'has' if len(offline) == 1 else 'have'} it but "
        text += f"{'is' if len(offline) == 1 else 'are'} offline"
    online_refused = [w["name"] for w in refused if w.get("online")]
    if online_refused:
        text += f"; {', '.join(online_refused)} stopped taking it after an environment failure (restart to retry)"
    return text


def _pinned_reason(pinned: str, requires: dict[str, Any], requirement_class: str | None,
                   workers: list[dict[str, Any]]) -> str | None:
    found = [w for w in workers if _matches(w, pinned)]
    if not found:
        known = ", ".join(w["name"] for w in workers) or "none"
        return f"waiting: pinned to worker {pinned!r}, which has never registered (known workers: {known})"
    online = [w for w in found if w.get("online")]
    if not online:
        return f"waiting: pinned to {found[0]['name']}, which is offline"
    missing = requirements.unmet(online[0].get("capabilities") or {}, requires)
    if missing:
        return f"waiting: pinned to {online[0]['name']}, which lacks {', '.join(missing)}"
    return None


def waiting(settings: Settings | None = None, workers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Unassigned Orders grouped by what they need, each group with its count and why it waits (or None)."""
    settings = settings or get_settings()
    if workers is None:
        from mlqueue import outcomes

        workers = outcomes.workers(settings)
    groups = order_store.waiting_groups(orders.UNASSIGNED, settings)
    out = []
    for g in groups:
        probe = {"state": orders.UNASSIGNED, "requires": g.get("requires"), "requirementClass": g["_id"].get("c"),
                 "pinnedWorker": g["_id"].get("w")}
        group = {"requirementClass": g["_id"].get("c"), "pinnedWorker": g["_id"].get("w"),
                 "requires": g.get("requires"), "jobs": g["jobs"], "since": g.get("oldest"),
                 "exampleJob": g.get("example"), "reason": reason_for(probe, workers)}
        group["etaSeconds"] = None if group["reason"] else _first_start(group, workers)
        out.append(group)
    return sorted(out, key=lambda g: (g["reason"] is None, -g["jobs"]))


def annotate(workers: list[dict[str, Any]], settings: Settings | None = None) -> list[dict[str, Any]]:
    """Add each worker's measured speed per script and the ETA of what it runs (``speed.py``)."""
    settings = settings or get_settings()
    figures = speed.figures(settings)
    now = orders.now()
    held = {o["worker"]: o for o in order_store.in_states(
        orders.HELD, settings, {"worker": 1, "jobId": 1, "scriptName": 1, "epochs": 1, "startedDate": 1,
                                "latestMetrics": 1})}
    for w in workers:
        w["speed"] = figures.get(w["name"], {})
        w.setdefault("queues", [])
        w.setdefault("refused", {})
        order = held.get(w["name"])
        fig = (w["speed"].get((order or {}).get("scriptName", "").removesuffix(".py"))
               or w["speed"].get((order or {}).get("scriptName", ""))) if order else None
        w["etaSeconds"] = speed.eta_seconds(order, {"epochs": order.get("epochs")}, fig, now) if order else None
    return workers


def _first_start(group: dict[str, Any], workers: list[dict[str, Any]]) -> float | None:
    """Seconds until a worker that can take this group is free (0: one is idle now; None: unknown)."""
    able = [w for w in workers if w.get("online")
            and requirements.satisfies(w.get("capabilities") or {}, group.get("requires"))
            and group.get("requirementClass") not in (w.get("refused") or {})
            and (not group.get("pinnedWorker") or _matches(w, group["pinnedWorker"]))]
    waits = [0.0 if not w.get("currentJob") else w.get("etaSeconds") for w in able]
    known = [x for x in waits if x is not None]
    return round(min(known), 1) if known else None


def with_reason(order: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """An Order plus ``waiting`` (why it is not running) when it is unassigned."""
    if order.get("state") == orders.UNASSIGNED:
        from mlqueue import outcomes

        order["waiting"] = reason_for(order, outcomes.workers(settings or get_settings()))
    return order
